//! The report as a table for people: one section per question, one row per measurement, the
//! recommendations last.

use super::create::NO_PROCESS_BACKEND;
use super::curves::IoSide;
use super::recommend::within;
use super::schema::{Mode, Report};
use super::stats::{Bytes, Human, Stat, Unit, thousands};
use super::warnings::OUTLIERS;
use std::fmt::Write;

const LABEL: usize = 46;
const WIDTH: usize = 100;

/// Renders the whole report.
pub(crate) fn render(r: &Report) -> String {
    let mut t = String::new();
    let mode = match r.mode {
        Mode::Quick => "quick",
        Mode::Full => "full",
    };
    let _ = writeln!(
        t,
        "martelli probe {} ({mode}, {:.1} s)",
        r.martelli_version, r.duration_s
    );
    wrap(
        &mut t,
        &format!(
            "Each row: the median, its 95 % interval [low – high] and the runs it took (n): {}–{} \
             after {} warm-up{}, until the interval is within ±10 % of the median or {} s have \
             passed (memory rows and the I/O job: a fresh process per run). Marks: ? low \
             confidence (a wider interval), ! other programs used the CPUs meanwhile, ~ {OUTLIERS} \
             or more outliers.",
            r.reps,
            r.max_reps,
            r.warmup,
            if r.warmup == 1 { "" } else { "s" },
            r.row_budget_s,
        ),
        "",
        "",
    );
    machine(&mut t, r);
    creation(&mut t, r);
    switch(&mut t, r);
    memory(&mut t, r);
    ipc(&mut t, r);
    cpu_curve(&mut t, r);
    io_curve(&mut t, r);
    foreground(&mut t, r);
    cluster(&mut t, r);
    if !r.warnings.is_empty() {
        section(&mut t, "WARNINGS");
        for w in &r.warnings {
            wrap(&mut t, &w.text, "  ! ", "    ");
        }
    }
    section(&mut t, "RECOMMENDATIONS");
    for rec in &r.recommendations {
        wrap(&mut t, &rec.text, "  • ", "    ");
    }
    t.push('\n');
    wrap(
        &mut t,
        "More: --json for the whole report, --plot FILE.svg for the curves, --compare FILE.json to \
         set two runs side by side; docs/probe.md explains every row.",
        "",
        "",
    );
    t
}

fn section(t: &mut String, title: &str) {
    let _ = writeln!(t, "\n{title}");
}

fn fact(t: &mut String, label: &str, value: &str) {
    let _ = writeln!(t, "  {label:<18} {value}");
}

/// The marks of a row: `?` low confidence, `!` measured while busy, `~` outliers.
fn marks(r: &Report, path: &str, stat: &Stat) -> String {
    let mut m = String::new();
    if stat.low_confidence {
        m.push('?');
    }
    if r.noise.busy_rows.iter().any(|b| within(path, b)) {
        m.push('!');
    }
    if stat.outliers >= OUTLIERS {
        m.push('~');
    }
    m
}

/// `[1.20 µs – 1.31 µs]`, the interval of a stat.
fn interval(stat: &Stat) -> String {
    format!(
        "[{} – {}]",
        Human(stat.ci_low, stat.unit),
        Human(stat.ci_high, stat.unit)
    )
}

fn row(t: &mut String, r: &Report, path: &str, label: &str, stat: &Stat) {
    let _ = writeln!(
        t,
        "  {label:<LABEL$} {:>10}  {:<25} n={:<3}{}",
        Human(stat.median, stat.unit).to_string(),
        interval(stat),
        stat.reps,
        marks(r, path, stat)
    );
}

fn absent(t: &mut String, label: &str, why: &str) {
    let mut line = String::new();
    wrap(
        &mut line,
        why,
        &format!("  {label:<LABEL$} "),
        &" ".repeat(LABEL + 3),
    );
    t.push_str(&line);
}

fn opt_row(t: &mut String, r: &Report, path: &str, label: &str, stat: Option<&Stat>) {
    match stat {
        Some(s) => row(t, r, path, label, s),
        None => absent(t, label, r.notes.get(path).unwrap_or("not available")),
    }
}

fn limit(v: Option<u64>) -> String {
    v.map_or_else(|| "none".to_owned(), thousands)
}

