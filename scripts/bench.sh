#!/usr/bin/env bash
# Runs `ichido bench` against a fresh `ichido serve` on this machine, several
# times, and prints every run's JSON line and the medians. The figures of
# docs/performance.md come from this script.
#
#   scripts/bench.sh [--runs N] [--fresh] [--compare BIN] [--instances N] [--pin] [--postgres URL] [--grown-index] [--grown-index-file FILE] [--server-arg ARG]... [-- BENCH ARGS]
#
#   --runs N          runs of the bench against the same server (default 3)
#   --fresh           a fresh database and server for every run (each run
#                     imports its tokens: without it, the third run of
#                     --tokens 1000000 finds three million in the database)
#   --compare BIN     also run another build's `ichido` (e.g. one built from
#                     an older commit), the two builds taking turns run by
#                     run, each on a fresh database and server with its own
#                     bench (implies --fresh); medians per build. The
#                     machine's drift then hits both alike.
#   --instances N     N servers on the one database, each loaded by its own
#                     bench at the same time; a run's figure is their sum
#                     (p50/p99/p99.9: the worst instance's)
#   --pin             the server on CPU 0 and the bench on CPU 1 (taskset):
#                     what one core of server does when the load comes from
#                     elsewhere (PostgreSQL, if used, is not pinned)
#   --postgres URL    use this PostgreSQL database instead of a fresh SQLite
#                     file (a schema `ichido_bench` is dropped and re-created)
#   --server-arg ARG  one more argument for `ichido serve` (repeatable), e.g.
#                     --server-arg=--token-lock-threshold=100
#   --grown-index     give each run's database an audit index that holds a
#                     bank's history (scripts/grow-audit-index.py, its
#                     defaults or GROW_ARGS; built once, copied per run) and
#                     the bench the matching --contract-no (SQLite only;
#                     implies --fresh). A new database's index is empty,
#                     which flatters a million tokens (docs/performance.md)
#   --grown-index-file FILE
#                     --grown-index, with the grown index kept in FILE: built
#                     there if FILE does not exist, copied from it if it
#                     does. Growing it takes minutes; with one FILE,
#                     invocations that take turns (a thousand tokens, then
#                     a million, and again) build it once. Delete FILE after
#                     a change to the index's schema
#   --threads         also print, per run, each thread's CPU time per
#                     validation (µs, from /proc, by thread name: the
#                     server's runtime, writer, audit filer (ichido-filer)
#                     and merger (ichido-merger),
#                     checkpoints (ichido-ckpt) and other SQLite connection
#                     threads, the bench's) and how idle the machine was,
#                     over a window of the run after the import, or after
#                     the warm-up with --warmup (the first server and
#                     bench; needs a --duration of 5 s or more)
#   BENCH ARGS        passed to `ichido bench` (default: --tokens 1000
#                     --concurrency 64 --duration 10)
#
# Examples:
#   scripts/bench.sh                                   # success path, event tokens
#   scripts/bench.sh --fresh -- --tokens 1000000 --duration 10 # a million tokens
#   scripts/bench.sh --server-arg=--token-lock-threshold=100 \
#       -- --mode wrong --reset-every 99               # failure path
#   scripts/bench.sh --postgres postgres://postgres@127.0.0.1:5432/test
#   scripts/bench.sh --grown-index -- --tokens 1000000 --duration 10 # a bank's index
#   scripts/bench.sh --instances 2 --postgres postgres://postgres@127.0.0.1:5432/test \
#       -- --tokens 1000 --concurrency 32 --duration 10   # two instances
set -euo pipefail
cd "$(dirname "$0")/.."

runs=3
fresh=""
other=""
instances=1
pg=""
server_args=()
threads=""
grown=""
grown_file=""
server_cpu=()
bench_cpu=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --fresh) fresh=1; shift ;;
    --compare) other="$2"; fresh=1; shift 2 ;;
    --instances) instances="$2"; shift 2 ;;
    --postgres) pg="$2"; shift 2 ;;
    --pin) server_cpu=(taskset -c 0); bench_cpu=(taskset -c 1); shift ;;
    --server-arg=*) server_args+=("${1#--server-arg=}"); shift ;;
    --server-arg) server_args+=("$2"); shift 2 ;;
    --threads) threads=1; shift ;;
    --grown-index) grown=1; fresh=1; shift ;;
    --grown-index-file) grown=1; fresh=1; grown_file="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown option: $1 (see the head of $0)" >&2; exit 2 ;;
  esac
