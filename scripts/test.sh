#!/usr/bin/env bash
# Runs every check and test of the project: formatting, lints, unit, integration and doc tests.
# Works on a fresh Debian machine with only the Rust toolchain; installs what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "test-time requirements"
# The cluster tests start their own redis-server (Debian package redis-server, Redis 7).
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server
fi
redis-server --version
# The TLS tests make a CA and a server certificate with the openssl command (Debian package openssl).
if ! command -v openssl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openssl
fi
# The dashboard's tests drive a headless browser (Debian package chromium).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo test (unit, integration and doc tests; examples are built and run by tests; every feature, so the cluster tests run)"
cargo test --workspace --all-features

step "loom models (every interleaving up to a preemption bound)"
bash scripts/loom.sh

step "fuzzing, bounded (each decoder for 15 s; longer runs: bash scripts/fuzz.sh 600)"
bash scripts/fuzz.sh 15
