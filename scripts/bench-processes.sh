#!/usr/bin/env bash
# Side-by-side benchmark of the process backend against Python's ProcessPoolExecutor and
# multiprocessing.Pool, with 2 workers, and against the procspawn crate's process pool (a Rust peer,
# built from crates.io into martelli-bench; skipped with a message if it does not build).
#   bash scripts/bench-processes.sh [REPS]
# Peers are looked for in ../shared/peers/python/ (relative to the repository root); a missing peer
# or a missing python3 is skipped with a message, and its column says so.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}
PEERS=../shared/peers/python
cargo build --quiet --release --example process_bench
. scripts/target-dir.sh
BIN=$TARGET_DIR/release/examples/process_bench
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

for r in $(seq "$REPS"); do
  "$BIN" roundtrip 20000 >>"$out/m_roundtrip"
  "$BIN" submit 100000 >>"$out/m_submit"
  "$BIN" captured 20000 >>"$out/m_captured"
  "$BIN" map 100000 >>"$out/m_map"
  "$BIN" startup 20 >>"$out/m_startup"
  "$BIN" payload 100 >>"$out/m_payload"
  "$BIN" timeout 20 >>"$out/m_timeout"
  echo "martelli round $r/$REPS done" >&2
done

peer() { # name script -> runs it into $out/name, or says why not
  if ! command -v python3 >/dev/null; then
    echo "skipping $2: python3 not found" >&2
  elif [ ! -f "$PEERS/$2" ]; then
    echo "skipping $2: not found at $PEERS/$2" >&2
  else
    REPS=$REPS python3 "$PEERS/$2" >"$out/$1" || echo "peer $2 failed" >&2
  fi
}
# procspawn holds a few descriptors per outstanding handle, so 100,000 outstanding tasks exceed the
# usual descriptor limit ("Too many open files"): its submit row queues 4,000.
if cargo build --quiet --release -p martelli-bench --bin bench-procspawn; then
  for r in $(seq "$REPS"); do
    "$TARGET_DIR"/release/bench-procspawn roundtrip 5000 >>"$out/ps_roundtrip" || echo "procspawn roundtrip failed" >&2
    "$TARGET_DIR"/release/bench-procspawn submit 4000 >>"$out/ps_submit" || echo "procspawn submit failed" >&2
    "$TARGET_DIR"/release/bench-procspawn payload 50 >>"$out/ps_payload" || echo "procspawn payload failed" >&2
  done
else
  echo "skipping procspawn: it did not build" >&2
fi
peer py_pool bench_process_pool.py
peer py_mp bench_mp_pool.py
peer py_ipc bench_ipc_roundtrip.py

python3 - "$out" <<'PY'
import json, os, statistics, sys
d = sys.argv[1]
med = statistics.median
def rows(name):
    p = os.path.join(d, name)
    return [json.loads(l) for l in open(p) if l.strip()] if os.path.exists(p) else []
def one(name):
    r = rows(name)
    return r[0] if r else None
