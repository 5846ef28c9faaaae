#!/usr/bin/env bash
# The rate-limit benchmark (docs/protocol.md, "Addition 3"): the no-op task limited to RATE per
# second across WORKERS worker processes, measured over SECONDS. Prints the observed rate and its
# deviation from the limit. See BENCHMARKS.md, "Cluster: rate limits".
#
#   scripts/bench-cluster-rate.sh                      # 100/s, 4 workers, 60 s
#   RATE=50 SECONDS_=20 WORKERS=2 scripts/bench-cluster-rate.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
RATE=${RATE:-100}
SECONDS_=${SECONDS_:-60}
WORKERS=${WORKERS:-4}
out=$(mktemp -d /tmp/martelli-bench-rate.XXXXXX)

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile "$out/redis.pid" --logfile "$out/redis.log" --dir "$out"
stop_redis() { redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || kill "$(cat "$out/redis.pid")" 2>/dev/null || true; }
trap stop_redis EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(redis-server --version | cut -d' ' -f3), load $(cut -d' ' -f1-3 /proc/loadavg)"
cargo build --release --locked -p martelli-bench --bin bench-cluster
. scripts/target-dir.sh
"$TARGET_DIR/release/bench-cluster" --url "redis://127.0.0.1:$port" \
    --rate "$RATE" --seconds "$SECONDS_" --workers "$WORKERS" --concurrency 2
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
