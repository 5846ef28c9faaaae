#!/usr/bin/env python3
"""`martelli probe` side by side with the Python standard library's answers to the same questions.

Runs, in one go on one machine:
  * `martelli probe --quick --json` and `martelli probe --json` (timed: targets < 5 s and < 60 s);
  * the Python peers bench_spawn_cost.py and bench_async_vs_threads.py;
and prints a Markdown table with the ratios (Python / martelli: above 1 means martelli's figure is
smaller, i.e. cheaper).

Usage (from the repository root, after `cargo build --release -p martelli-cli`):
    python3 crates/martelli-cli/benches/probe_vs_python.py [--martelli PATH] [--peers DIR]
The peers directory defaults to ../shared/peers/python (or the PEERS environment variable).
"""
import argparse, json, os, platform, subprocess, sys, time


def run_json(cmd, env=None, last_line=False):
    """Runs cmd; returns its JSON output (the whole of stdout, or its last line) and its wall time."""
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr}")
    text = out.stdout.strip().splitlines()[-1] if last_line else out.stdout
    return json.loads(text), wall


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fmt_us(us):
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.1f} µs"


def fmt_bytes(b):
    return f"{b / 1024:.1f} KiB" if b >= 1024 else f"{b:.0f} B"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--martelli", default="target/release/martelli")
    ap.add_argument("--peers", default=os.environ.get("PEERS", "../shared/peers/python"))
    args = ap.parse_args()
    py = sys.executable
    load_before = os.getloadavg()

    quick, quick_wall = run_json([args.martelli, "probe", "--quick", "--json"])
    full, full_wall = run_json([args.martelli, "probe", "--json"])
    env = dict(os.environ, REPS="5")
    spawn, _ = run_json([py, os.path.join(args.peers, "bench_spawn_cost.py")], env, last_line=True)
    env = dict(os.environ, REPS="3")
    aio, _ = run_json([py, os.path.join(args.peers, "bench_async_vs_threads.py")], env, last_line=True)

    c, m = full["creation"], full["memory"]
    io = {p["concurrency"]: p for p in full["curves"]["io"]["points"]}
    rows = []

    def row(what, ours, ours_s, theirs, theirs_s, peer):
        rows.append((what, ours_s, theirs_s, peer, theirs / ours))

    row("thread start + join", c["thread_spawn_join"]["median"], fmt_us(c["thread_spawn_join"]["median"]),
        spawn["thread_start_join_us"]["median"], fmt_us(spawn["thread_start_join_us"]["median"]),
        "threading.Thread start+join")
    for method in ("fork", "spawn"):
        key = f"process_{method}_start_join_us"
        row(f"process start + wait (martelli: posix_spawn /bin/true)", c["process_posix_spawn"]["median"],
            fmt_us(c["process_posix_spawn"]["median"]), spawn[key]["median"], fmt_us(spawn[key]["median"]),
            f"multiprocessing {method} Process start+join")
    row("a fresh interpreter / binary to its first reply", c["process_reexec_ready"]["median"],
        fmt_us(c["process_reexec_ready"]["median"]), spawn["subprocess_python_c_pass_us"]["median"],
        fmt_us(spawn["subprocess_python_c_pass_us"]["median"]), "subprocess `python3 -c pass`")
    ours = m["async_task_suspended"]["median"]
    theirs = aio["asyncio_tasks"]["kib_per_task_median"] * 1024
    row("memory per suspended async task (tokio)", ours, fmt_bytes(ours), theirs, fmt_bytes(theirs),
        f"asyncio task ({aio['n_async_tasks']} tasks, peak RSS)")
    ours = m["event_loop_task_suspended"]["median"]
    row("memory per suspended task on martelli's event loop", ours, fmt_bytes(ours), theirs,
        fmt_bytes(theirs), f"asyncio task ({aio['n_async_tasks']} tasks, peak RSS)")
    ours = m["thread_idle_rss"]["median"]
    theirs = aio["threads"]["kib_per_thread_median"] * 1024
    row("memory per waiting thread", ours, fmt_bytes(ours), theirs, fmt_bytes(theirs),
        f"threading.Thread ({aio['n_threads']} threads, peak RSS)")
    if 1000 in io and io[1000]["threads"]:
        ours = io[1000]["threads"]["wall"]["median"]
        theirs = aio["threads"]["wall_s"]["median"] * 1e3
        row("1000 concurrent 10 ms waits on threads (wall)", ours, f"{ours:.1f} ms", theirs,
            f"{theirs:.1f} ms", "1000 threading.Thread sleeping 10 ms")

    print(f"Machine: {os.cpu_count()} cores ({full['machine']['available_cores']} usable), {cpu_model()}; "
          f"Python {spawn['python']}; martelli {full['martelli_version']}")
    print(f"Load average (1, 5, 15 min): {load_before[0]:.1f} {load_before[1]:.1f} {load_before[2]:.1f} before, "
          f"{os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f} after")
    print(f"Probe wall time: --quick {quick_wall:.2f} s (target < 5 s), full {full_wall:.2f} s (target < 60 s)\n")
    print("| quantity | martelli probe | Python peer | peer measures | Python / martelli |")
    print("| --- | ---: | ---: | --- | ---: |")
    for what, ours_s, theirs_s, peer, ratio in rows:
        print(f"| {what} | {ours_s} | {theirs_s} | {peer} | {ratio:.1f}× |")


if __name__ == "__main__":
    main()