fn machine(t: &mut String, r: &Report) {
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

fn creation(t: &mut String, r: &Report) {
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

fn switch(t: &mut String, r: &Report) {
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

fn memory(t: &mut String, r: &Report) {
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

fn ipc(t: &mut String, r: &Report) {
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

fn cpu_curve(t: &mut String, r: &Report) {
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

fn io_curve(t: &mut String, r: &Report) {
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

fn foreground(t: &mut String, r: &Report) {
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

fn cluster(t: &mut String, r: &Report) {
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

/// Appends `text` wrapped at [`WIDTH`] columns, the first line after `first`, the rest after `rest`.
pub(crate) fn wrap(t: &mut String, text: &str, first: &str, rest: &str) {
    let mut line = first.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > WIDTH {
            t.push_str(&line);
            t.push('\n');
            line = rest.to_owned();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    t.push_str(&line);
    t.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::recommend::{derive, tests::synthetic};
    use crate::probe::schema::{Notes, SCHEMA};

    fn report() -> Report {
        let s = synthetic();
        let recommendations = derive(s.inputs());
        Report {
            schema: SCHEMA.to_owned(),
            martelli_version: "0.0.0".into(),
            mode: Mode::Quick,
            started_unix_s: 1_800_000_000,
            duration_s: 2.5,
            warmup: 1,
            reps: 6,
            max_reps: 15,
            row_budget_s: 0.25,
            machine: s.machine,
            creation: s.creation,
            switch: s.switch,
            memory: s.memory,
            ipc: s.ipc,
            curves: s.curves,
            foreground: s.foreground,
            cluster: s.cluster,
            noise: s.noise,
            warnings: Vec::new(),
            recommendations,
            notes: Notes::default(),
        }
    }

    #[test]
    fn absent_rows_show_their_reason() {
        let mut r = report();
        r.creation.process_fork_exec = None;
        r.notes.insert(
            "creation.process_fork_exec",
            "not available: no /bin/true".into(),
        );
        r.curves.io.points[2].threads = None;
        r.notes.insert(
            "curves.io.points[2].threads",
            "not available: 1000 threads would exceed RLIMIT_NPROC (900)".into(),
        );
        let t = render(&r);
        let line = |needle: &str| {
            t.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no {needle:?} in:\n{t}"))
        };
        assert!(line("fork + exec").ends_with("not available: no /bin/true"));
        assert!(line("spawn → handshake").ends_with(NO_PROCESS_BACKEND));
        assert!(line("   1,000   ").contains("not measured"));
        assert!(t.contains("threads at 1,000: not available: 1000 threads would exceed"));
    }

    #[test]
    fn every_section_and_recommendation_is_rendered() {
        let r = report();
        let t = render(&r);
        for section in [
            "THE MACHINE",
            "CREATION",
            "SWITCH",
            "MEMORY",
            "IPC",
            "CPU-BOUND JOB",
            "I/O-BOUND JOB",
            "FOREGROUND",
            "CLUSTER",
            "RECOMMENDATIONS",
        ] {
            assert!(t.contains(section), "no {section}");
        }
        assert!(t.contains("process pool, nice 10"), "{t}");
        assert_eq!(t.matches("\n  • ").count(), r.recommendations.len());
        assert!(t.contains("Synthetic CPU"));
        assert!(t.contains("tier               2 (2–8 cores)"));
        // A header line, then one row per point: 8 CPU points, 3 I/O points.
        let rows = |title: &str| {
            t.lines()
                .skip_while(|l| !l.starts_with(title))
                .skip(2)
                .take_while(|l| !l.is_empty())
                .count()
        };
        assert_eq!(rows("CPU-BOUND JOB"), 8);
        assert_eq!(rows("I/O-BOUND JOB"), 3);
        for line in t.lines() {
            assert!(line.chars().count() <= WIDTH, "too wide: {line}");
        }
    }

    #[test]
    fn wrap_keeps_words_whole_and_indents() {
        let mut t = String::new();
        let text = "word ".repeat(40);
        wrap(&mut t, &text, "  • ", "    ");
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines.len() > 1);
        assert!(lines[0].starts_with("  • word"));
        assert!(lines[1..].iter().all(|l| l.starts_with("    word")));
        assert!(lines.iter().all(|l| l.chars().count() <= WIDTH));
        assert_eq!(t.split_whitespace().filter(|w| *w == "word").count(), 40);
    }
}
