#!/usr/bin/env bash
# Side-by-side benchmark of the event-loop backend against Python's asyncio and against OS threads.
#   bash scripts/bench-async.sh [ROUNDS]
# Rows: 100,000 concurrent tasks each sleeping 10 ms (martelli event loop vs asyncio.gather), and
# 10,000 units of the same wait as threads vs async tasks (spawn time and memory per unit). Memory
# per task is measured two ways: each task held at a shared CancelToken until all are spawned (it
# pays for its waiter), and all tasks queued while the loop is busy, as asyncio.gather and the tokio
# floor queue them (no task pays for a gate).
# Rounds interleave the programs (A B A B …) because the machine is shared and noisy; medians are shown.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
PEER=../shared/peers/python/bench_async_vs_threads.py
cargo build --quiet --release --example sleepers
. scripts/target-dir.sh
BIN=$TARGET_DIR/release/examples/sleepers
out=$(mktemp -d)
for r in $(seq "$ROUNDS"); do
  "$BIN" baseline >>"$out/m_base"
  "$BIN" async 100000 >>"$out/m_async"
  "$BIN" queued 100000 >>"$out/m_queued"
  "$BIN" tokio 100000 >>"$out/m_tokio"
  "$BIN" async 10000 >>"$out/m_async10k"
  "$BIN" threads 10000 >>"$out/m_threads10k"
  if command -v python3 >/dev/null && [ -f "$PEER" ]; then
    REPS=1 python3 "$PEER" >>"$out/py"
  fi
  echo "round $r/$ROUNDS done" >&2
done
python3 - "$out" <<'PY'
import json, statistics, sys, os
d = sys.argv[1]
def rows(name):
    p = os.path.join(d, name)
    return [json.loads(l) for l in open(p)] if os.path.exists(p) else []
med = statistics.median
base = med(r["peak_rss_kib"] for r in rows("m_base"))
def summary(name):
    rs = rows(name)
    n = rs[0]["n"]
    return {"n": n, "wall": med(r["wall_s"] for r in rs), "spawn": med(r["spawn_s"] for r in rs),
            "kib_per": (med(r["peak_rss_kib"] for r in rs) - base) / n}
a, a10, t10 = summary("m_async"), summary("m_async10k"), summary("m_threads10k")
q = summary("m_queued")
tk = summary("m_tokio")
print(f"machine: {os.cpu_count()} cpus; rounds: {len(rows('m_async'))}; medians")
print()
print("| row | martelli | peer | ratio (martelli / peer) | target |")
print("| --- | --- | --- | --- | --- |")
py = rows("py")
if py:
    pw = med(r["asyncio"]["wall_s"]["median"] for r in py)
    pk = med(r["asyncio"]["kib_per_task_median"] for r in py)
    print(f"| 100k tasks × sleep 10 ms: wall | {a['wall']:.3f} s | asyncio.gather {pw:.3f} s | {a['wall']/pw:.2f}× | ≤ 0.3 s absolute |")
    print(f"| 100k tasks × sleep 10 ms: memory per task (each held at a shared CancelToken) | {a['kib_per']:.2f} KiB ({a['kib_per']*1024:.0f} B) | asyncio {pk:.2f} KiB ({pk*1024:.0f} B) | {a['kib_per']/pk:.3f}× | ≤ 0.33× |")
    print(f"| same, tasks queued behind a busy loop as asyncio.gather and tokio have them | {q['kib_per']:.2f} KiB ({q['kib_per']*1024:.0f} B) | asyncio {pk:.2f} KiB ({pk*1024:.0f} B) | {q['kib_per']/pk:.3f}× | ≤ 0.33× |")
else:
    print(f"| 100k tasks × sleep 10 ms: wall | {a['wall']:.3f} s | (python peer not found) | | ≤ 0.3 s |")
    print(f"| 100k tasks × sleep 10 ms: memory per task (each held at a shared CancelToken) | {a['kib_per']:.2f} KiB | (python peer not found) | | |")
    print(f"| same, tasks queued behind a busy loop as asyncio.gather and tokio have them | {q['kib_per']:.2f} KiB | (python peer not found) | | |")
print(f"| 100k tasks: martelli over bare tokio (the floor) | {a['kib_per']:.2f} KiB, {a['wall']:.3f} s | tokio {tk['kib_per']:.2f} KiB ({tk['kib_per']*1024:.0f} B), {tk['wall']:.3f} s | {a['kib_per']/tk['kib_per']:.2f}× memory, {a['wall']/tk['wall']:.2f}× wall | |")
print(f"| 10k units: spawn time | async {a10['spawn']*1e3:.1f} ms | threads {t10['spawn']*1e3:.1f} ms | {a10['spawn']/t10['spawn']:.3f}× | |")
print(f"| 10k units: memory per unit | async {a10['kib_per']:.2f} KiB | threads {t10['kib_per']:.2f} KiB | {a10['kib_per']/t10['kib_per']:.3f}× | |")
print(f"| 10k units: wall | async {a10['wall']*1e3:.1f} ms | threads {t10['wall']*1e3:.1f} ms | {a10['wall']/t10['wall']:.3f}× | |")
PY
rm -rf "$out"
