//! One function per section of the table, in the order they are shown.

use super::*;

pub(super) fn machine(t: &mut String, r: &Report) {
    let m = &r.machine;
    section(t, "THE MACHINE");
    fact(t, "cpu", m.cpu_model.as_deref().unwrap_or("unknown"));
    fact(t, "kernel", &m.kernel);
    fact(
        t,
        "cores",
        &format!(
            "{} logical · {} physical · {} usable by this process",
            m.logical_cores,
            m.physical_cores
                .map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
            m.available_cores
        ),
    );
    fact(
        t,
        "memory",
        &format!(
            "{} total · {} available",
            Bytes(m.memory_total_bytes as f64),
            Bytes(m.memory_available_bytes as f64)
        ),
    );
    let cgroup = match m.cgroup_version {
        Some(v) => format!("cgroup v{v}"),
        None => "cgroup".to_owned(),
    };
    fact(
        t,
        &cgroup,
        &format!(
            "cpu quota {} · memory limit {} · pids limit {}",
            m.cgroup_cpu_quota_cores
                .map_or_else(|| "none".to_owned(), |q| format!("{q:.2} cores")),
            m.cgroup_memory_max_bytes
                .map_or_else(|| "none".to_owned(), |b| Bytes(b as f64).to_string()),
            limit(m.cgroup_pids_max)
        ),
    );
    fact(
        t,
        "load",
        &format!(
            "{:.2} · {:.2} · {:.2} (1, 5, 15 min averages when the probe started)",
            m.load_average[0], m.load_average[1], m.load_average[2]
        ),
    );
    for (label, moment) in [
        ("before the probe", &r.noise.before),
        ("after it", &r.noise.after),
    ] {
        let w = &moment.window;
        fact(
            t,
            label,
            &format!(
                "other programs {:.0} % of the CPUs · run queue {:.1} · steal {:.0} % · load {:.2}",
                100.0 * w.other_cpu,
                w.run_queue,
                100.0 * w.steal,
                moment.load_average[0]
            ),
        );
    }
    fact(
        t,
        "limits",
        &format!(
            "RLIMIT_NPROC {} · threads-max {} · pid_max {}",
            limit(m.rlimit_nproc),
            limit(m.threads_max),
            limit(m.pid_max)
        ),
    );
    let mut tier = String::new();
    wrap(
        &mut tier,
        &format!("{} ({}): {}", m.tier.level, m.tier.name, m.tier.advice),
        &format!("  {:<18} ", "tier"),
        &" ".repeat(21),
    );
    t.push_str(&tier);
}

pub(super) fn creation(t: &mut String, r: &Report) {
    let c = &r.creation;
    section(t, "CREATION (per unit)");
    row(
        t,
        r,
        "creation.thread_spawn_join",
        "thread: spawn + join",
        &c.thread_spawn_join,
    );
    row(
        t,
        r,
        "creation.pool_start_shutdown",
        "martelli thread pool (1): start + shut down",
        &c.pool_start_shutdown,
    );
    row(
        t,
        r,
        "creation.pool_submit_wait",
        "martelli thread pool: submit → wait",
        &c.pool_submit_wait,
    );
    opt_row(
        t,
        r,
        "creation.process_fork_exec",
        "process: fork + exec /bin/true, wait",
        c.process_fork_exec.as_ref(),
    );
    opt_row(
        t,
        r,
        "creation.process_posix_spawn",
        "process: posix_spawn /bin/true, wait",
        c.process_posix_spawn.as_ref(),
    );
    row(
        t,
        r,
        "creation.process_reexec_ready",
        "process: this binary, start → first reply",
        &c.process_reexec_ready,
    );
    match &c.process_worker_handshake {
        Some(s) => row(
            t,
            r,
            "creation.process_worker_handshake",
            "martelli process worker: spawn → handshake",
            s,
        ),
        None => absent(
            t,
            "martelli process worker: spawn → handshake",
            r.notes
                .get("creation.process_worker_handshake")
                .unwrap_or(NO_PROCESS_BACKEND),
        ),
    }
    row(
        t,
        r,
        "creation.async_spawn_complete",
        "async task (tokio, 1 thread): spawn → done",
        &c.async_spawn_complete,
    );
    row(
        t,
        r,
        "creation.event_loop_spawn_wait",
        "martelli event loop: spawn → wait",
        &c.event_loop_spawn_wait,
    );
}