done
bench_args=("$@")
[ ${#bench_args[@]} -gt 0 ] || bench_args=(--tokens 1000 --concurrency 64 --duration 10)
if [ -n "$grown" ]; then
  [ -z "$pg" ] || { echo "--grown-index is for SQLite only" >&2; exit 2; }
  bench_args+=(--contract-no bench-grown)
fi

cargo build --release --locked -p ichido >&2
bin="${CARGO_TARGET_DIR:-target}/release/ichido"
builds=("$bin")
if [ -n "$other" ]; then
  [ -x "$other" ] || { echo "--compare: $other is not an executable" >&2; exit 2; }
  builds+=("$other")
fi

work="$(mktemp -d)"
server_pids=()
cleanup() {
  for p in "${server_pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

ICHIDO_MASTER_KEY="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export ICHIDO_MASTER_KEY
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# A fresh database (SQLite file or PostgreSQL schema), its operator key and
# the servers on it.
start_servers() {
  if [ -n "$pg" ]; then
    psql "$pg" -qc "DROP SCHEMA IF EXISTS ichido_bench CASCADE; CREATE SCHEMA ichido_bench;" >/dev/null
    sep='?'; case "$pg" in *\?*) sep='&' ;; esac
    db="${pg}${sep}options=-csearch_path%3Dichido_bench"
  else
    rm -f "$work"/bench.db*
    db="sqlite://$work/bench.db"
  fi
  key="$("$bin" operator create bench --database "$db" | head -n 1)"
  if [ -n "$grown" ]; then
    # Built once from the first build's new (empty) index (or kept in
    # --grown-index-file), then the same file for every run and build.
    grown_index="${grown_file:-$work/grown-index}"
    if [ ! -f "$grown_index" ]; then
      cp "$work/bench.db-audit-index" "$work/grown-index.part"
      # shellcheck disable=SC2086 # GROW_ARGS is a list of options
      python3 scripts/grow-audit-index.py "$work/grown-index.part" --contract-no bench-grown ${GROW_ARGS:-} >&2
      mv "$work/grown-index.part" "$grown_index"
    fi
    rm -f "$work"/bench.db-audit-index*
    cp "$grown_index" "$work/bench.db-audit-index"
  fi
  ports=()
  for n in $(seq 1 "$instances"); do
    port="$(free_port)"
    "${server_cpu[@]}" "$bin" serve --database "$db" --listen "127.0.0.1:$port" "${server_args[@]}" \
      >"$work/serve-$n.log" 2>&1 &
    server_pids+=($!)
    for _ in $(seq 1 100); do
      curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
      sleep 0.1
    done
    curl -fs "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$work/serve-$n.log" >&2; exit 1; }
    ports+=("$port")
  done
}

stop_servers() {
  for p in "${server_pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  server_pids=()
}

# Each thread's CPU time (utime + stime, in clock ticks) by name, of
# process $1, and the machine's idle and total ticks.
snapshot() {
  for t in /proc/"$1"/task/*; do
    printf '%s\t%s\n' "$(cat "$t/comm" 2>/dev/null)" "$(awk '{print $14 + $15}' "$t/stat" 2>/dev/null)"
  done
}
machine() { awk '/^cpu / {print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
# Snapshots of the server ($1) and the bench ($2) one second after the
# bench reports its import done (in its stderr, file $3) and THREAD_WINDOW
# seconds later, into files $4.*.
THREAD_WINDOW=4
thread_window() {
  for _ in $(seq 1 6000); do
    grep -q '^imported' "$3" 2>/dev/null && break
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  sleep 1
  # With --warmup the window starts after the warm-up, in the measured run.
  local warm
  warm="$(sed -n 's/^warming up for \([0-9]*\) s.*/\1/p' "$3" 2>/dev/null | head -n 1)"
  if [ -n "$warm" ]; then sleep "$warm"; fi
  snapshot "$1" >"$4.s0"; snapshot "$2" >"$4.b0"; machine >"$4.m0"
  sleep "$THREAD_WINDOW"
  snapshot "$1" >"$4.s1"; snapshot "$2" >"$4.b1"; machine >"$4.m1"
}
# Prints the per-validation CPU time of run $1 from its snapshots and JSON line $2.
thread_report() {
  python3 - "$work/threads-$1" "$THREAD_WINDOW" "$(getconf CLK_TCK)" "$2" <<'PY'
import collections, json, sys
base, window, tck, line = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
def ticks(path):
    c = collections.Counter()
    try:
        for l in open(path):
            name, _, v = l.rstrip("\n").rpartition("\t")
            if v.strip():
                c[name] += int(v)
    except FileNotFoundError:
        pass
    return c
per_sec = json.loads(line)["validations_per_sec"]
validations = per_sec * window
if validations <= 0:
    sys.exit(0)
parts = []
for who, tag in (("server", "s"), ("bench", "b")):
    a, b = ticks(f"{base}.{tag}0"), ticks(f"{base}.{tag}1")
    for name in sorted(b):
        us = (b[name] - a.get(name, 0)) / tck * 1e6 / validations
        if us >= 0.5:
            parts.append(f"{who} {name} {us:.1f}")
try:
    (i0, t0), (i1, t1) = (map(int, open(f"{base}.m{k}").read().split()) for k in (0, 1))
    idle = f", machine idle {100 * (i1 - i0) / max(t1 - t0, 1):.0f}%"
except (FileNotFoundError, ValueError):
    idle = ""
after = "the warm-up" if json.loads(line).get("warmup_secs") else "the import"
print(f"  CPU per validation (µs, {window:.0f} s after {after}): " + ", ".join(parts) + idle)
PY
}

start_servers
echo "server: ${server_cpu[*]} $bin serve --database ${db%%\?*} ${server_args[*]:-} (x$instances)${fresh:+, fresh for every run}" >&2
echo "bench:  ${bench_cpu[*]} $bin bench ${bench_args[*]} (one per server, at once)" >&2
[ -z "$other" ] || echo "compare: $other (turns with the build above, run by run)" >&2
results=()
for i in $(seq 1 "$runs"); do
for k in "${!builds[@]}"; do
  bin="${builds[$k]}"
  if [ -n "$fresh" ] && { [ "$i" -gt 1 ] || [ "$k" -gt 0 ]; }; then
    stop_servers
    start_servers
  fi
  # One bench per server, started together; a run's figure is their sum.
  bench_pids=()
  for n in $(seq 1 "$instances"); do
    # With --threads, the first bench's stderr (progress, "imported ...") is
    # read for the end of the import, and shown after the run.
    # Appended to, never opened afresh: opening /dev/stderr anew would
    # truncate this script's own log when its stderr is a file.
    err=/dev/stderr
    if [ -n "$threads" ] && [ "$n" = 1 ]; then err="$work/bench-$i-1.err"; rm -f "$err"; fi
    "${bench_cpu[@]}" "$bin" bench --url "http://127.0.0.1:${ports[$((n - 1))]}" --key "$key" --json \
      "${bench_args[@]}" >"$work/bench-$i-$n.out" 2>>"$err" &
    bench_pids+=($!)
  done
  if [ -n "$threads" ]; then
    thread_window "${server_pids[0]}" "${bench_pids[0]}" "$work/bench-$i-1.err" "$work/threads-$i-$k" || true
  fi
  for p in "${bench_pids[@]}"; do wait "$p" || true; done
  if [ -n "$threads" ]; then
    grep -v '^importing' "$work/bench-$i-1.err" >&2 || true
  fi
  line="$(for n in $(seq 1 "$instances"); do tail -n 1 "$work/bench-$i-$n.out"; done | python3 -c '
import json, sys
parts = [json.loads(l) for l in sys.stdin if l.strip()]
total = dict(parts[0])
total["validations_per_sec"] = sum(p["validations_per_sec"] for p in parts)
for k in ("correctness_failures", "accepted", "measured"):
    total[k] = sum(p[k] for p in parts)
total["concurrency"] = sum(p["concurrency"] for p in parts)
errors = {}
for p in parts:
    for code, n in p["errors"].items():
        errors[code] = errors.get(code, 0) + n
total["errors"] = errors
for k in ("p50_ms", "p99_ms", "p999_ms"):
    total[k] = max(p[k] for p in parts)
total["instances"] = len(parts)
print(json.dumps(total))
')"
  if [ -n "$other" ]; then echo "run $i ($bin): $line"; else echo "run $i: $line"; fi
  if [ -n "$threads" ]; then thread_report "$i-$k" "$line"; fi
  results+=("$k"$'\t'"$line")
done
done
printf '%s\n' "${results[@]}" | python3 -c '
import json, statistics, sys
names = sys.argv[1:]
by_build = {}
for l in sys.stdin:
    if l.strip():
        k, line = l.split("\t", 1)
        by_build.setdefault(int(k), []).append(json.loads(line))
bad = 0
for k, runs in sorted(by_build.items()):
    def med(f):
        return statistics.median(r[f] for r in runs)
    failures = sum(r["correctness_failures"] for r in runs)
    bad += failures
    label = " (%s)" % names[k] if len(by_build) > 1 else ""
    steals = [r["cpu_steal_pct"] for r in runs if r.get("cpu_steal_pct") is not None]
    steal = ", CPU stolen %.1f%%" % statistics.median(steals) if steals else ""
    print("median of %d%s: %.0f validations/s, p50 %.1f ms, p99 %.1f ms, p99.9 %.1f ms, correctness failures %d%s"
          % (len(runs), label, med("validations_per_sec"), med("p50_ms"), med("p99_ms"), med("p999_ms"), failures, steal))
sys.exit(1 if bad else 0)
' "${builds[@]}"
