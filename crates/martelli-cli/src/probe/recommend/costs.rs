//! The rules of costs: the smallest task worth a worker, async memory, warm workers, task and
//! memory limits, large payloads, the codec, the foreground's priority, the cluster's overhead.

use super::*;

pub(super) fn process_task_min(i: Inputs<'_>) -> Option<Recommendation> {
    let trip = i.switch.process_pipe.median;
    let codec_us = i.ipc.codec.small_struct_round_trip.median / 1e3;
    let overhead = trip + 2.0 * codec_us;
    overhead.is_finite().then(|| {
        rec(
            "process_task_min",
            "floor",
            format!(
                "A task shorter than {} costs more to send to a process worker than to run \
                 (a pipe round trip of {} plus {} of {} encoding both ways): run it inline or on \
                 threads, or chunk it (`map` does). This is a floor: the process pool's own \
                 bookkeeping adds to it (its benchmarks measure the whole round trip).",
                Human(overhead, Unit::Micros),
                Human(trip, Unit::Micros),
                Human(2.0 * codec_us, Unit::Micros),
                i.ipc.codec.name,
            ),
            overhead,
            "us",
            &["switch.process_pipe", "ipc.codec.small_struct_round_trip"],
        )
    })
}

pub(super) fn thread_task_min(i: Inputs<'_>) -> Recommendation {
    let x = i.creation.pool_submit_wait.median;
    rec(
        "thread_task_min",
        "floor",
        format!(
            "A task shorter than {} costs more to hand to a martelli thread pool than to run: \
             batch small tasks (`map` chunks them) or run them inline.",
            Human(x, Unit::Micros)
        ),
        x,
        "us",
        &["creation.pool_submit_wait"],
    )
}

pub(super) fn async_memory(i: Inputs<'_>) -> Option<Recommendation> {
    let both: Vec<(u64, f64, f64, f64, f64)> = i
        .curves
        .io
        .points
        .iter()
        .filter_map(|p| {
            let (t, a) = (p.threads.as_ref()?, p.async_.as_ref()?);
            Some((
                p.concurrency,
                t.memory.median,
                a.memory.median,
                t.wall.median,
                a.wall.median,
            ))
        })
        .collect();
    let &(n_max, t_mem, a_mem, t_wall, a_wall) = both.last()?;
    let basis = ["curves.io"];
    let times = format!(
        "At {} waits of {} ms, threads took {} and async {}.",
        thousands(n_max),
        i.curves.io.wait_ms,
        Human(t_wall, Unit::Millis),
        Human(a_wall, Unit::Millis)
    );
    let threshold = both
        .iter()
        .find(|&&(_, t, a, _, _)| t >= MEMORY_RATIO * a && t - a >= MEMORY_MATTERS)
        .map(|&(n, ..)| n);
    match threshold {
        Some(n) if a_mem > 0.0 => {
            let ratio = t_mem / a_mem;
            Some(rec(
                "async_memory",
                &format!("async_from_{n}"),
                format!(
                    "From {} concurrent waits on, async costs {}× less memory than threads ({} vs \
                     {} per wait at {}): use async for many waits. {times}",
                    thousands(n),
                    sig3(ratio),
                    Bytes(a_mem / n_max as f64),
                    Bytes(t_mem / n_max as f64),
                    thousands(n_max),
                ),
                ratio,
                "x",
                &basis,
            ))
        }
        Some(n) => Some(rec(
            "async_memory",
            &format!("async_from_{n}"),
            format!(
                "From {} concurrent waits on, threads cost {} more memory than async, whose \
                 growth did not register at {} waits: use async for many waits. {times}",
                thousands(n),
                Bytes(t_mem),
                thousands(n_max)
            ),
            t_mem,
            "bytes",
            &basis,
        )),
        None => Some(rec(
            "async_memory",
            "by_code_style",
            format!(
                "Up to {} concurrent waits, threads cost less than {MEMORY_RATIO}× the memory \
                 of async (or under 1 MiB more): choose by code style. {times}",
                thousands(n_max)
            ),
            if a_mem > 0.0 { t_mem / a_mem } else { 1.0 },
            "x",
            &basis,
        )),
    }
}