pub(super) fn switch(t: &mut String, r: &Report) {
    let s = &r.switch;
    section(t, "SWITCH (one round trip: A wakes B, B wakes A)");
    row(
        t,
        r,
        "switch.thread_condvar",
        "threads: mutex + condvar (futex)",
        &s.thread_condvar,
    );
    row(
        t,
        r,
        "switch.process_pipe",
        "processes: a byte each way through pipes",
        &s.process_pipe,
    );
    row(
        t,
        r,
        "switch.async_one_thread",
        "async tasks on one thread: channels",
        &s.async_one_thread,
    );
}

pub(super) fn memory(t: &mut String, r: &Report) {
    let m = &r.memory;
    section(t, "MEMORY (resident, per idle unit)");
    row(
        t,
        r,
        "memory.thread_idle_rss",
        &format!(
            "thread, parked ({} of them)",
            thousands(m.threads_per_sample)
        ),
        &m.thread_idle_rss,
    );
    row(
        t,
        r,
        "memory.process_idle_rss",
        "process of this binary, idle",
        &m.process_idle_rss,
    );
    row(
        t,
        r,
        "memory.async_task_suspended",
        &format!(
            "async task, suspended ({} parked)",
            thousands(m.tasks_per_sample)
        ),
        &m.async_task_suspended,
    );
    row(
        t,
        r,
        "memory.event_loop_task_suspended",
        "martelli event-loop task, suspended",
        &m.event_loop_task_suspended,
    );
}

pub(super) fn ipc(t: &mut String, r: &Report) {
    let i = &r.ipc;
    section(
        t,
        "IPC (to another process: one message, then a 1-byte ack)",
    );
    for (path, label, stat) in [
        ("ipc.pipe_1kib", "pipe, 1 KiB messages", &i.pipe_1kib),
        ("ipc.pipe_1mib", "pipe, 1 MiB messages", &i.pipe_1mib),
        (
            "ipc.unix_socket_1kib",
            "Unix socket, 1 KiB messages",
            &i.unix_socket_1kib,
        ),
        (
            "ipc.unix_socket_1mib",
            "Unix socket, 1 MiB messages",
            &i.unix_socket_1mib,
        ),
        (
            "ipc.shared_memory_1kib",
            "shared memory + doorbell, 1 KiB",
            &i.shared_memory_1kib,
        ),
        (
            "ipc.shared_memory_1mib",
            "shared memory + doorbell, 1 MiB",
            &i.shared_memory_1mib,
        ),
    ] {
        row(t, r, path, label, stat);
    }
    let c = &i.codec;
    row(
        t,
        r,
        "ipc.codec.small_struct_round_trip",
        &format!(
            "{}: small task ({} B), encode + decode",
            c.name, c.small_struct_bytes
        ),
        &c.small_struct_round_trip,
    );
    row(
        t,
        r,
        "ipc.codec.buffer_1mib_as_bytes",
        &format!("{}: 1 MiB as bytes, encode + decode", c.name),
        &c.buffer_1mib_as_bytes,
    );
    row(
        t,
        r,
        "ipc.codec.buffer_1mib_as_seq",
        &format!("{}: 1 MiB Vec<u8> as a sequence", c.name),
        &c.buffer_1mib_as_seq,
    );
}

pub(super) fn cpu_curve(t: &mut String, r: &Report) {
    let c = &r.curves.cpu;
    section(
        t,
        "CPU-BOUND JOB (a fixed amount of work split evenly over the workers; wall time)",
    );
    let _ = writeln!(
        t,
        "  {:>7}   {:>9} {:>22}    {:>9} {:>22}",
        "workers", "threads", "speedup [interval]", "processes", "speedup [interval]"
    );
    let side = |path: String, stat: &Stat, speedup: f64, ci: [f64; 2]| {
        format!(
            "{:>9} {:>22}{:<3}",
            Human(stat.median, stat.unit).to_string(),
            format!("{speedup:.2}× [{:.2}–{:.2}]", ci[0], ci[1]),
            marks(r, &path, stat)
        )
    };
    for p in &c.points {
        let point = format!("curves.cpu.points[workers={}]", p.workers);
        let _ = writeln!(
            t,
            "  {:>7}   {} {}",
            p.workers,
            side(
                format!("{point}.threads"),
                &p.threads,
                p.threads_speedup,
                p.threads_speedup_ci
            ),
            side(
                format!("{point}.processes"),
                &p.processes,
                p.processes_speedup,
                p.processes_speedup_ci
            ),
        );
    }
}

