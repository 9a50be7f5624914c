#!/usr/bin/env bash
# Runs `ichido bench` against a fresh `ichido serve` on this machine, several
# times, and prints every run's JSON line and the medians. The figures of
# docs/performance.md come from this script.
#
#   scripts/bench.sh [--runs N] [--pin] [--postgres URL] [--server-arg ARG]... [-- BENCH ARGS]
#
#   --runs N          runs of the bench against the same server (default 3)
#   --pin             the server on CPU 0 and the bench on CPU 1 (taskset):
#                     what one core of server does when the load comes from
#                     elsewhere (PostgreSQL, if used, is not pinned)
#   --postgres URL    use this PostgreSQL database instead of a fresh SQLite
#                     file (a schema `ichido_bench` is dropped and re-created)
#   --server-arg ARG  one more argument for `ichido serve` (repeatable), e.g.
#                     --server-arg=--token-lock-threshold=100
#   BENCH ARGS        passed to `ichido bench` (default: --tokens 1000
#                     --concurrency 64 --duration 10)
#
# Examples:
#   scripts/bench.sh                                   # success path, event tokens
#   scripts/bench.sh -- --tokens 1000000 --duration 10 # a million tokens
#   scripts/bench.sh --server-arg=--token-lock-threshold=100 \
#       -- --mode wrong --reset-every 99               # failure path
#   scripts/bench.sh --postgres postgres://postgres@127.0.0.1:5432/test
set -euo pipefail
cd "$(dirname "$0")/.."

runs=3
pg=""
server_args=()
server_cpu=()
bench_cpu=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --postgres) pg="$2"; shift 2 ;;
    --pin) server_cpu=(taskset -c 0); bench_cpu=(taskset -c 1); shift ;;
    --server-arg=*) server_args+=("${1#--server-arg=}"); shift ;;
    --server-arg) server_args+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "unknown option: $1 (see the head of $0)" >&2; exit 2 ;;
  esac
done
bench_args=("$@")
[ ${#bench_args[@]} -gt 0 ] || bench_args=(--tokens 1000 --concurrency 64 --duration 10)

cargo build --release --locked -p ichido >&2
bin="${CARGO_TARGET_DIR:-target}/release/ichido"

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

ICHIDO_MASTER_KEY="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export ICHIDO_MASTER_KEY
if [ -n "$pg" ]; then
  psql "$pg" -qc "DROP SCHEMA IF EXISTS ichido_bench CASCADE; CREATE SCHEMA ichido_bench;" >/dev/null
  sep='?'; case "$pg" in *\?*) sep='&' ;; esac
  db="${pg}${sep}options=-csearch_path%3Dichido_bench"
else
  db="sqlite://$work/bench.db"
fi

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
key="$("$bin" operator create bench --database "$db" | head -n 1)"
"${server_cpu[@]}" "$bin" serve --database "$db" --listen "127.0.0.1:$port" "${server_args[@]}" \
  >"$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$work/serve.log" >&2; exit 1; }

echo "server: ${server_cpu[*]} $bin serve --database ${db%%\?*} ${server_args[*]:-}" >&2
echo "bench:  ${bench_cpu[*]} $bin bench ${bench_args[*]}" >&2
results=()
for i in $(seq 1 "$runs"); do
  line="$("${bench_cpu[@]}" "$bin" bench --url "http://127.0.0.1:$port" --key "$key" --json "${bench_args[@]}" | tail -n 1)"
  echo "run $i: $line"
  results+=("$line")
done
printf '%s\n' "${results[@]}" | python3 -c '
import json, statistics, sys
runs = [json.loads(l) for l in sys.stdin if l.strip()]
def med(k):
    return statistics.median(r[k] for r in runs)
bad = sum(r["correctness_failures"] for r in runs)
print("median of %d: %.0f validations/s, p50 %.1f ms, p99 %.1f ms, p99.9 %.1f ms, correctness failures %d"
      % (len(runs), med("validations_per_sec"), med("p50_ms"), med("p99_ms"), med("p999_ms"), bad))
sys.exit(1 if bad else 0)
'
