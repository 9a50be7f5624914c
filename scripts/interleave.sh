#!/usr/bin/env bash
# Compares two bench configurations on this machine in turns within one
# run, so that the machine's drift (on a virtual machine the same build's
# figure can move by a third within minutes) hits both alike: two fresh
# servers, each with its own bench, loaded one at a time. Each bench is
# frozen (SIGSTOP) while the other runs, for --period seconds at a time,
# --cycles times; only the --interval figures that fall wholly inside a
# bench's own turns count. Prints each side's turn figures, their medians
# and the ratio A/B; exits 1 on any correctness failure.
#
#   scripts/interleave.sh [--period S] [--cycles N] [--warmup S] [--interval S]
#                         [--bin BIN] [--bin-b BIN] [--server-arg ARG]...
#                         -- A ARGS -- B ARGS
#
#   --period S        seconds per turn (default 20)
#   --cycles N        turns of each side (default 6)
#   --warmup S        each bench's warm-up before the turns start, both
#                     running at once (default 30)
#   --interval S      the benches' reporting interval (default 5; a turn
#                     should hold several)
#   --bin BIN         an `ichido` to use instead of building this checkout
#   --bin-b BIN       side B's `ichido`, to compare two builds (default:
#                     the same as side A's)
#   --server-arg ARG  one more argument for both servers (repeatable)
#   A ARGS, B ARGS    `ichido bench` arguments of each side, e.g.
#                     --tokens 1000000 and --tokens 1000 (64 connections,
#                     the bench's default order and mode unless given)
#
# Examples (the million-token goal of docs/performance.md; a change against
# the build before it, a million tokens each):
#   scripts/interleave.sh -- --tokens 1000000 -- --tokens 1000
#   scripts/interleave.sh --bin-b /tmp/ichido-before -- --tokens 1000000 -- --tokens 1000000
#
# A frozen bench's requests in flight wait for its next turn, so the
# latency figures of a bench's final JSON line mean nothing here; its
# correctness counts still do.
set -euo pipefail
cd "$(dirname "$0")/.."

period=20
cycles=6
warmup=30
interval=5
bin=""
bin_b=""
server_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --period) period="$2"; shift 2 ;;
    --cycles) cycles="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --interval) interval="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --bin-b) bin_b="$2"; shift 2 ;;
    --server-arg=*) server_args+=("${1#--server-arg=}"); shift ;;
    --server-arg) server_args+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "unknown option: $1 (see the head of $0)" >&2; exit 2 ;;
  esac
