#!/usr/bin/env bash
# Queue throughput, side by side: martelli's JoinableQueue (with task_done/join accounting) against
# crossbeam-channel, flume and std::sync::mpsc (one Rust benchmark binary that interleaves them rep by
# rep), and Python's queue.Queue with task_done/join (the peer script). The Rust binary and the Python
# peer alternate for ROUNDS rounds, so a change in the machine's load hits both; each figure is the
# median over the rounds of each round's median. Prints the figures and the ratios.
#
#   scripts/bench-queue.sh                 # N=1000000 items (Rust), PY_N=200000 (Python), REPS=7, ROUNDS=3
#   N=200000 REPS=3 ROUNDS=1 scripts/bench-queue.sh
#
# The Python peer is looked up at ../shared/peers/python/bench_queue.py relative to the repository
# root (override with PEERS_DIR); when it or python3 is missing, that peer is skipped with a message.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
peers="${PEERS_DIR:-$root/../shared/peers}"
export N="${N:-1000000}"
export REPS="${REPS:-7}"
rounds="${ROUNDS:-3}"
py_n="${PY_N:-200000}"

cpu="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)"
echo "machine: $(nproc) cores, ${cpu:-unknown CPU}, $(uname -sr)"
echo "rust: $(rustc --version)"

script="$peers/python/bench_queue.py"
python=""
if ! command -v python3 >/dev/null 2>&1; then
    echo "skipping the Python peer: python3 is not installed"
elif [[ ! -f "$script" ]]; then
    echo "skipping the Python peer: $script not found (set PEERS_DIR to the peers directory)"
else
    python="python3 $(python3 -c 'import sys; print(sys.version.split()[0])')"
    echo "python peer: $script ($python, N=$py_n)"
fi

(cd "$root" && cargo bench -q -p martelli --bench queue --no-run)

# items_per_s_median of one implementation in JSON lines read from stdin.
rate() { grep "\"impl\":\"$1\"" | sed -E 's/.*"items_per_s_median":([0-9.e+]+).*/\1/'; }
# The median of the numbers read from stdin, one a line.
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

declare -A samples
impls=(martelli crossbeam-channel crossbeam+counter flume std-mpsc)
for ((round = 1; round <= rounds; round++)); do
    echo
    echo "round $round/$rounds"
    out="$(cd "$root" && cargo bench -q -p martelli --bench queue)"
    grep -v '^{' <<<"$out"
    for impl in "${impls[@]}"; do
        samples[$impl]+="$(rate "$impl" <<<"$out")"$'\n'
    done
    if [[ -n "$python" ]]; then
        py_out="$(N="$py_n" python3 "$script")"
        echo "python queue.Queue: $py_out"
        samples[python]+="$(sed -E 's/.*"items_per_s_median": ?([0-9.e+]+).*/\1/' <<<"$py_out")"$'\n'
    fi
done

echo
echo "medians over $rounds round(s):"
for impl in "${impls[@]}" ${python:+python}; do
    printf '  %-20s %14.0f items/s\n' "$impl" "$(printf '%s' "${samples[$impl]}" | median)"
done
martelli="$(printf '%s' "${samples[martelli]}" | median)"
crossbeam="$(printf '%s' "${samples[crossbeam-channel]}" | median)"
awk -v m="$martelli" -v c="$crossbeam" \
    'BEGIN { printf "martelli / crossbeam-channel throughput: %.2fx (target >= 0.8x)\n", m / c }'
if [[ -n "$python" ]]; then
    py="$(printf '%s' "${samples[python]}" | median)"
    awk -v m="$martelli" -v p="$py" \
        'BEGIN { printf "martelli / Python queue.Queue throughput: %.1fx (target >= 30x)\n", m / p }'
fi
