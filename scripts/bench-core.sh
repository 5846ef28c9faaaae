#!/usr/bin/env bash
# Runs martelli's core benchmarks side by side with rayon, the threadpool crate and Python's
# ThreadPoolExecutor, interleaved over rounds, and prints a table of ratios (see BENCHMARKS.md).
#
#   scripts/bench-core.sh                 # all rows, 7 rounds
#   scripts/bench-core.sh --rounds 3      # fewer rounds
#   scripts/bench-core.sh --only submit,map --verbose
#
# The Python row needs python3 and the peer scripts in ../shared/peers/python/ beside the repository;
# without them it is skipped with a message.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

peer="$root/../shared/peers/python/bench_thread_pool.py"
args=()
if [[ ! -f "$peer" ]]; then
    echo "note: $peer not found: the Python row is skipped" >&2
elif ! command -v python3 >/dev/null 2>&1; then
    echo "note: python3 not found: the Python row is skipped" >&2
else
    args+=(--python-peer "$peer")
fi

cargo build --release --locked -p martelli-bench --bin bench-core
exec cargo run --release --locked --quiet -p martelli-bench --bin bench-core -- "${args[@]}" "$@"