rt, sub, mapped = rows("m_roundtrip"), rows("m_submit"), rows("m_map")
cap = rows("m_captured")
st, pay, to = rows("m_startup"), rows("m_payload"), rows("m_timeout")
pool, mp, ipc = one("py_pool"), one("py_mp"), one("py_ipc")
p50 = med(r["p50_us"] for r in rt); p99 = med(r["p99_us"] for r in rt)
us = med(r["us_per_task"] for r in sub)
sub_lo, sub_hi = min(r["us_per_task"] for r in sub), max(r["us_per_task"] for r in sub)
cus = med(r["us_per_task"] for r in cap)
mus = med(r["us_per_task"] for r in mapped)
start = med(r["median_ms"] for r in st)
mibs = med(r["mib_per_s_one_way"] for r in pay)
tms = med(r["replacement_serves_ms_median"] for r in to); tmax = max(r["max_ms"] for r in to)
print(f"machine: {os.cpu_count()} cpus, 2 workers; martelli medians of {len(sub)} runs")
print()
print("| row | martelli | peer | ratio | target | met |")
print("| --- | --- | --- | --- | --- | --- |")
print(f"| tiny task round trip, one at a time | p50 {p50:.1f} µs, p99 {p99:.1f} µs | | | p50 ≤ 25 µs | {'yes' if p50 <= 25 else 'no'} |")
if pool:
    ppe = pool["submit"]["us_per_task_median"]
    print(f"| 100,000 tiny tasks, submit then wait | {us:.2f} µs/task (runs {sub_lo:.2f}–{sub_hi:.2f}) | PPE submit {ppe:.1f} µs/task | {ppe/us:.1f}× faster | ≤ 5 µs (≥ 20×) | {'yes' if us <= 5 else 'no'} |")
    c1 = pool["map_chunksize_1"]["us_per_task_median"]; c256 = pool["map_chunksize_256"]["us_per_task_median"]
    print(f"| 100,000 tiny tasks through map_task (auto chunks) | {mus:.3f} µs/task | PPE map chunksize 256: {c256:.2f} µs/task (chunksize 1: {c1:.1f}) | {c256/mus:.1f}× PPE's throughput | ≥ 3× | {'yes' if c256/mus >= 3 else 'no'} |")
    fork = pool["startup_fork"]["all_workers_up_ms"]["median"]; spawn = pool["startup_spawn"]["all_workers_up_ms"]["median"]
    print(f"| pool start until 2 workers answer | {start:.2f} ms | PPE fork {fork:.1f} ms, spawn {spawn:.1f} ms | {fork/start:.1f}× / {spawn/start:.1f}× faster | ≤ 5 ms | {'yes' if start <= 5 else 'no'} |")
else:
    print(f"| 100,000 tiny tasks, submit then wait | {us:.2f} µs/task (runs {sub_lo:.2f}–{sub_hi:.2f}) | (peer missing) | | ≤ 5 µs | {'yes' if us <= 5 else 'no'} |")
    print(f"| 100,000 tiny tasks through map_task (auto chunks) | {mus:.3f} µs/task | (peer missing) | | | |")
    print(f"| pool start until 2 workers answer | {start:.2f} ms | (peer missing) | | ≤ 5 ms | {'yes' if start <= 5 else 'no'} |")
print(f"| 20,000 tiny tasks with stdout/stderr captured, submit then wait | {cus:.2f} µs/task | | | | |")
if mp:
    keys = [k for k in ("imap_unordered_chunksize_1", "imap_unordered_chunksize_256") if isinstance(mp.get(k), dict)]
    for k in keys:
        v = mp[k].get("us_per_task_median")
        if v is not None:
            print(f"| (peer only) multiprocessing.Pool {k} | | {v:.1f} µs/task | | | |")
if ipc:
    ppe = ipc["process_pool_submit"]["MiB_per_s_one_way_median"]
    print(f"| 1 MiB argument and result round trip | {mibs:.0f} MiB/s each way | PPE {ppe:.0f} MiB/s | {mibs/ppe:.1f}× | ≥ 1 GB/s (≥ 4×) | {'yes' if mibs * 1.048576 >= 1000 and mibs / ppe >= 4 else 'no'} |")
else:
    print(f"| 1 MiB argument and result round trip | {mibs:.0f} MiB/s each way | (peer missing) | | ≥ 1 GB/s | {'yes' if mibs * 1.048576 >= 1000 else 'no'} |")
ps_rt, ps_sub, ps_pay = rows("ps_roundtrip"), rows("ps_submit"), rows("ps_payload")
if ps_rt:
    v = med(r["p50_us"] for r in ps_rt)
    print(f"| (Rust peer) procspawn Pool(1): round trip, one at a time | p50 {p50:.1f} µs | p50 {v:.1f} µs | {v/p50:.1f}× faster | | |")
if ps_sub:
    v = med(r["us_per_task"] for r in ps_sub)
    print(f"| (Rust peer) procspawn Pool(2): tiny tasks submitted then joined (it: 4,000) | {us:.2f} µs/task | {v:.1f} µs/task | {v/us:.1f}× faster | | |")
if ps_pay:
    v = med(r["mib_per_s"] for r in ps_pay)
    print(f"| (Rust peer) procspawn Pool(1): 1 MiB argument and result | {mibs:.0f} MiB/s | {v:.0f} MiB/s | {mibs/v:.1f}× | | |")
print(f"| timed-out task killed, replacement serves the next task | {tms:.1f} ms median, {tmax:.1f} ms worst | | | ≤ 20 ms | {'yes' if tmax <= 20 else ('median only' if tms <= 20 else 'no')} |")
PY