pub(super) fn keep_workers_warm(i: Inputs<'_>) -> Option<Recommendation> {
    let c = i.creation;
    let (process, basis) = match (&c.process_posix_spawn, &c.process_fork_exec) {
        (Some(p), _) => (p.median, "creation.process_posix_spawn"),
        (None, Some(f)) => (f.median, "creation.process_fork_exec"),
        (None, None) => (
            c.process_reexec_ready.median,
            "creation.process_reexec_ready",
        ),
    };
    let thread = c.thread_spawn_join.median;
    let ratio = process / thread;
    ratio.is_finite().then(|| {
        rec(
            "keep_workers_warm",
            "keep_warm",
            format!(
                "Starting a process costs {} ({}× a thread's {}), and starting this binary as a \
                 worker {}: keep workers in a pool (martelli does) rather than start one per task.",
                Human(process, Unit::Micros),
                sig3(ratio),
                Human(thread, Unit::Micros),
                Human(c.process_reexec_ready.median, Unit::Micros),
            ),
            ratio,
            "x",
            &[
                basis,
                "creation.thread_spawn_join",
                "creation.process_reexec_ready",
            ],
        )
    })
}

pub(super) fn task_limit(i: Inputs<'_>) -> Option<Recommendation> {
    let (n, which) = i.machine.task_limit()?;
    Some(rec(
        "task_limit",
        "async_beyond_limit",
        format!(
            "At most {} threads and processes can exist at once here ({which}): more concurrent \
             waits than that need async, not one thread each.",
            thousands(n)
        ),
        n as f64,
        "tasks",
        &[
            "machine.rlimit_nproc",
            "machine.threads_max",
            "machine.cgroup_pids_max",
            "machine.pid_max",
        ],
    ))
}

pub(super) fn memory_workers(i: Inputs<'_>) -> Option<Recommendation> {
    let rss = i.memory.process_idle_rss.median;
    let usable = i.machine.usable_memory_bytes() as f64;
    if !(rss > 0.0 && usable > 0.0) {
        return None;
    }
    let k = (usable / rss).floor();
    let source = if i.machine.cgroup_memory_max_bytes.is_some() {
        "the cgroup limit"
    } else {
        "available now"
    };
    Some(rec(
        "memory_workers",
        "size_by_cores",
        format!(
            "Memory allows about {} idle worker processes of {} each ({} {source}); each \
             worker's own data comes on top, so size process pools by cores, not by memory, \
             unless tasks hold large data.",
            thousands(k as u64),
            Bytes(rss),
            Bytes(usable)
        ),
        k,
        "processes",
        &[
            "memory.process_idle_rss",
            "machine.cgroup_memory_max_bytes",
            "machine.memory_available_bytes",
        ],
    ))
}

/// The interval of a ratio `top / bottom` of two measured rows: end against end.
pub(super) fn ratio_interval(top: &Stat, bottom: &Stat) -> [f64; 2] {
    [top.ci_low / bottom.ci_high, top.ci_high / bottom.ci_low]
}

/// Where an interval lies against a threshold: wholly above it, wholly below, or across.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Above,
    Below,
    Across,
}

pub(super) fn side(interval: [f64; 2], threshold: f64) -> Side {
    if interval[0] >= threshold {
        Side::Above
    } else if interval[1] < threshold {
        Side::Below
    } else {
        Side::Across
    }
}

