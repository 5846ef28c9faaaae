#!/usr/bin/env bash
# What `martelli dashboard` costs a busy broker: no-op tasks at 10,000 tasks/s through a private
# redis-server, 30 s without the dashboard, then 30 s with it (and one page on its live feed);
# INFO commandstats and INFO cpu around each phase. See BENCHMARKS.md, "Dashboard".
#
#   scripts/bench-dashboard.sh                     # 10,000 tasks/s, 30 s per phase
#   scripts/bench-dashboard.sh --rate 5000 --seconds 10
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out=$(mktemp -d /tmp/martelli-bench-dashboard.XXXXXX)

if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile "$out/redis.pid" --logfile "$out/redis.log" --dir "$out"
stop_redis() { redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || kill "$(cat "$out/redis.pid")" 2>/dev/null || true; }
trap stop_redis EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done

cargo build --release --locked -p martelli-cli -p martelli-bench --bin martelli --bin bench-dashboard
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(uname -sr), $(redis-server --version | cut -d' ' -f3), load $(cut -d' ' -f1-3 /proc/loadavg)"
. scripts/target-dir.sh
"$TARGET_DIR/release/bench-dashboard" --url "redis://127.0.0.1:$port" \
    --martelli "$TARGET_DIR/release/martelli" "$@"
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
