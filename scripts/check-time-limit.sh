#!/usr/bin/env bash
# Checks that the per-test time limit works, on both kinds of test binary: runs the two tests that
# hang on purpose (crates/martelli-testkit/tests/time_limit_{runner,libtest}.rs, ignored otherwise)
# with cargo-nextest's time-limit-check profile (.config/nextest.toml: stopped after 3 s) and
# requires the run to fail with both stopped at their limit and named, and the child process each
# started gone with it. scripts/test.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The children are `sleep 3600.MARKER`: this run's own marker.
export MARTELLI_HANG_MARKER="$$$RANDOM"
fail() {
  cat "$log"
  echo "check-time-limit: FAILED: $*"
  exit 1
}
# The same build as the test run (every package, every feature), so that nothing is rebuilt.
if cargo nextest run --workspace --all-features --profile time-limit-check --run-ignored only \
    -E 'package(martelli-testkit) & test(=hangs_on_purpose)' --color never >"$log" 2>&1; then
  fail "the tests that hang on purpose passed; they must be stopped"
fi
for binary in time_limit_runner time_limit_libtest; do
  grep -Eq "^ *TIMEOUT .*martelli-testkit::$binary hangs_on_purpose" "$log" ||
    fail "nextest did not stop $binary's hangs_on_purpose at its limit"
done
# A child's command line is `sleep` NUL `3600.MARKER` NUL (the bracket keeps grep from finding its
# own). The kernel may take a moment to finish a killed process: up to 5 s.
left() { grep -lsa "3600[.]$MARTELLI_HANG_MARKER" /proc/[0-9]*/cmdline; }
for _ in $(seq 50); do
  left >/dev/null || break
  sleep 0.1
done
if left; then
  fail "a child of a stopped test is still running"
fi
grep -E '^ *Summary' "$log"
echo "check-time-limit: ok: both tests that hang on purpose were stopped at their limit and named, with their children"
