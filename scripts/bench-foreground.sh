#!/usr/bin/env bash
# The foreground-latency scenario of `martelli probe`, side by side with Python's
# concurrent.futures doing the same background work, in one run.
#   bash scripts/bench-foreground.sh [REPS] [WINDOW_MS]
#
# A foreground thread sleeps 1 ms in a loop and records how late each sleep wakes up (p50, p99,
# max), while in the background:
#   idle               nothing
#   processes_nice_N   one worker process per usable core spinning on the CPU, at nice N (0, 10, 19):
#                      martelli's process pool (`worker_nice(N)`) against ProcessPoolExecutor with
#                      an initializer that calls os.nice(N)
#   threads            one worker thread per core spinning: martelli's thread pool against
#                      ThreadPoolExecutor (whose threads share the GIL with the foreground)
# The martelli side is the probe's own scenario runner (`martelli probe --child foreground KEY
# WINDOW_MS WORKERS`, which prints one JSON line); the Python side is the peer below, written in the
# style of the standard-library peers (one JSON line per run). Scenarios and systems take turns,
# round by round. Each row's figures are medians over the rounds; ratios are Python / martelli
# (above 1: martelli's foreground wakes sooner) and each system against its own idle row.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}
WINDOW_MS=${2:-1000}
WORKERS=$(nproc)
cargo build --quiet --release -p martelli-cli
. scripts/target-dir.sh
BIN=$TARGET_DIR/release/martelli
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

cat >"$out/peer.py" <<'PY'
#!/usr/bin/env python3
"""Foreground wake-up latency under a concurrent.futures background, one scenario.

usage: peer.py KEY WINDOW_MS WORKERS
  KEY: idle | processes_nice_0 | processes_nice_10 | processes_nice_19 | threads
The main thread sleeps 1 ms in a loop for WINDOW_MS and records how late each sleep wakes up (µs),
while WORKERS workers each spin on the CPU for the whole window: a ProcessPoolExecutor whose
workers call os.nice(N) first, or a ThreadPoolExecutor. Workers are started (a no-op task each)
before the spinning tasks are submitted; the foreground is timed from 30 ms after. Prints one JSON
line: p50, p99, max, mean (µs) and the number of sleeps.
"""
import json, os, statistics, sys, time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, wait

SLEEP = 0.001
SETTLE = 0.030
MARGIN = 0.020


def burn(ms):
    end = time.perf_counter() + ms / 1000
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def noop(_=None):
    return None


def quantile(sorted_xs, q):
    h = (len(sorted_xs) - 1) * q
    lo, hi = int(h), min(int(h) + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (h - lo) * (sorted_xs[hi] - sorted_xs[lo])


def main():
    key, window_ms, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if key == "idle":
        pool = None
    elif key == "threads":
        pool = ThreadPoolExecutor(workers)
    elif key.startswith("processes_nice_"):
        pool = ProcessPoolExecutor(workers, initializer=os.nice, initargs=(int(key.rsplit("_", 1)[1]),))
    else:
        sys.exit(f"unknown scenario {key}")
    burns = []
    if pool is not None:
        wait([pool.submit(noop) for _ in range(workers)])
        burns = [pool.submit(burn, window_ms + (SETTLE + MARGIN) * 1000) for _ in range(workers)]
    time.sleep(SETTLE)
    late = []
    end = time.perf_counter() + window_ms / 1000
    while time.perf_counter() < end:
        t = time.perf_counter()
        time.sleep(SLEEP)
        late.append(max(0.0, (time.perf_counter() - t - SLEEP) * 1e6))
    wait(burns)
    if pool is not None:
        pool.shutdown()
    late.sort()
    print(json.dumps({"p50": quantile(late, 0.5), "p99": quantile(late, 0.99), "max": late[-1],
                      "mean": statistics.fmean(late), "samples": len(late), "unit": "us"}))


if __name__ == "__main__":
    main()
PY

SCENARIOS="idle processes_nice_0 processes_nice_10 processes_nice_19 threads"
have_python=1
if ! command -v python3 >/dev/null; then
  echo "skipping the Python peer: python3 not found" >&2
  have_python=0
fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for r in $(seq "$REPS"); do
  for s in $SCENARIOS; do
    "$BIN" probe --child foreground "$s" "$WINDOW_MS" "$WORKERS" >>"$out/m_$s"
    if [ "$have_python" = 1 ]; then
      python3 "$out/peer.py" "$s" "$WINDOW_MS" "$WORKERS" >>"$out/p_$s" || echo "peer $s failed" >&2
    fi
  done
  echo "round $r/$REPS done" >&2
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$out" "$SCENARIOS" "$REPS" "$WINDOW_MS" "$WORKERS" <<'PY'
import json, os, statistics, sys
d, scenarios, reps, window, workers = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4], sys.argv[5]
med = statistics.median
def rows(name):
    p = os.path.join(d, name)
    return [json.loads(l) for l in open(p) if l.strip()] if os.path.exists(p) else []
def fig(rs, k):
    return med(r[k] for r in rs) if rs else None
def ms(us):
    return "—" if us is None else (f"{us/1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs")
def ratio(a, b):
    return "—" if a is None or b is None or b == 0 else f"{a/b:.1f}×"
print(f"{workers} background workers, {reps} rounds of {window} ms per scenario and system; medians of the rounds")
print()
print("| background | martelli p50 | p99 | max | p99 / idle | Python p50 | p99 | max | p99 / idle | Python / martelli (p99) |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
m_idle, p_idle = fig(rows("m_idle"), "p99"), fig(rows("p_idle"), "p99")
for s in scenarios:
    m, p = rows(f"m_{s}"), rows(f"p_{s}")
    mp99, pp99 = fig(m, "p99"), fig(p, "p99")
    print(f"| {s} | {ms(fig(m, 'p50'))} | {ms(mp99)} | {ms(fig(m, 'max'))} | {ratio(mp99, m_idle)} "
          f"| {ms(fig(p, 'p50'))} | {ms(pp99)} | {ms(fig(p, 'max'))} | {ratio(pp99, p_idle)} | {ratio(pp99, mp99)} |")
PY