pub(super) fn large_payloads(i: Inputs<'_>) -> Option<Recommendation> {
    let (pipe, shm) = (&i.ipc.pipe_1mib, &i.ipc.shared_memory_1mib);
    let ratio = shm.median / pipe.median;
    if !ratio.is_finite() {
        return None;
    }
    let interval = ratio_interval(shm, pipe);
    let span = format!(
        "{}× [{}–{}]",
        sig3(ratio),
        sig3(interval[0]),
        sig3(interval[1])
    );
    let (verdict, text) = match side(interval, SHM_WORTH_IT) {
        Side::Above => (
            "shared_memory",
            format!(
                "For 1 MiB payloads, shared memory moves {}, {span} a pipe's {}: worth it for \
                 large arguments and results.",
                Human(shm.median, Unit::MibPerSec),
                Human(pipe.median, Unit::MibPerSec)
            ),
        ),
        Side::Below => (
            "pipe_is_enough",
            format!(
                "For 1 MiB payloads a pipe moves {} and shared memory {} ({span}): a pipe is \
                 enough here.",
                Human(pipe.median, Unit::MibPerSec),
                Human(shm.median, Unit::MibPerSec)
            ),
        ),
        Side::Across => (
            "undecided",
            format!(
                "For 1 MiB payloads shared memory moved {} and a pipe {} ({span}): the intervals \
                 do not say whether shared memory beats a pipe by the {SHM_WORTH_IT}× that makes \
                 it worth its complexity; a pipe is the simpler choice until a quieter run \
                 decides.",
                Human(shm.median, Unit::MibPerSec),
                Human(pipe.median, Unit::MibPerSec)
            ),
        ),
    };
    Some(rec(
        "large_payloads",
        verdict,
        text,
        ratio,
        "x",
        &["ipc.pipe_1mib", "ipc.shared_memory_1mib"],
    ))
}

pub(super) fn codec_bytes(i: Inputs<'_>) -> Option<Recommendation> {
    let c = &i.ipc.codec;
    let (bytes, seq) = (&c.buffer_1mib_as_bytes, &c.buffer_1mib_as_seq);
    let ratio = bytes.median / seq.median;
    let interval = ratio_interval(bytes, seq);
    (ratio.is_finite() && side(interval, SHM_WORTH_IT) == Side::Above).then(|| {
        rec(
            "codec_bytes",
            "mark_bytes",
            format!(
                "{} encodes and decodes a 1 MiB Vec<u8> at {} element by element, and at {} when \
                 it is marked as bytes (serde_bytes): {}× faster [{}–{}]. Mark large buffers as \
                 bytes.",
                c.name,
                Human(seq.median, Unit::MibPerSec),
                Human(bytes.median, Unit::MibPerSec),
                sig3(ratio),
                sig3(interval[0]),
                sig3(interval[1])
            ),
            ratio,
            "x",
            &[
                "ipc.codec.buffer_1mib_as_seq",
                "ipc.codec.buffer_1mib_as_bytes",
            ],
        )
    })
}

/// Whether background pools should run at a lower priority, from the foreground's wake-up latency.
pub(super) fn foreground_nice(i: Inputs<'_>) -> Option<Recommendation> {
    let f = i.foreground;
    let (idle, n0, n10) = (
        f.idle.as_ref()?,
        f.processes_nice_0.as_ref()?,
        f.processes_nice_10.as_ref()?,
    );
    let p99 =
        |s: &crate::probe::foreground::Scenario| Human(s.latency.p99, Unit::Micros).to_string();
    let n19 = f
        .processes_nice_19
        .as_ref()
        .map_or_else(|| "not measured".to_owned(), p99);
    let threads = f
        .threads
        .as_ref()
        .map_or_else(|| "not measured".to_owned(), p99);
    let cores = f.background_workers;
    let hurt = n0.latency.p99 >= HURTS * idle.latency.p99
        && n0.latency.p99 - idle.latency.p99 >= HURTS_BY_US;
    let ratio = n0.latency.p99 / n10.latency.p99.max(1e-3);
    let helps = ratio >= NICE_HELPS;
    let pool = format!("A process pool keeping all {cores} usable cores busy");
    let (verdict, text) = match (hurt, helps) {
        (true, true) => (
            "nice_helps",
            format!(
                "{pool} raised the foreground's wake-up latency (a thread sleeping 1 ms, p99) from \
                 {} idle to {} at nice 0 ({}× idle); at nice 10 it was {}, at nice 19 {n19}. \
                 Build background pools with `worker_nice(10)` so that interactive threads stay \
                 responsive. A thread pool at normal priority gave {threads}: CPU-bound work that \
                 must not disturb the foreground belongs on a niced process pool.",
                p99(idle),
                p99(n0),
                sig3(n0.p99_over_idle),
                p99(n10)
            ),
        ),
        (true, false) => (
            "nice_no_better",
            format!(
                "{pool} raised the foreground's wake-up latency (a thread sleeping 1 ms, p99) from \
                 {} idle to {} at nice 0, and a lower priority did not bring it down (nice 10: \
                 {}, nice 19: {n19}; a thread pool: {threads}): here the foreground waits for a \
                 core whatever the priority. Leave a core free: size background pools below the \
                 cores when the foreground must stay responsive.",
                p99(idle),
                p99(n0),
                p99(n10)
            ),
        ),
        (false, _) => (
            "nice_not_needed",
            format!(
                "{pool} at nice 0 kept the foreground's wake-up latency (a thread sleeping 1 ms, \
                 p99) within {HURTS}× of idle, or within {HURTS_BY_US} µs: {} against {} idle \
                 (nice 10: {}, nice 19: {n19}; a thread pool: {threads}). `worker_nice(10)` still protects it on a \
                 busier machine, at no cost to a pool that has the cores to itself.",
                p99(n0),
                p99(idle),
                p99(n10)
            ),
        ),
    };
    Some(rec(
        "foreground_nice",
        verdict,
        text,
        ratio,
        "x",
        &["foreground"],
    ))
}

