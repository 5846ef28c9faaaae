#!/usr/bin/env bash
# Queue throughput, side by side: martelli's JoinableQueue (with task_done/join accounting) against
# crossbeam-channel, flume and std::sync::mpsc (one Rust benchmark binary that interleaves them rep by
# rep), and Python's queue.Queue with task_done/join (the peer script). The Rust binary and the Python
# peer alternate for ROUNDS rounds; each round gives its ratios (martelli over each peer, both measured
# in that round, so a change in the machine's load between rounds cancels out), and the script reports
# the median ratio over the rounds with its range, and the median throughput of each queue.
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

declare -A samples ratios
impls=(martelli crossbeam-channel crossbeam+counter flume std-mpsc)
for ((round = 1; round <= rounds; round++)); do
    echo
    echo "round $round/$rounds"
    out="$(cd "$root" && cargo bench -q -p martelli --bench queue)"
    grep -v '^{' <<<"$out"
    for impl in "${impls[@]}"; do
        samples[$impl]+="$(rate "$impl" <<<"$out")"$'\n'
    done
    m="$(rate martelli <<<"$out")"
    ratios[crossbeam]+="$(awk -v m="$m" -v c="$(rate crossbeam-channel <<<"$out")" 'BEGIN { print m / c }')"$'\n'
    if [[ -n "$python" ]]; then
        py_out="$(N="$py_n" python3 "$script")"
        echo "python queue.Queue: $py_out"
        p="$(sed -E 's/.*"items_per_s_median": ?([0-9.e+]+).*/\1/' <<<"$py_out")"
        samples[python]+="$p"$'\n'
        ratios[python]+="$(awk -v m="$m" -v p="$p" 'BEGIN { print m / p }')"$'\n'
    fi
done

echo
echo "medians over $rounds round(s):"
for impl in "${impls[@]}" ${python:+python}; do
    printf '  %-20s %14.0f items/s\n' "$impl" "$(printf '%s' "${samples[$impl]}" | median)"
done
# "median (min–max)" of the ratios read from stdin.
summary() {
    sort -g | awk '{ v[NR] = $1 } END {
        med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.2fx (rounds: %.2fx to %.2fx)", med, v[1], v[NR] }'
}
echo "martelli / crossbeam-channel throughput: $(printf '%s' "${ratios[crossbeam]}" | summary) (target >= 0.8x)"
if [[ -n "$python" ]]; then
    echo "martelli / Python queue.Queue throughput: $(printf '%s' "${ratios[python]}" | summary) (target >= 30x)"
fi
