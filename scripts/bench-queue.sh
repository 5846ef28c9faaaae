#!/usr/bin/env bash
# Queue throughput, side by side in one run: martelli's JoinableQueue (with task_done/join accounting)
# against crossbeam-channel, flume and std::sync::mpsc (one Rust benchmark binary), and Python's
# queue.Queue with task_done/join (the peer script). Prints each figure and the ratios.
#
#   scripts/bench-queue.sh                # N=1000000 items for Rust, PY_N=200000 for Python, REPS=7
#   N=200000 REPS=3 scripts/bench-queue.sh
#
# The Python peer is looked up at ../shared/peers/python/bench_queue.py relative to the repository
# root (override with PEERS_DIR); when it or python3 is missing, that peer is skipped with a message.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
peers="${PEERS_DIR:-$root/../shared/peers}"
export N="${N:-1000000}"
export REPS="${REPS:-7}"
py_n="${PY_N:-200000}"

cpu="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)"
echo "machine: $(nproc) cores, ${cpu:-unknown CPU}, $(uname -sr)"
echo "rust: $(rustc --version)"
echo

rust_out="$(cd "$root" && cargo bench -q -p martelli --bench queue)"
grep -v '^{' <<<"$rust_out"
echo

# items_per_s_median of one implementation from the JSON lines.
rate() {
    grep "\"impl\":\"$1\"" <<<"$rust_out" | sed -E 's/.*"items_per_s_median":([0-9.e+]+).*/\1/'
}
martelli="$(rate martelli)"
crossbeam="$(rate crossbeam-channel)"
awk -v m="$martelli" -v c="$crossbeam" \
    'BEGIN { printf "martelli / crossbeam-channel throughput: %.2fx (target >= 0.8x)\n", m / c }'

script="$peers/python/bench_queue.py"
if ! command -v python3 >/dev/null 2>&1; then
    echo "skipping the Python peer: python3 is not installed"
elif [[ ! -f "$script" ]]; then
    echo "skipping the Python peer: $script not found (set PEERS_DIR to the peers directory)"
else
    py_out="$(N="$py_n" python3 "$script")"
    echo "python3 $(python3 -c 'import sys; print(sys.version.split()[0])'): $py_out"
    python="$(sed -E 's/.*"items_per_s_median": ?([0-9.e+]+).*/\1/' <<<"$py_out")"
    awk -v m="$martelli" -v p="$python" \
        'BEGIN { printf "martelli / Python queue.Queue throughput: %.1fx (target >= 30x)\n", m / p }'
fi
