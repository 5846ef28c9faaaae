#!/usr/bin/env bash
# Model-checks martelli's synchronisation with loom: every interleaving of the models in
# the loom_models modules (the future and cancel token, the thread pool's queue and shutdown, the joinable
# queue's accounting) up to a bound on preemptions (LOOM_MAX_PREEMPTIONS, default 3).
#   bash scripts/loom.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-3}
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test --release -p martelli --no-default-features --lib loom_models -- --test-threads=2