done
a_args=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do a_args+=("$1"); shift; done
[ $# -gt 0 ] && shift
b_args=("$@")
if [ ${#a_args[@]} -eq 0 ] || [ ${#b_args[@]} -eq 0 ]; then
  echo "give both sides' bench arguments: -- A ARGS -- B ARGS (see the head of $0)" >&2
  exit 2
fi

if [ -z "$bin" ]; then
  cargo build --release --locked -p ichido >&2
  bin="${CARGO_TARGET_DIR:-target}/release/ichido"
fi
[ -x "$bin" ] || { echo "--bin: $bin is not an executable" >&2; exit 2; }
bin_b="${bin_b:-$bin}"
[ -x "$bin_b" ] || { echo "--bin-b: $bin_b is not an executable" >&2; exit 2; }

work="$(mktemp -d)"
server_pids=()
bench_pids=()
cleanup() {
  for p in "${bench_pids[@]}" "${server_pids[@]}"; do
    kill -CONT "$p" 2>/dev/null || true
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

ICHIDO_MASTER_KEY="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export ICHIDO_MASTER_KEY
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Prefixes each line of standard input with the time it arrived (seconds).
stamp() { python3 -u -c 'import sys, time
for line in sys.stdin:
    sys.stdout.write("%.3f %s" % (time.time(), line))
    sys.stdout.flush()'; }

# Each bench's measured run: the warm-up of the side started second (the
# first one's measured run may begin then, see below), the turns, and some
# slack.
duration=$((warmup + 2 * period * cycles + 2 * interval + 10))
# Side b imports first and is frozen as soon as its tokens are in, while
# side a imports (an import of a million takes a minute or two, and should
# have the machine); then both warm up at once. A frozen bench's clock runs
# on, so b's warm-up may end before a's: its measured run is long enough
# for that.
for side in b a; do
  if [ "$side" = a ]; then exe="$bin"; args=("${a_args[@]}"); else exe="$bin_b"; args=("${b_args[@]}"); fi
  db="sqlite://$work/$side.db"
  key="$("$exe" operator create bench --database "$db" | head -n 1)"
  port="$(free_port)"
  "$exe" serve --database "$db" --listen "127.0.0.1:$port" "${server_args[@]}" >"$work/serve-$side.log" 2>&1 &
  server_pids+=($!)
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fs "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$work/serve-$side.log" >&2; exit 1; }
  "$exe" bench --url "http://127.0.0.1:$port" --key "$key" --json --warmup "$warmup" \
    --duration "$duration" --interval "$interval" "${args[@]}" \
    >"$work/bench-$side.out" 2> >(stamp >"$work/bench-$side.err") &
  bench_pids+=($!)
  echo "side $side: $exe bench ${args[*]}" >&2
  for _ in $(seq 1 36000); do
    grep -q '^[0-9.]* warming up' "$work/bench-$side.err" 2>/dev/null && break
    kill -0 "${bench_pids[-1]}" 2>/dev/null || { cat "$work/bench-$side.err" >&2; exit 1; }
    sleep 0.1
  done
  if [ "$side" = b ]; then kill -STOP "${bench_pids[-1]}"; fi
done
# In the order started: b, then a.
b="${bench_pids[0]}" a="${bench_pids[1]}"
server_b="${server_pids[0]}" server_a="${server_pids[1]}"
kill -CONT "$b"
# Both warm-ups over, both measured runs begun.
sleep "$((warmup + 1))"
# A turn's line: whose turn, when it began, and the CPU ticks both
# servers had used by then (a resting server's background work, such as
# its checkpoints and its audit index, takes from the other's turn).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
turn() { printf '%s %s %s %s\n' "$1" "$(date +%s.%N)" "$(ticks "$server_a")" "$(ticks "$server_b")" >>"$work/turns"; }
: >"$work/turns"
for c in $(seq 1 "$cycles"); do
  kill -STOP "$b"; kill -CONT "$a"
  turn a
  sleep "$period"
  kill -STOP "$a"; kill -CONT "$b"
  turn b
  sleep "$period"
  echo "cycle $c of $cycles done" >&2
done
turn end
kill -CONT "$a" "$b"
for p in "${bench_pids[@]}"; do wait "$p" || true; done

python3 - "$work" "$interval" "$(getconf CLK_TCK)" <<'PY'
import json, re, statistics, sys
work, interval, tck = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
turns = [l.split() for l in open(f"{work}/turns")]
windows = {"a": [], "b": []}
resting = {"a": [], "b": []}
for (who, start, a0, b0), (_, end, a1, b1) in zip(turns, turns[1:]):
    windows[who].append((float(start), float(end)))
    # The other side's server, resting: its CPU time over this turn.
    other = (int(b1) - int(b0)) if who == "a" else (int(a1) - int(a0))
    resting["b" if who == "a" else "a"].append(100 * other / tck / (float(end) - float(start)))
figures = {}
bad = 0
for side in ("a", "b"):
    got = []
    for line in open(f"{work}/bench-{side}.err"):
        m = re.match(r"([0-9.]+)\s+at\s+[0-9]+ s\s+([0-9]+) validations/s", line)
        if not m:
            continue
        end = float(m.group(1))
        start = end - interval
        # Wholly inside one of this side's turns (half a second's margin).
        if any(s + 0.5 <= start and end <= e for s, e in windows[side]):
            got.append(int(m.group(2)))
    final = json.loads(open(f"{work}/bench-{side}.out").read().strip().splitlines()[-1])
    bad += final["correctness_failures"]
    figures[side] = got
    med = statistics.median(got) if got else float("nan")
    print(f"{side}: {len(got)} intervals in its turns, median {med:.0f} validations/s, "
          f"correctness failures {final['correctness_failures']}: {got}; its server "
          f"resting took {statistics.median(resting[side]):.1f}% of a core (median of its rests)")
if figures["a"] and figures["b"]:
    ratio = statistics.median(figures["a"]) / statistics.median(figures["b"])
    print(f"a/b: {100 * ratio:.0f}%")
sys.exit(1 if bad else 0)
PY
