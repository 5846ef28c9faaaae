#!/usr/bin/env python3
"""Celery doing what `bench-cluster --workflow` and `--rate` measure for martelli (BENCHMARKS.md,
"Cluster: workflows"): the Celery peer of ../shared/peers/distributed/ (same settings: Redis broker
db 0, results db 1, JSON, prefork --concurrency=2), with chains, chords and a rate limit.

    python celery_workflows.py chain --runs 3 --chains 1000    # 1,000 chains of 3 no-op tasks
    python celery_workflows.py chord --runs 3 --members 1000   # 1 chord of 1,000 + a callback
    python celery_workflows.py rate --limit 100 --seconds 10   # a task with rate_limit="100/s"

Each run: FLUSHALL, start the worker, warm up, then time from the first submission until every
chain's (the chord's) result is in. Prints one JSON line per run and a SUMMARY line. Celery's
rate_limit is a token bucket in each worker process's consumer (not shared between workers): the
rate mode starts the workers `--workers` times (default 2) to show what that gives.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

# The Celery app module is written to a directory of its own (workers import it by name).
HERE = tempfile.mkdtemp(prefix="martelli-celery-wf-")
PORT = int(os.environ.get("BENCH_PORT", "6390"))
REDIS = f"redis://127.0.0.1:{PORT}"
os.environ.setdefault("BENCH_REDIS", REDIS)
VENV_BIN = os.path.dirname(sys.executable)

APP = r'''
import os
from celery import Celery
REDIS = os.environ["BENCH_REDIS"]
app = Celery("wf", broker=f"{REDIS}/0", backend=f"{REDIS}/1")
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)

@app.task(name="wf.noop")
def noop(*args):
    return None

@app.task(name="wf.collect")
def collect(results):
    return len(results)

@app.task(name="wf.limited", rate_limit=os.environ.get("BENCH_RATE", "100") + "/s")
def limited():
    return None
'''


def start_workers(k):
    env = dict(os.environ)
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    procs = []
    for _ in range(k):
        procs.append(subprocess.Popen(
            [os.path.join(VENV_BIN, "celery"), "-A", "celery_workflows_app", "worker",
             "--pool=prefork", "--concurrency=2", "--loglevel=WARNING",
             "-n", f"wf-{uuid.uuid4().hex[:6]}@%h"],
            cwd=HERE, env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def stop(procs):
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["chain", "chord", "rate"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--chains", type=int, default=1000)
    ap.add_argument("--members", type=int, default=1000)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    with open(os.path.join(HERE, "celery_workflows_app.py"), "w") as fh:
        fh.write(APP)
    os.environ["BENCH_RATE"] = str(a.limit)
    sys.path.insert(0, HERE)
    import redis
    from celery import chain, chord
    from celery_workflows_app import collect, limited, noop
    admin = redis.Redis.from_url(REDIS)
    runs = []
    for i in range(1 if a.mode == "rate" else a.runs):
        admin.flushall()
        load = os.getloadavg()
        procs = start_workers(a.workers if a.mode == "rate" else 1)
        try:
            for _ in range(20):
                noop.delay().get(timeout=120)
            if a.mode == "rate":
                n = a.limit * (a.seconds + 5)
                results = [limited.delay() for _ in range(n)]
                first, counted = None, 0
                for r in results:
                    r.get(timeout=600)
                    now = time.perf_counter()
                    first = first or now
                    if now - first > a.seconds:
                        break
                    counted += 1
                observed = (counted - 1) / a.seconds
                print("SUMMARY", json.dumps({
                    "mode": "celery-rate", "limit_per_s": a.limit, "seconds": a.seconds,
                    "worker_instances": a.workers, "observed_per_s": observed,
                    "loadavg_at_start": load}), flush=True)
                return
            t0 = time.perf_counter()
            if a.mode == "chain":
                results = [chain(noop.s(), noop.s(), noop.s()).apply_async()
                           for _ in range(a.chains)]
                for r in results:
                    r.get(timeout=600)
            else:
                r = chord(noop.s() for _ in range(a.members))(collect.s())
                assert r.get(timeout=600) == a.members
            s = time.perf_counter() - t0
        finally:
            stop(procs)
        run = {"run": i + 1, "workflow": a.mode, "seconds": s, "loadavg_at_start": load}
        runs.append(run)
        print(json.dumps(run), flush=True)
        time.sleep(1)
    med = statistics.median(r["seconds"] for r in runs)
    tasks = a.chains * 3 if a.mode == "chain" else a.members + 1
    what = f"{a.chains} chains of 3" if a.mode == "chain" else f"1 chord of {a.members} + callback"
    print("SUMMARY", json.dumps({"mode": f"celery-{a.mode}", "what": what, "runs": a.runs,
                                 "median_s": med, "tasks_per_s": tasks / med}), flush=True)


if __name__ == "__main__":
    main()
