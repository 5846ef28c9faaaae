#!/usr/bin/env bash
# Runs every check and test of the project: formatting, lints, unit, integration and doc tests, loom
# models, ThreadSanitizer, the instruction-count guard, bounded fuzzing. Works on a fresh Debian machine with only the
# Rust toolchain; installs what the tests need (redis-server, openssl, chromium, valgrind,
# cargo-nextest, cargo-fuzz).
#
# Nothing can hang it: every step has a time limit, and a step that runs past it is stopped with
# every process it started and fails, naming the step; every test has a time limit of its own
# (cargo-nextest, .config/nextest.toml), and a test that runs past it is stopped and named.
set -euo pipefail
cd "$(dirname "$0")/.."

# The time each step took, for the summary at the end.
TIMES=()

# bounded NAME LIMIT COMMAND...: runs COMMAND as the step NAME. If it has not finished within LIMIT
# (a duration for timeout(1): 90s, 20m), it is stopped, with every process it started, and the
# script fails naming the step.
bounded() {
  local name=$1 limit=$2
  shift 2
  printf '\n==> %s (time limit %s)\n' "$name" "$limit"
  local start=$SECONDS rc=0 interrupted=""
  # timeout(1) puts COMMAND in a process group of its own and, at the limit, sends SIGTERM to the
  # whole group, then SIGKILL 20 s later. Started in the background, so that this shell hears
  # Ctrl-C (or a SIGTERM) at once and passes it on to the group.
  timeout --kill-after=20s "$limit" "$@" &
  local pid=$!
  trap 'interrupted=1; kill -TERM "$pid" 2>/dev/null || true' INT TERM
  while :; do
    rc=0
    wait "$pid" || rc=$?
    # A trapped signal ends `wait` early: wait again until the step has really ended.
    kill -0 "$pid" 2>/dev/null || break
  done
  trap - INT TERM
  local took=$((SECONDS - start))
  TIMES+=("$(printf '%5d s  %s' "$took" "$name")")
  if [ -n "$interrupted" ]; then
    printf '\ntest.sh: interrupted during the step "%s"\n' "$name" >&2
    exit 130
  fi
  case $rc in
    0) ;;
    124 | 137)
      printf '\ntest.sh: FAILED: the step "%s" ran past its time limit of %s and was stopped.\n' \
        "$name" "$limit" >&2
      printf 'Something in it hangs or has become far slower; a test that hangs is named above (TIMEOUT).\n' >&2
      exit 1
      ;;
    *)
      printf '\ntest.sh: FAILED: the step "%s" (exit code %d)\n' "$name" "$rc" >&2
      exit "$rc"
      ;;
  esac
}

# as_root COMMAND...: runs COMMAND as root (through sudo unless this is root already).
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# requirements: installs the Debian packages the tests use when their commands are missing: the
# cluster tests start their own redis-server (Redis 7); the TLS tests make a CA and a server
# certificate with the openssl command; the dashboard's tests drive a headless chromium; the
# instruction-count guard runs under valgrind; the differential suite of `martelli run` runs GNU
# parallel's own examples through GNU parallel.
requirements() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
  parallel --version 2>/dev/null | grep -q 'GNU parallel' || missing+=(parallel)
  if [ ${#missing[@]} -gt 0 ]; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
  redis-server --version
  parallel --version | head -n 1
}

export -f as_root requirements
bounded "test-time requirements: redis-server, openssl, chromium, valgrind, GNU parallel" 20m bash -c requirements
if ! cargo nextest --version >/dev/null 2>&1; then
  # cargo-nextest runs the tests, each in its own process with its time limit.
  bounded "install cargo-nextest (builds it from source, once)" 45m \
    cargo install cargo-nextest --locked
fi

bounded "cargo fmt --check" 5m cargo fmt --all -- --check

bounded "cargo clippy (warnings are errors)" 30m \
  cargo clippy --workspace --all-targets --all-features -- -D warnings

# Every feature, so the cluster tests run; examples are built here and run by tests.
bounded "build the tests" 30m cargo test --workspace --all-features --no-run

bounded "the time limit works: two tests that hang on purpose are stopped and named" 5m \
  bash scripts/check-time-limit.sh

bounded "unit and integration tests (cargo nextest; each test with its time limit)" 30m \
  cargo nextest run --workspace --all-features

# rustdoc runs the doc tests; nextest cannot. The step's limit bounds them, and libtest names a
# doc test that has run for over 60 s.
bounded "doc tests" 20m cargo test --workspace --all-features --doc

bounded "loom models (every interleaving up to a preemption bound)" 20m bash scripts/loom.sh

# ThreadSanitizer over the in-process concurrency (std rebuilt instrumented: nightly + rust-src,
# installed by the script when missing); first it must report a data race made on purpose.
bounded "ThreadSanitizer: the canary's race is reported, then the pool, queue, barrier and event loop tests report none" 40m \
  bash scripts/tsan.sh

# Instruction counts per item of the hot paths (callgrind), against scripts/inscount-baseline.txt:
# the speed check that the machine's load cannot move. First it must catch a build slowed on purpose.
bounded "the instruction-count guard fails on a build slowed on purpose" 20m \
  bash scripts/inscount.sh --self-check
bounded "instruction counts of the hot paths: none grew more than 10 %" 20m bash scripts/inscount.sh

bounded "fuzzing, bounded (each decoder for 15 s; longer runs: bash scripts/fuzz.sh 600)" 30m \
  bash scripts/fuzz.sh 15

printf '\n==> every step passed; the time each took:\n'
printf '%s\n' "${TIMES[@]}"