/// When another machine pays off: from the cluster's cost per task, a worker's start, and this
/// machine's speedup at its cores.
pub(super) fn cluster(i: Inputs<'_>) -> Recommendation {
    let c = i.cluster;
    let m = i.machine;
    let cores = effective_cores(m.available_cores, m.cgroup_cpu_quota_cores);
    let speedup = i
        .curves
        .cpu
        .points
        .iter()
        .find(|p| p.workers == cores)
        .map(|p| {
            if p.processes_speedup.is_finite() {
                p.processes_speedup
            } else {
                p.threads_speedup
            }
        })
        .filter(|s| s.is_finite() && *s >= 1.0)
        .unwrap_or(1.0);
    let task_us = CLUSTER_TASK * c.per_task_us;
    let us = |v: f64| Human(v, Unit::Micros).to_string();
    let ms = |v: f64| Human(v, Unit::Millis).to_string();
    let lead = match m.tier.level {
        3 => format!(
            "This machine has {cores} usable cores (tier 3): past them, distributed processing. "
        ),
        _ => format!(
            "This machine is tier {}: the cluster is for work that outgrows it. ",
            m.tier.level
        ),
    };
    let job = match &c.worker_start {
        Some(start) => {
            let local_ms = CLUSTER_JOB * start.median;
            format!(
                " And for jobs of more than {} of one core's work ({} on this machine's {cores} \
                 workers at its {speedup:.2}× speedup): below that, a worker's start ({}) costs \
                 more than a second machine of this kind saves.",
                ms(local_ms * speedup),
                ms(local_ms),
                ms(start.median)
            )
        }
        None => " A worker's start, not measured without a broker here, sets the smallest job \
                  worth it: a second machine of this kind saves less than half of a job's time \
                  here, so the job must last well over twice that start."
            .to_owned(),
    };
    let source = if c.source == "measured" {
        "Measured against a private redis-server on this machine: client, broker and worker \
         shared its cores, and a network adds its round trip."
            .to_owned()
    } else {
        format!("{}.", c.note)
    };
    rec(
        "cluster",
        "threshold",
        format!(
            "{lead}Another machine pays off for tasks of at least {} each: the cluster's cost per \
             task, {} with many in flight, is then under 10 % (one task at a time, a round trip \
             costs {}: tasks of {} or more).{job} {source}",
            us(task_us),
            us(c.per_task_us),
            us(c.round_trip_us),
            us(CLUSTER_TASK * c.round_trip_us)
        ),
        task_us,
        "us",
        &["cluster", "curves.cpu"],
    )
}
