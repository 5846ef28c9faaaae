#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of martelli's decoders, each target for SECONDS.
#   bash scripts/fuzz.sh [SECONDS]        # default 15 s per target; the test command runs this
# Longer campaigns: bash scripts/fuzz.sh 600, or cd fuzz && cargo +nightly fuzz run TARGET -s none.
# cargo-fuzz needs a nightly toolchain; the standard library cannot be rebuilt here, so the targets are
# built without a sanitizer (-s none): panics, aborts, timeouts and out-of-memory are still caught.
# martelli run's argument parser is fuzzed with proptest instead (it lives in a binary crate):
# cargo test -p martelli-cli run::fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-15}
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: SKIPPED: no nightly toolchain here, so no coverage-guided fuzzing of the decoders"
  echo "fuzz: (martelli run's parser is still fuzzed by proptest in cargo test: run::fuzz)"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
cd fuzz
for target in $(cargo +nightly fuzz list); do
  mkdir -p "corpus/$target"
  log=$(mktemp)
  if ! cargo +nightly fuzz run "$target" -s none "corpus/$target" -- \
      -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -max_len=65536 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $target FAILED (the crashing input is under fuzz/artifacts/$target)"
    exit 1
  fi
  runs=$(grep -Eo 'Done [0-9]+ runs' "$log" | tail -1 || true)
  echo "fuzz: $target: ${runs:-ran} in ${SECONDS_PER_TARGET} s, no finding"
  rm -f "$log"
done