pub(super) fn io_curve(t: &mut String, r: &Report) {
    let c = &r.curves.io;
    section(
        t,
        &format!(
            "I/O-BOUND JOB (concurrent {} ms waits; threads: a pool thread each; async: tokio \
             tasks, 1 thread)",
            c.wait_ms
        ),
    );
    let _ = writeln!(
        t,
        "  {:>7}   {:>10} {:>10} {:>10}   {:>10} {:>10} {:>10}",
        "waits", "threads", "memory", "per wait", "async", "memory", "per wait"
    );
    let side = |s: Option<&IoSide>, n: u64, kind: &str| match s {
        Some(s) => {
            let path = format!("curves.io.points[concurrency={n}].{kind}");
            let mut m = marks(r, &format!("{path}.wall"), &s.wall);
            for c in marks(r, &format!("{path}.memory"), &s.memory).chars() {
                if !m.contains(c) {
                    m.push(c);
                }
            }
            format!(
                "{:>10} {:>10} {:>10}{m:<3}",
                Human(s.wall.median, s.wall.unit).to_string(),
                Bytes(s.memory.median).to_string(),
                Bytes(s.memory.median / n as f64).to_string()
            )
        }
        None => format!("{:>32}   ", "not measured"),
    };
    for (i, p) in c.points.iter().enumerate() {
        let _ = writeln!(
            t,
            "  {:>7}   {}{}",
            thousands(p.concurrency),
            side(p.threads.as_ref(), p.concurrency, "threads"),
            side(p.async_.as_ref(), p.concurrency, "async")
        );
        for kind in ["threads", "async"] {
            if let Some(why) = r.notes.get(&format!("curves.io.points[{i}].{kind}")) {
                wrap(
                    t,
                    &format!("{kind} at {}: {why}", thousands(p.concurrency)),
                    "          ",
                    "          ",
                );
            }
        }
    }
}

pub(super) fn foreground(t: &mut String, r: &Report) {
    let f = &r.foreground;
    section(
        t,
        &format!(
            "FOREGROUND (a thread sleeping 1 ms: how late it wakes; background pools of {} workers)",
            f.background_workers
        ),
    );
    let _ = writeln!(
        t,
        "  {:<34} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "background", "p50", "p99", "max", "p99/idle", "sleeps"
    );
    for (key, label, s) in [
        ("idle", "none (idle)", &f.idle),
        (
            "processes_nice_0",
            "process pool, nice 0",
            &f.processes_nice_0,
        ),
        (
            "processes_nice_10",
            "process pool, nice 10",
            &f.processes_nice_10,
        ),
        (
            "processes_nice_19",
            "process pool, nice 19",
            &f.processes_nice_19,
        ),
        ("threads", "thread pool, normal priority", &f.threads),
    ] {
        let path = format!("foreground.{key}");
        match s {
            Some(s) => {
                let l = &s.latency;
                let busy = if r.noise.busy_rows.contains(&path) {
                    "!"
                } else {
                    ""
                };
                let _ = writeln!(
                    t,
                    "  {label:<34} {:>10} {:>10} {:>10} {:>9.1}× {:>9}{busy}",
                    Human(l.p50, l.unit).to_string(),
                    Human(l.p99, l.unit).to_string(),
                    Human(l.max, l.unit).to_string(),
                    s.p99_over_idle,
                    thousands(l.samples)
                );
            }
            None => absent(t, label, r.notes.get(&path).unwrap_or("not measured")),
        }
    }
}

pub(super) fn cluster(t: &mut String, r: &Report) {
    let c = &r.cluster;
    match &c.broker {
        Some(broker) => section(t, &format!("CLUSTER (no-op tasks through {broker})")),
        None => section(t, "CLUSTER (published figures)"),
    }
    for (path, label, stat) in [
        (
            "cluster.round_trip",
            "a task's round trip, one at a time",
            &c.round_trip,
        ),
        ("cluster.per_task", "per task, many in flight", &c.per_task),
        (
            "cluster.worker_start",
            "a worker's start, to the first result",
            &c.worker_start,
        ),
    ] {
        if let Some(s) = stat {
            row(t, r, path, label, s);
        }
    }
    if c.round_trip.is_none() {
        fact(
            t,
            "published",
            &format!(
                "a round trip {} · {} per task with many in flight",
                Human(c.round_trip_us, Unit::Micros),
                Human(c.per_task_us, Unit::Micros)
            ),
        );
    }
    wrap(t, &c.note, "  ", "  ");
}
