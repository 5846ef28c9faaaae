#!/usr/bin/env bash
# ThreadSanitizer over martelli's in-process concurrency: the library's unit tests, the thread pool,
# the joinable queue, the barrier and the event loop, each test binary under a time
# limit. First it runs a data race on purpose (tests/tsan_canary.rs) and requires ThreadSanitizer to
# report it, so that a run which reports nothing is evidence.
#
#   bash scripts/tsan.sh
#
# Needs a nightly toolchain with the rust-src component: ThreadSanitizer must instrument the standard
# library too (-Zbuild-std), or the accesses std's own Mutex protects are reported as races. The
# script installs both with rustup when they are missing; if that fails (no network), it says so
# and stops with status 0, unless TSAN_REQUIRED=1, when it fails. Linux on x86_64 or aarch64.
#
# Not run here: the process pool and the cluster (ThreadSanitizer does not follow fork(), and their
# races are between processes, which the kill and storm tests exercise instead) and chaos mode's
# tests (they run example programs, built without the sanitizer).
set -euo pipefail
cd "$(dirname "$0")/.."

toolchain=${TSAN_TOOLCHAIN:-nightly}
host=$(rustc -vV | sed -n 's/^host: //p')

have_toolchain() {
  local sysroot
  sysroot=$(rustc "+$toolchain" --print sysroot 2>/dev/null) || return 1
  [ -d "$sysroot/lib/rustlib/src/rust/library" ]
}

if ! have_toolchain; then
  echo "tsan.sh: installing the $toolchain toolchain with rust-src (to rebuild std instrumented)"
  if ! timeout 900 rustup toolchain install "$toolchain" --profile minimal --component rust-src \
    || ! have_toolchain; then
    echo "tsan.sh: SKIPPED: no $toolchain toolchain with rust-src could be installed;" \
      "ThreadSanitizer did not run" >&2
    [ "${TSAN_REQUIRED:-0}" = 1 ] && exit 1
    exit 0
  fi
fi

tests=(threads queue_semantics queue_stress barrier_semantics backend_threads event_loop
  backend_event_loop tsan_canary)
args=(--lib)
for t in "${tests[@]}"; do args+=(--test "$t"); done

echo "tsan.sh: building the tests with ThreadSanitizer ($(rustc "+$toolchain" --version))"
export RUSTFLAGS="-Zsanitizer=thread"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}/tsan
executables=$(cargo "+$toolchain" test -Zbuild-std --target "$host" -p martelli "${args[@]}" \
  --no-run --message-format=json \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')

# Report every race, keep going, exit with 66 if any was reported. No backtraces of panics: the
# tests panic on purpose, and symbolising a backtrace under ThreadSanitizer takes long enough (tens of
# seconds) to trip the tests' own time limits.
export TSAN_OPTIONS="exitcode=66 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
export RUST_BACKTRACE=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

canary=$(grep '/tsan_canary-' <<<"$executables" || true)
if [ -z "$canary" ]; then
  echo "tsan.sh: the canary test binary was not built" >&2
  exit 1
fi
rc=0
timeout 120 "$canary" --ignored --exact two_threads_write_one_counter_without_synchronisation \
  >"$log" 2>&1 || rc=$?
if [ "$rc" -eq 0 ] || ! grep -q "ThreadSanitizer: data race" "$log"; then
  cat "$log" >&2
  echo "tsan.sh: ThreadSanitizer did not report the canary's race (status $rc): it is not on" >&2
  exit 1
fi
echo "tsan.sh: the canary's race was reported, as it must be"

failed=()
while read -r exe; do
  [ -z "$exe" ] || [ "$exe" = "$canary" ] && continue
  name=$(basename "$exe" | sed 's/-[0-9a-f]*$//')
  start=$SECONDS
  rc=0
  # libtest names a test that runs for over 60 s; the limit stops a hang.
  timeout --kill-after=10s 900 "$exe" --test-threads=2 >"$log" 2>&1 || rc=$?
  races=$(grep -c "WARNING: ThreadSanitizer" "$log" || true)
  summary=$(grep -E "^test result:" "$log" | tail -n 1)
  printf '%-22s %4d s  status %3d  reports %s  %s\n' "$name" $((SECONDS - start)) "$rc" "$races" \
    "$summary"
  if [ "$rc" -ne 0 ] || [ "$races" -ne 0 ]; then
    grep -A40 "WARNING: ThreadSanitizer" "$log" | head -n 120 >&2 || tail -n 40 "$log" >&2
    failed+=("$name")
  fi
done <<<"$executables"

if [ "${#failed[@]}" -ne 0 ]; then
  echo "tsan.sh: failed under ThreadSanitizer: ${failed[*]}" >&2
  exit 1
fi
echo "tsan.sh: no data race reported"
