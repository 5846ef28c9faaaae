#!/usr/bin/env bash
# The cluster benchmark: martelli's Redis Streams backend on no-op tasks with 2 worker processes,
# side by side with the distributed peers (Celery, RQ, a bare Python Streams loop) and the broker's
# own ceiling (redis-benchmark XADD). Client, workers and Redis share this machine. See BENCHMARKS.md.
#
#   scripts/bench-cluster.sh                       # martelli 3 runs x 10,000 tasks, then the peers
#   PEERS=none scripts/bench-cluster.sh            # martelli and redis-benchmark only
#   PEERS="streams celery" PEER_RUNS=1 scripts/bench-cluster.sh
#   scripts/bench-cluster.sh --concurrency 16      # extra arguments go to bench-cluster
#
# The peers need python3 and ../shared/peers/distributed/ beside the repository; Celery and RQ are
# installed into a virtualenv under /tmp with pip. What cannot run is skipped with a message.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
peers_dir="$root/../shared/peers/distributed"
PEERS=${PEERS:-"celery rq-simple streams"}
PEER_RUNS=${PEER_RUNS:-3}
PEER_N=${PEER_N:-10000}
PEER_LAT=${PEER_LAT:-500}
out=$(mktemp -d /tmp/martelli-bench-cluster.XXXXXX)

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

echo "machine: $(nproc) cores, $(uname -sr), $(redis-server --version | cut -d' ' -f3), load $(cut -d' ' -f1-3 /proc/loadavg)"

cargo build --release --locked -p martelli-bench --bin bench-cluster
. scripts/target-dir.sh
"$TARGET_DIR/release/bench-cluster" --url "redis://127.0.0.1:$port" "$@" | tee "$out/martelli.log"

echo
echo "redis-benchmark XADD, 50 clients, unpipelined (the broker's ceiling for one XADD per task):"
redis-benchmark -p "$port" -n 200000 -c 50 -P 1 --csv XADD bench:rb MAXLEN '~' 100000 '*' f v \
    | tail -n 1 | tee "$out/xadd.csv"
redis-cli -p "$port" del bench:rb >/dev/null

ran_peers=()
if [[ "$PEERS" != none ]]; then
    if [[ ! -f "$peers_dir/bench.py" ]]; then
        echo "note: $peers_dir/bench.py not found: the peers are skipped" >&2
    else
        venv=/tmp/celery-venv
        if [[ ! -x "$venv/bin/python" ]] && ! python3 -m venv "$venv"; then
            echo "note: python3 -m venv failed: the peers are skipped" >&2
        elif ! "$venv/bin/pip" install -q 'celery[redis]' redis rq packaging; then
            echo "note: pip could not install Celery/RQ: the peers are skipped" >&2
        else
            for mode in $PEERS; do
                echo
                echo "peer: $mode ($PEER_RUNS runs x $PEER_N tasks)"
                if (cd "$peers_dir" && BENCH_PORT=$port BENCH_REDIS="redis://127.0.0.1:$port" BENCH_RESULTS="$out/peers" \
                    "$venv/bin/python" bench.py "$mode" --runs "$PEER_RUNS" --n "$PEER_N" --lat "$PEER_LAT") \
                    > "$out/$mode.log" 2>&1; then
                    grep '^SUMMARY' "$out/$mode.log" | tee -a "$out/peers.summary"
                    ran_peers+=("$mode")
                else
                    echo "note: peer $mode failed (log: $out/$mode.log); skipped" >&2
                fi
            done
        fi
    fi
fi

echo
python3 - "$out" <<'PY'
import csv, json, sys, os
out = sys.argv[1]
def summary(path):
    for line in open(path):
        if line.startswith("SUMMARY "):
            yield json.loads(line[len("SUMMARY "):])
m = next(summary(os.path.join(out, "martelli.log")))
rows = [("martelli", m)]
p = os.path.join(out, "peers.summary")
if os.path.exists(p):
    rows += [(s["mode"], s) for s in summary(p)]
xadd = float(next(csv.reader(open(os.path.join(out, "xadd.csv"))))[1])
print(f"| system | tasks/s (median) | martelli ÷ system | round trip p50 ms | p99 ms |")
print(f"| --- | ---: | ---: | ---: | ---: |")
for name, s in rows:
    tps = s["median_tasks_per_s"]
    print(f"| {name} | {tps:,.0f} | {m['median_tasks_per_s'] / tps:.1f}× | "
          f"{s['median_latency_median_ms']:.3f} | {s['median_latency_p99_ms']:.3f} |")
print(f"\nredis-benchmark XADD (50 clients, unpipelined): {xadd:,.0f}/s; martelli reaches "
      f"{m['median_tasks_per_s'] / xadd:.1%} of it (each task costs one XADD plus the worker's and "
      f"the collector's commands).")
print(f"targets: >= 10,000 tasks/s: {'met' if m['median_tasks_per_s'] >= 10000 else 'MISSED'}; "
      f"p50 <= 0.5 ms: {'met' if m['median_latency_median_ms'] <= 0.5 else 'MISSED'}")
PY

# Workflows (docs/protocol.md, "Addition 5") beside Celery's chain and chord: 1,000 chains of 3
# no-op tasks, and 1 chord of 1,000 no-op members with a callback. WORKFLOWS=none skips them.
if [[ "${WORKFLOWS:-yes}" != none ]]; then
    echo
    echo "workflows (time until every result is recorded; medians of $PEER_RUNS runs):"
    for kind in chain chord; do
        "$TARGET_DIR/release/bench-cluster" --url "redis://127.0.0.1:$port" --workflow "$kind" \
            --runs "$PEER_RUNS" | grep '^SUMMARY'
        if [[ "$PEERS" != none && -x /tmp/celery-venv/bin/python ]]; then
            (cd scripts/peers && BENCH_PORT=$port /tmp/celery-venv/bin/python celery_workflows.py \
                "$kind" --runs "$PEER_RUNS") 2>&1 | grep '^SUMMARY' \
                || echo "note: Celery's $kind failed; skipped" >&2
        fi
    done
fi
