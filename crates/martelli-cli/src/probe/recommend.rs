//! Recommendations in numbers, derived from the measurements.
//!
//! Each rule reads a few measured values (its `basis`, paths into the report), computes one number,
//! and says what it means for the choice of backend. The rules, with their formulas, are listed in
//! `docs/probe.md`; each is unit-tested here on synthetic measurements.
//!
//! Rules decide on intervals, not on medians alone: a choice changes only when the intervals of the
//! values it compares are apart, so that noise cannot flip it from one run to the next. Each
//! recommendation has a `verdict`, the decision in a stable word, and lists the rows of its basis
//! that were low-confidence or measured while other work ran; its text then says so.

use super::busy::Noise;
use super::cluster::ClusterCost;
use super::create::Creation;
use super::curves::Curves;
use super::curves::speedup_interval;
use super::foreground::Foreground;
use super::ipc::Ipc;
use super::machine::{Machine, effective_cores};
use super::memory::Memory;
use super::stats::Stat;
use super::stats::{Bytes, Human, Unit, sig3, thousands};
use super::switch::Switch;
use serde::{Deserialize, Serialize};

/// One recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Recommendation {
    /// A stable identifier of the rule (`tier`, `process_task_min`, …).
    pub(crate) id: String,
    /// The recommendation, for a person.
    pub(crate) text: String,
    /// The number it rests on.
    pub(crate) value: f64,
    /// The number's unit (`workers`, `us`, `x`, `tasks`, `processes`).
    pub(crate) unit: String,
    /// The report fields the number was derived from.
    pub(crate) basis: Vec<String>,
    /// The decision in a stable word (`processes_up_to_2`, `pipe_is_enough`, `undecided` …):
    /// runs that agree have the same verdicts, whatever their numbers.
    pub(crate) verdict: String,
    /// Rows of the basis whose interval was wide.
    pub(crate) low_confidence_basis: Vec<String>,
    /// Rows of the basis measured while other work used the CPUs.
    pub(crate) busy_basis: Vec<String>,
}

/// The measurements the rules read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inputs<'a> {
    pub(crate) machine: &'a Machine,
    pub(crate) creation: &'a Creation,
    pub(crate) switch: &'a Switch,
    pub(crate) memory: &'a Memory,
    pub(crate) ipc: &'a Ipc,
    pub(crate) curves: &'a Curves,
    pub(crate) foreground: &'a Foreground,
    pub(crate) cluster: &'a ClusterCost,
    pub(crate) noise: &'a Noise,
}

/// A best speedup below this fraction of the usable cores means other work competed for them.
const CONTENDED: f64 = 0.6;
/// Threads "cost more memory" than async from this ratio on…
const MEMORY_RATIO: f64 = 2.0;
/// …when the difference is also at least this many bytes.
const MEMORY_MATTERS: f64 = 1024.0 * 1024.0;
/// Shared memory is "worth it" from this throughput ratio over a pipe.
const SHM_WORTH_IT: f64 = 1.5;
/// A background pool hurts the foreground when its p99 wake-up latency is this many times the
/// idle one's…
const HURTS: f64 = 2.0;
/// …and at least this much longer, µs.
const HURTS_BY_US: f64 = 100.0;
/// Nice helps when it divides the p99 latency at nice 0 by at least this.
const NICE_HELPS: f64 = 2.0;
/// Another machine pays off for tasks this many times the cluster's cost per task (under 10 %).
const CLUSTER_TASK: f64 = 10.0;
/// …and for jobs of more than this many times a worker's start on this machine's workers: a second
/// machine of the same kind halves the time, less 10 % per task, so it saves more than the start
/// from 1 / (1 − 1 / (2 × 0.9)) = 2.25 starts on.
const CLUSTER_JOB: f64 = 2.25;

fn rec(
    id: &str,
    verdict: &str,
    text: String,
    value: f64,
    unit: &str,
    basis: &[&str],
) -> Recommendation {
    Recommendation {
        id: id.to_owned(),
        text,
        value,
        unit: unit.to_owned(),
        basis: basis.iter().map(|b| (*b).to_owned()).collect(),
        verdict: verdict.to_owned(),
        low_confidence_basis: Vec::new(),
        busy_basis: Vec::new(),
    }
}

/// Applies every rule that has the measurements it needs, and marks the ones whose basis is weak.
pub(crate) fn derive(inputs: Inputs<'_>) -> Vec<Recommendation> {
    let mut recs: Vec<Recommendation> = [
        Some(tier(inputs)),
        Some(threads_or_processes(inputs)),
        process_task_min(inputs),
        Some(thread_task_min(inputs)),
        async_memory(inputs),
        keep_workers_warm(inputs),
        task_limit(inputs),
        memory_workers(inputs),
        large_payloads(inputs),
        codec_bytes(inputs),
        foreground_nice(inputs),
        Some(cluster(inputs)),
    ]
    .into_iter()
    .flatten()
    .collect();
    for r in &mut recs {
        caveat(r, inputs.noise);
    }
    recs
}

/// Whether `row` (a report path) is, or lies inside, the basis path `basis`.
pub(crate) fn within(row: &str, basis: &str) -> bool {
    row.strip_prefix(basis)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// Lists the weak rows of a recommendation's basis and says so in its text.
fn caveat(r: &mut Recommendation, noise: &Noise) {
    let weak = |rows: &[String]| -> Vec<String> {
        rows.iter()
            .filter(|row| r.basis.iter().any(|b| within(row, b)))
            .cloned()
            .collect()
    };
    r.low_confidence_basis = weak(&noise.low_confidence);
    r.busy_basis = weak(&noise.busy_rows);
    if !r.low_confidence_basis.is_empty() {
        r.text.push_str(&format!(
            " Low confidence: it rests on {} whose interval was wide ({}); probe again on a \
             quiet machine before relying on it.",
            rows_word(r.low_confidence_basis.len()),
            shorten(&r.low_confidence_basis)
        ));
    }
    if !r.busy_basis.is_empty() {
        r.text.push_str(&format!(
            " Other work used the CPUs while {} measured ({}).",
            if r.busy_basis.len() == 1 {
                "its basis was"
            } else {
                "rows of its basis were"
            },
            shorten(&r.busy_basis)
        ));
    }
}

fn rows_word(n: usize) -> &'static str {
    if n == 1 { "a row" } else { "rows" }
}

/// A list of row paths for a sentence: the first few, and how many more.
pub(crate) fn shorten(rows: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut out = rows
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if rows.len() > SHOWN {
        out.push_str(&format!(" and {} more", rows.len() - SHOWN));
    }
    out
}

/// How many workers a CPU-bound pool should have, and why.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sizing {
    pub(crate) workers: u64,
    pub(crate) why: Why,
}

/// The reason behind a [`Sizing`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Why {
    /// No curve: the usable cores.
    NotMeasured,
    /// The usable cores: nothing measured says otherwise.
    Cores,
    /// More workers than cores ran faster, intervals apart, on a quiet machine.
    Beyond { at: Stat, at_cores: Stat },
    /// More workers than cores ran faster, but other work used the CPUs: not followed.
    BeyondWhileBusy {
        workers: u64,
        at: Stat,
        at_cores: Stat,
    },
    /// Fewer workers than cores ran faster, intervals apart.
    Fewer { at: Stat, at_cores: Stat },
}

/// The side of the CPU curve that sizes a pool: processes (what tier 2 recommends for CPU-bound
/// work), threads where the process side is missing; each point's worker count and wall time.
fn sizing_curve(curves: &Curves) -> Vec<(u64, Stat)> {
    let processes: Vec<(u64, Stat)> = curves
        .cpu
        .points
        .iter()
        .filter(|p| p.processes.median.is_finite() && p.processes.median > 0.0)
        .map(|p| (p.workers, p.processes))
        .collect();
    if processes.len() == curves.cpu.points.len() && !processes.is_empty() {
        return processes;
    }
    curves
        .cpu
        .points
        .iter()
        .filter(|p| p.threads.median.is_finite() && p.threads.median > 0.0)
        .map(|p| (p.workers, p.threads))
        .collect()
}

/// Sizes a CPU-bound pool on a machine with `cores` usable cores. The answer is the cores unless
/// the measured wall times say otherwise with intervals apart: more workers than cores only when
/// the machine was quiet while the curve was measured (`busy` false) — a busy machine hands out
/// CPU time per runnable thread, so more workers there only take more of it from other programs.
pub(crate) fn size_pool(curve: &[(u64, Stat)], cores: u64, busy: bool) -> Sizing {
    let Some(&(_, at_cores)) = curve.iter().find(|&&(w, _)| w == cores) else {
        return Sizing {
            workers: cores,
            why: Why::NotMeasured,
        };
    };
    let fastest_apart = |range: &mut dyn Iterator<Item = &(u64, Stat)>| {
        range
            .filter(|(_, s)| s.separated_below(&at_cores) && !s.low_confidence)
            .min_by(|a, b| a.1.median.total_cmp(&b.1.median))
            .copied()
    };
    if !at_cores.low_confidence {
        if let Some((w, at)) = fastest_apart(&mut curve.iter().filter(|(w, _)| *w > cores)) {
            if busy {
                return Sizing {
                    workers: cores,
                    why: Why::BeyondWhileBusy {
                        workers: w,
                        at,
                        at_cores,
                    },
                };
            }
            return Sizing {
                workers: w,
                why: Why::Beyond { at, at_cores },
            };
        }
        if let Some((w, at)) = fastest_apart(&mut curve.iter().filter(|(w, _)| *w < cores)) {
            return Sizing {
                workers: w,
                why: Why::Fewer { at, at_cores },
            };
        }
    }
    Sizing {
        workers: cores,
        why: Why::Cores,
    }
}

fn workers_word(n: u64) -> String {
    if n == 1 {
        "1 worker".to_owned()
    } else {
        format!("{n} workers")
    }
}

/// `12.3 ms [12.1–12.6]`
fn with_interval(s: &Stat) -> String {
    format!(
        "{} [{}–{}]",
        Human(s.median, s.unit),
        Human(s.ci_low, s.unit),
        Human(s.ci_high, s.unit)
    )
}

/// Whether other work used the CPUs while the CPU curve was measured.
fn curve_was_busy(noise: &Noise) -> bool {
    noise.busy_rows.iter().any(|r| within(r, "curves.cpu"))
}

fn tier(i: Inputs<'_>) -> Recommendation {
    let m = i.machine;
    let cores = effective_cores(m.available_cores, m.cgroup_cpu_quota_cores);
    let curve = sizing_curve(i.curves);
    let busy = curve_was_busy(i.noise);
    let sizing = size_pool(&curve, cores, busy);
    let workers = sizing.workers;
    let base = curve.first().map(|&(_, s)| s);
    let at = |w: u64| curve.iter().find(|&&(x, _)| x == w).map(|&(_, s)| s);
    // The speedup at the recommended count, with its interval.
    let speedup = match (base, at(workers)) {
        (Some(b), Some(s)) => Some((b.median / s.median, speedup_interval(&b, &s))),
        _ => None,
    };
    let speedup_s = speedup.map_or_else(
        || "not measured".to_owned(),
        |(x, [lo, hi])| format!("{x:.2}× [{lo:.2}–{hi:.2}]"),
    );
    let basis = [
        "machine.available_cores",
        "machine.cgroup_cpu_quota_cores",
        "curves.cpu",
    ];
    let load = format!(
        "other programs used {:.0} % of the CPUs while the curve was measured; load average {:.1} \
         when the probe started",
        100.0 * curve_other_cpu(i.noise),
        m.load_average[0]
    );
    let why = match &sizing.why {
        Why::NotMeasured => {
            " The CPU curve was not measured: the count is the usable cores.".to_owned()
        }
        Why::Cores => String::new(),
        Why::Beyond { at, at_cores } => format!(
            " That is more than its {cores} cores because the measured curve says so: at \
             {workers} workers the job took {} against {} at {cores}, intervals apart, on a quiet \
             machine (hardware threads the affinity does not show, or a quota counted per \
             thread). Probe again to confirm before sizing a pool past the cores.",
            with_interval(at),
            with_interval(at_cores)
        ),
        Why::BeyondWhileBusy {
            workers: w,
            at,
            at_cores,
        } => format!(
            " At {w} workers the job ran faster ({} against {} at {cores}), but other work was \
             running ({load}): a busy machine shares its time per runnable thread, so more \
             workers only take more of it from other programs. That is no reason to size a pool \
             past the cores.",
            with_interval(at),
            with_interval(at_cores)
        ),
        Why::Fewer { at, at_cores } => format!(
            " That is fewer than its {cores} cores because the job ran faster on {} ({}) than on \
             {cores} ({}), intervals apart: something limits the cores this process gets (a \
             quota the probe could not read, or other work: {load}).",
            workers_word(workers),
            with_interval(at),
            with_interval(at_cores)
        ),
    };
    // A curve that gains little says the cores were not all free.
    let contended = match (m.tier.level, speedup, base, at(cores)) {
        (2.., Some((x, _)), Some(b), Some(c)) if !matches!(sizing.why, Why::Beyond { .. }) => {
            let no_gain = !c.separated_below(&b);
            if no_gain || x < CONTENDED * cores as f64 {
                format!(
                    " The job gained {} from 1 to {cores} workers ({}): other work competed for \
                     the cores ({load}); probe again on a quiet machine. The count stays at what \
                     the cores allow: a noisy curve is no reason to size a pool differently.",
                    if no_gain {
                        "nothing significant"
                    } else {
                        "far less than the cores"
                    },
                    speedup_s
                )
            } else {
                String::new()
            }
        }
        _ => String::new(),
    };
    let verdict = format!("processes_up_to_{workers}");
    match m.tier.level {
        1 => rec(
            "tier",
            "inline",
            format!(
                "This machine is tier 1 (1 core): CPU-bound work gains nothing from parallel \
                 workers (speedup at 2 workers: {}). Run it inline, and overlap waits with async.",
                match (base, at(2)) {
                    (Some(b), Some(s)) => format!("{:.2}×", b.median / s.median),
                    _ => "not measured".to_owned(),
                }
            ),
            1.0,
            "workers",
            &basis,
        ),
        2 => rec(
            "tier",
            &verdict,
            format!(
                "This machine is tier 2 (2–8 cores, {cores} usable): use processes (or threads, \
                 for Rust code) up to {} for CPU-bound work (speedup {speedup_s} at {workers}), \
                 threads or async for I/O-bound work.{why}{contended}",
                workers_word(workers)
            ),
            workers as f64,
            "workers",
            &basis,
        ),
        _ => rec(
            "tier",
            &verdict,
            format!(
                "This machine is tier 3 (9+ cores, {cores} usable): processes or threads up to \
                 {} here (speedup {speedup_s}); past one machine, distributed processing: use \
                 the cluster backend (the `cluster` recommendation says from what size).{why}\
                 {contended}",
                workers_word(workers)
            ),
            workers as f64,
            "workers",
            &basis,
        ),
    }
}

/// Other programs' share of the CPUs over the CPU curve's rows (their mean).
fn curve_other_cpu(noise: &Noise) -> f64 {
    let rows: Vec<f64> = noise
        .rows
        .iter()
        .filter(|(p, _)| within(p, "curves.cpu"))
        .map(|(_, r)| r.window.other_cpu)
        .collect();
    if rows.is_empty() {
        0.0
    } else {
        rows.iter().sum::<f64>() / rows.len() as f64
    }
}

/// Threads or processes: the user's kind of code decides; this names the figures that weigh in.
fn threads_or_processes(i: Inputs<'_>) -> Recommendation {
    let m = i.machine;
    let cores = effective_cores(m.available_cores, m.cgroup_cpu_quota_cores);
    let at_cores = i.curves.cpu.points.iter().find(|p| p.workers == cores);
    let (ratio, speedups) = match at_cores {
        Some(p) if p.threads_speedup.is_finite() && p.processes_speedup.is_finite() => (
            p.threads_speedup / p.processes_speedup,
            format!(
                "at {cores} workers threads ran the job {:.2}× faster than one worker and \
                 processes {:.2}×",
                p.threads_speedup, p.processes_speedup
            ),
        ),
        _ => (f64::NAN, "the CPU curve was not measured".to_owned()),
    };
    let process_floor =
        i.switch.process_pipe.median + 2.0 * i.ipc.codec.small_struct_round_trip.median / 1e3;
    let thread_floor = i.creation.pool_submit_wait.median;
    rec(
        "threads_or_processes",
        "by_kind_of_code",
        format!(
            "Threads or processes is decided by your code, not by this machine: here {speedups}. \
             Rust code holds no global lock, so threads do as well as processes and share memory \
             without copying; choose processes for code that holds a global lock (Python, a \
             library that is not thread-safe) or that must be killable (hard timeouts; a crash \
             costs one worker, not the program). The figure that decides the cost is the task \
             floor: {} per task to a process against {} to a thread (`process_task_min`, \
             `thread_task_min`).",
            Human(process_floor, Unit::Micros),
            Human(thread_floor, Unit::Micros),
        ),
        if ratio.is_finite() { ratio } else { 1.0 },
        "x",
        &[
            "curves.cpu",
            "switch.process_pipe",
            "ipc.codec.small_struct_round_trip",
            "creation.pool_submit_wait",
        ],
    )
}

fn process_task_min(i: Inputs<'_>) -> Option<Recommendation> {
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

fn thread_task_min(i: Inputs<'_>) -> Recommendation {
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

fn async_memory(i: Inputs<'_>) -> Option<Recommendation> {
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

fn keep_workers_warm(i: Inputs<'_>) -> Option<Recommendation> {
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

fn task_limit(i: Inputs<'_>) -> Option<Recommendation> {
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

fn memory_workers(i: Inputs<'_>) -> Option<Recommendation> {
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
fn ratio_interval(top: &Stat, bottom: &Stat) -> [f64; 2] {
    [top.ci_low / bottom.ci_high, top.ci_high / bottom.ci_low]
}

/// Where an interval lies against a threshold: wholly above it, wholly below, or across.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Above,
    Below,
    Across,
}

fn side(interval: [f64; 2], threshold: f64) -> Side {
    if interval[0] >= threshold {
        Side::Above
    } else if interval[1] < threshold {
        Side::Below
    } else {
        Side::Across
    }
}

fn large_payloads(i: Inputs<'_>) -> Option<Recommendation> {
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

fn codec_bytes(i: Inputs<'_>) -> Option<Recommendation> {
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
fn foreground_nice(i: Inputs<'_>) -> Option<Recommendation> {
    let f = i.foreground;
    let (idle, n0, n10) = (
        f.idle.as_ref()?,
        f.processes_nice_0.as_ref()?,
        f.processes_nice_10.as_ref()?,
    );
    let p99 = |s: &super::foreground::Scenario| Human(s.latency.p99, Unit::Micros).to_string();
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
fn cluster(i: Inputs<'_>) -> Recommendation {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::probe::busy::{RowNoise, Window};
    use crate::probe::create::Creation;
    use crate::probe::curves::{CpuCurve, CpuPoint, IoCurve, IoPoint, IoSide};
    use crate::probe::foreground::{Latency, Scenario};
    use crate::probe::ipc::Codec;
    use crate::probe::machine::Tier;
    use crate::probe::stats::Stat;

    /// Owned synthetic measurements of a quiet 4-core machine.
    pub(crate) struct Synthetic {
        pub(crate) machine: Machine,
        pub(crate) creation: Creation,
        pub(crate) switch: Switch,
        pub(crate) memory: Memory,
        pub(crate) ipc: Ipc,
        pub(crate) curves: Curves,
        pub(crate) foreground: Foreground,
        pub(crate) cluster: ClusterCost,
        pub(crate) noise: Noise,
    }

    impl Synthetic {
        pub(crate) fn inputs(&self) -> Inputs<'_> {
            Inputs {
                machine: &self.machine,
                creation: &self.creation,
                switch: &self.switch,
                memory: &self.memory,
                ipc: &self.ipc,
                curves: &self.curves,
                foreground: &self.foreground,
                cluster: &self.cluster,
                noise: &self.noise,
            }
        }

        /// Sets the CPU curve (both sides) from wall times in ms, each with its interval.
        pub(crate) fn set_curve(&mut self, times: &[(f64, f64, f64)]) {
            let stat = |&(m, lo, hi): &(f64, f64, f64)| Stat::spread(m, lo, hi, Unit::Millis);
            let base = stat(&times[0]);
            self.curves.cpu.points = times
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let at = stat(t);
                    CpuPoint {
                        workers: i as u64 + 1,
                        threads: at,
                        processes: at,
                        threads_speedup: base.median / at.median,
                        processes_speedup: base.median / at.median,
                        threads_speedup_ci: speedup_interval(&base, &at),
                        processes_speedup_ci: speedup_interval(&base, &at),
                    }
                })
                .collect();
        }

        /// Lists the low-confidence rows in the noise section, as the probe does.
        pub(crate) fn mark_low_confidence(&mut self) {
            let sections = serde_json::json!({
                "creation": self.creation, "switch": self.switch, "memory": self.memory,
                "ipc": self.ipc, "curves": self.curves,
            });
            self.noise.low_confidence = crate::probe::compare::flatten(&sections)
                .into_iter()
                .filter(|(_, leaf)| leaf.low_confidence)
                .map(|(path, _)| path)
                .collect();
        }

        /// Marks the CPU curve as measured while other programs used `share` of the CPUs.
        pub(crate) fn busy_curve(&mut self, share: f64) {
            for p in &self.curves.cpu.points {
                for side in ["threads", "processes"] {
                    let path = format!("curves.cpu.points[workers={}].{side}", p.workers);
                    self.noise.rows.insert(
                        path.clone(),
                        RowNoise {
                            window: Window {
                                seconds: 1.0,
                                other_cpu: share,
                                steal: 0.0,
                                run_queue: 2.0,
                            },
                            busy: true,
                        },
                    );
                    self.noise.busy_rows.push(path);
                }
            }
        }

        fn find(&self, id: &str) -> Recommendation {
            derive(self.inputs())
                .into_iter()
                .find(|r| r.id == id)
                .unwrap_or_else(|| panic!("no recommendation `{id}`"))
        }
    }

    fn us(v: f64) -> Stat {
        Stat::exact(v, Unit::Micros)
    }

    fn io_side(wall_ms: f64, bytes: f64) -> Option<IoSide> {
        Some(IoSide {
            wall: Stat::exact(wall_ms, Unit::Millis),
            memory: Stat::exact(bytes, Unit::Bytes),
        })
    }

    /// A foreground scenario with this p50 and p99 (µs), against an idle p50 of 60 and p99 of 90.
    fn scenario(p50: f64, p99: f64) -> Option<Scenario> {
        Some(Scenario {
            latency: Latency {
                p50,
                p99,
                max: 2.0 * p99,
                mean: p50,
                samples: 1000,
                unit: Unit::Micros,
            },
            p50_over_idle: p50 / 60.0,
            p99_over_idle: p99 / 90.0,
        })
    }

    /// A wall time of `ms` with an interval of ±2 %.
    fn narrow(ms: f64) -> (f64, f64, f64) {
        (ms, ms * 0.98, ms * 1.02)
    }

    pub(crate) fn synthetic() -> Synthetic {
        let cores = 4;
        let speedups = [1.0, 1.9, 2.8, 3.7, 3.6, 3.7, 3.65, 3.6];
        let mut s = Synthetic {
            machine: Machine {
                cpu_model: Some("Synthetic CPU".into()),
                kernel: "Linux 6.1".into(),
                logical_cores: cores,
                physical_cores: Some(cores),
                available_cores: cores,
                cgroup_version: Some(2),
                cgroup_cpu_quota_cores: None,
                cgroup_memory_max_bytes: None,
                cgroup_pids_max: None,
                memory_total_bytes: 16 << 30,
                memory_available_bytes: 8 << 30,
                rlimit_nproc: Some(63_000),
                threads_max: Some(126_000),
                pid_max: Some(4_194_304),
                page_size_bytes: 4096,
                load_average: [0.1, 0.2, 0.3],
                tier: Tier::for_cores(cores),
            },
            creation: Creation {
                thread_spawn_join: us(20.0),
                pool_start_shutdown: us(40.0),
                pool_submit_wait: us(5.0),
                process_fork_exec: Some(us(600.0)),
                process_posix_spawn: Some(us(400.0)),
                process_reexec_ready: us(1500.0),
                process_worker_handshake: None,
                async_spawn_complete: us(0.3),
                event_loop_spawn_wait: us(15.0),
            },
            switch: Switch {
                thread_condvar: us(8.0),
                process_pipe: us(12.0),
                async_one_thread: us(0.2),
            },
            memory: Memory {
                thread_idle_rss: Stat::exact(12_288.0, Unit::Bytes),
                process_idle_rss: Stat::exact(4.0 * 1024.0 * 1024.0, Unit::Bytes),
                async_task_suspended: Stat::exact(300.0, Unit::Bytes),
                event_loop_task_suspended: Stat::exact(700.0, Unit::Bytes),
                threads_per_sample: 100,
                tasks_per_sample: 10_000,
            },
            ipc: Ipc {
                pipe_1kib: Stat::exact(200.0, Unit::MibPerSec),
                pipe_1mib: Stat::exact(2000.0, Unit::MibPerSec),
                unix_socket_1kib: Stat::exact(180.0, Unit::MibPerSec),
                unix_socket_1mib: Stat::exact(2500.0, Unit::MibPerSec),
                shared_memory_1kib: Stat::exact(150.0, Unit::MibPerSec),
                shared_memory_1mib: Stat::exact(6000.0, Unit::MibPerSec),
                codec: Codec {
                    name: "postcard".into(),
                    small_struct_bytes: 48,
                    small_struct_round_trip: Stat::exact(500.0, Unit::Nanos),
                    buffer_1mib_as_bytes: Stat::exact(8000.0, Unit::MibPerSec),
                    buffer_1mib_as_seq: Stat::exact(400.0, Unit::MibPerSec),
                },
            },
            curves: Curves {
                cpu: CpuCurve {
                    calibration_ms: 100.0,
                    points: Vec::new(),
                },
                io: IoCurve {
                    wait_ms: 10,
                    points: vec![
                        IoPoint {
                            concurrency: 10,
                            threads: io_side(11.0, 200_000.0),
                            async_: io_side(10.5, 0.0),
                        },
                        IoPoint {
                            concurrency: 100,
                            threads: io_side(14.0, 1_400_000.0),
                            async_: io_side(10.6, 40_000.0),
                        },
                        IoPoint {
                            concurrency: 1000,
                            threads: io_side(60.0, 14_000_000.0),
                            async_: io_side(11.0, 400_000.0),
                        },
                    ],
                },
            },
            foreground: Foreground {
                sleep_us: 1000,
                seconds_per_scenario: 1.5,
                background_workers: cores,
                idle: scenario(60.0, 90.0),
                processes_nice_0: scenario(1100.0, 3900.0),
                processes_nice_10: scenario(70.0, 160.0),
                processes_nice_19: scenario(65.0, 120.0),
                threads: scenario(900.0, 3800.0),
            },
            cluster: ClusterCost {
                source: "measured".into(),
                broker: Some("redis-server 7.0.15, private, 127.0.0.1".into()),
                round_trip: Some(Stat::exact(180.0, Unit::Micros)),
                per_task: Some(Stat::exact(25.0, Unit::Micros)),
                worker_start: Some(Stat::exact(8.0, Unit::Millis)),
                round_trip_us: 180.0,
                per_task_us: 25.0,
                note: "measured on this machine".into(),
            },
            noise: Noise::default(),
        };
        let times: Vec<_> = speedups.iter().map(|sp| narrow(100.0 / sp)).collect();
        s.set_curve(&times);
        s
    }

    #[test]
    fn tier_two_recommends_processes_up_to_the_cores() {
        let s = synthetic();
        let r = s.find("tier");
        // 3.7× at 4 workers; 5–8 are not faster with intervals apart.
        assert_eq!(r.value, 4.0);
        assert_eq!(r.verdict, "processes_up_to_4");
        assert!(r.text.contains("tier 2"), "{}", r.text);
        assert!(r.text.contains("up to 4 workers"), "{}", r.text);
        assert!(r.text.contains("3.70× [3.55–3.85]"), "{}", r.text);
        assert!(!r.text.contains("competed"), "{}", r.text);
        assert!(r.low_confidence_basis.is_empty() && r.busy_basis.is_empty());
    }

    /// The machine: 2 cores shared with other work, where 4 workers took more of the
    /// machine's time than 2 and so ran faster.
    fn two_cores_four_faster() -> Synthetic {
        let mut s = synthetic();
        s.machine.available_cores = 2;
        s.machine.logical_cores = 2;
        s.machine.tier = Tier::for_cores(2);
        s.machine.load_average = [4.2, 3.9, 3.5];
        s.set_curve(&[narrow(120.0), narrow(90.0), narrow(70.0), narrow(62.0)]);
        s
    }

    #[test]
    fn more_workers_than_cores_on_a_busy_machine_are_not_recommended() {
        let mut s = two_cores_four_faster();
        s.busy_curve(0.45);
        let r = s.find("tier");
        assert_eq!(r.value, 2.0);
        assert_eq!(r.verdict, "processes_up_to_2");
        assert!(r.text.contains("up to 2 workers"), "{}", r.text);
        assert!(
            r.text.contains("At 4 workers the job ran faster"),
            "{}",
            r.text
        );
        assert!(
            r.text.contains("no reason to size a pool past the cores"),
            "{}",
            r.text
        );
        assert!(r.text.contains("used 45 % of the CPUs"), "{}", r.text);
        assert_eq!(r.busy_basis.len(), 8, "{:?}", r.busy_basis);
        assert!(
            r.text.contains("Other work used the CPUs while rows"),
            "{}",
            r.text
        );
    }

    #[test]
    fn more_workers_than_cores_need_a_quiet_machine_and_separate_intervals() {
        let s = two_cores_four_faster();
        let r = s.find("tier");
        assert_eq!(r.value, 4.0);
        assert!(
            r.text
                .contains("more than its 2 cores because the measured curve says so")
        );
        // 3 workers' interval lies below 2 workers': more than the cores again.
        let mut s = two_cores_four_faster();
        s.set_curve(&[
            narrow(120.0),
            (90.0, 82.0, 98.0),
            narrow(70.0),
            (85.0, 60.0, 110.0),
        ]);
        assert_eq!(s.find("tier").value, 3.0);
        // Overlapping intervals are no evidence: back to the cores.
        s.set_curve(&[
            narrow(120.0),
            (90.0, 82.0, 98.0),
            (85.0, 80.0, 90.0),
            (84.0, 78.0, 92.0),
        ]);
        assert_eq!(s.find("tier").value, 2.0);
        // Nor is a point faster than the cores whose own interval is wide.
        s.set_curve(&[
            narrow(120.0),
            (90.0, 82.0, 98.0),
            (85.0, 80.0, 90.0),
            (60.0, 40.0, 80.0),
        ]);
        assert_eq!(s.find("tier").value, 2.0);
    }

    #[test]
    fn a_flat_curve_keeps_the_cores_and_says_other_work_competed() {
        let mut s = synthetic();
        s.set_curve(&[
            (100.0, 80.0, 125.0),
            (95.0, 75.0, 118.0),
            (98.0, 80.0, 120.0),
            (90.0, 72.0, 115.0),
            (96.0, 80.0, 120.0),
            (99.0, 80.0, 125.0),
            (97.0, 80.0, 120.0),
            (95.0, 78.0, 119.0),
        ]);
        let r = s.find("tier");
        assert_eq!(r.value, 4.0);
        assert!(r.text.contains("gained nothing significant"), "{}", r.text);
        assert!(r.text.contains("competed"), "{}", r.text);
        // Every point is wide: the recommendation says it rests on low-confidence rows.
        s.mark_low_confidence();
        let r = s.find("tier");
        assert_eq!(
            r.low_confidence_basis.len(),
            16,
            "{:?}",
            r.low_confidence_basis
        );
        assert!(
            r.text.contains("Low confidence: it rests on rows"),
            "{}",
            r.text
        );
    }

    #[test]
    fn a_gain_far_below_the_cores_is_called_out() {
        let mut s = synthetic();
        let times: Vec<_> = [1.0, 1.4, 1.6, 1.7, 1.7, 1.7, 1.7, 1.7]
            .iter()
            .map(|sp| narrow(100.0 / sp))
            .collect();
        s.set_curve(&times);
        let r = s.find("tier");
        assert_eq!(r.value, 4.0);
        assert!(r.text.contains("far less than the cores"), "{}", r.text);
    }

    #[test]
    fn fewer_workers_only_when_apart_from_the_cores() {
        let mut s = synthetic();
        s.set_curve(&[
            narrow(100.0),
            narrow(50.0),
            narrow(70.0),
            narrow(80.0),
            narrow(80.0),
            narrow(80.0),
            narrow(80.0),
            narrow(80.0),
        ]);
        let r = s.find("tier");
        assert_eq!(r.value, 2.0);
        assert!(r.text.contains("fewer than its 4 cores"), "{}", r.text);
    }

    #[test]
    fn tier_one_and_tier_three() {
        let mut s = synthetic();
        s.machine.available_cores = 1;
        s.machine.tier = Tier::for_cores(1);
        let r = s.find("tier");
        assert!(r.text.contains("tier 1"), "{}", r.text);
        assert_eq!(r.value, 1.0);

        let mut s = synthetic();
        s.machine.available_cores = 32;
        s.machine.tier = Tier::for_cores(32);
        let r = s.find("tier");
        assert!(r.text.contains("cluster backend"), "{}", r.text);
        // The curve does not reach 32 workers: the count is the cores.
        assert_eq!(r.value, 32.0);
    }

    #[test]
    fn a_cpu_quota_lowers_the_tier_cores() {
        let mut s = synthetic();
        s.machine.available_cores = 16;
        s.machine.cgroup_cpu_quota_cores = Some(2.0);
        s.machine.tier = Tier::for_cores(2);
        let times: Vec<_> = (1..=8u32)
            .map(|w| narrow(100.0 / f64::from(w.min(2))))
            .collect();
        s.set_curve(&times);
        let r = s.find("tier");
        assert!(r.text.contains("2 usable"), "{}", r.text);
        assert_eq!(r.value, 2.0);
    }

    #[test]
    fn threads_stand_in_when_the_process_curve_is_missing() {
        let mut s = synthetic();
        let times: Vec<_> = (1..=8u32)
            .map(|w| narrow(100.0 / f64::from(w.min(3))))
            .collect();
        s.set_curve(&times);
        for p in &mut s.curves.cpu.points {
            p.processes.median = f64::NAN;
        }
        let curve = sizing_curve(&s.curves);
        assert_eq!(curve.len(), 8);
        assert!(curve.iter().all(|(_, st)| st.median.is_finite()));
        s.curves.cpu.points.clear();
        assert!(sizing_curve(&s.curves).is_empty());
        assert_eq!(size_pool(&[], 4, false).why, Why::NotMeasured);
    }

    #[test]
    fn threads_or_processes_names_the_deciding_figures() {
        let r = synthetic().find("threads_or_processes");
        assert_eq!(r.verdict, "by_kind_of_code");
        assert!(r.text.contains("decided by your code"), "{}", r.text);
        assert!(
            r.text.contains("13.0 µs per task to a process"),
            "{}",
            r.text
        );
        assert!(r.text.contains("5.00 µs to a thread"), "{}", r.text);
    }

    #[test]
    fn a_recommendation_on_a_low_confidence_row_says_so() {
        let mut s = synthetic();
        s.noise.low_confidence = vec![
            "switch.process_pipe".into(),
            "memory.process_idle_rss".into(),
        ];
        let r = s.find("process_task_min");
        assert_eq!(r.low_confidence_basis, ["switch.process_pipe"]);
        assert!(
            r.text.contains(
                "Low confidence: it rests on a row whose interval was wide (switch.process_pipe)"
            ),
            "{}",
            r.text
        );
        let r = s.find("thread_task_min");
        assert!(r.low_confidence_basis.is_empty());
        assert!(!r.text.contains("Low confidence"));
        // Every recommendation whose basis holds a low-confidence row says so.
        for r in derive(s.inputs()) {
            let rests = r
                .basis
                .iter()
                .any(|b| s.noise.low_confidence.iter().any(|row| within(row, b)));
            assert_eq!(
                rests,
                r.text.contains("Low confidence"),
                "{}: {}",
                r.id,
                r.text
            );
        }
    }

    #[test]
    fn within_matches_paths_and_their_parts() {
        assert!(within("curves.cpu", "curves.cpu"));
        assert!(within("curves.cpu.points[workers=2].threads", "curves.cpu"));
        assert!(within(
            "curves.cpu.points[workers=2].threads",
            "curves.cpu.points"
        ));
        assert!(!within("curves.cpu_extra", "curves.cpu"));
        assert!(!within("curves", "curves.cpu"));
    }

    #[test]
    fn process_task_floor_adds_codec_both_ways() {
        let r = synthetic().find("process_task_min");
        // 12 µs pipe round trip + 2 × 0.5 µs codec.
        assert!((r.value - 13.0).abs() < 1e-9, "{}", r.value);
        assert!(r.text.contains("13.0 µs"), "{}", r.text);
        assert!(r.text.contains("is a floor"), "{}", r.text);
    }

    #[test]
    fn thread_task_floor_is_the_submit_wait_round_trip() {
        let r = synthetic().find("thread_task_min");
        assert_eq!(r.value, 5.0);
        assert_eq!(r.unit, "us");
    }

    #[test]
    fn async_memory_threshold_and_ratio() {
        let r = synthetic().find("async_memory");
        // 10 waits: 200 KB more, under 1 MiB; 100 waits: 1.4 MB vs 40 KB, both criteria met.
        assert!(
            r.text.starts_with("From 100 concurrent waits"),
            "{}",
            r.text
        );
        assert!((r.value - 35.0).abs() < 1e-9, "{}", r.value);
    }

    #[test]
    fn async_memory_when_threads_are_cheap() {
        let mut s = synthetic();
        for p in &mut s.curves.io.points {
            p.async_ = p.threads.clone();
        }
        let r = s.find("async_memory");
        assert!(r.text.starts_with("Up to 1,000"), "{}", r.text);
        assert_eq!(r.value, 1.0);
    }

    #[test]
    fn async_memory_uses_the_largest_point_with_both_sides() {
        let mut s = synthetic();
        s.curves.io.points.push(IoPoint {
            concurrency: 10_000,
            threads: None,
            async_: io_side(20.0, 4_000_000.0),
        });
        let r = s.find("async_memory");
        assert!(r.text.contains("at 1,000"), "{}", r.text);
        s.curves.io.points.iter_mut().for_each(|p| p.threads = None);
        assert!(derive(s.inputs()).iter().all(|r| r.id != "async_memory"));
    }

    #[test]
    fn keep_workers_warm_prefers_posix_spawn() {
        let mut s = synthetic();
        assert_eq!(s.find("keep_workers_warm").value, 20.0);
        s.creation.process_posix_spawn = None;
        assert_eq!(s.find("keep_workers_warm").value, 30.0);
        s.creation.process_fork_exec = None;
        assert_eq!(s.find("keep_workers_warm").value, 75.0);
    }

    #[test]
    fn task_limit_names_the_binding_limit() {
        let mut s = synthetic();
        s.machine.cgroup_pids_max = Some(512);
        let r = s.find("task_limit");
        assert_eq!(r.value, 512.0);
        assert!(r.text.contains("cgroup pids.max"), "{}", r.text);
    }

    #[test]
    fn memory_workers_follow_the_cgroup_limit() {
        let mut s = synthetic();
        assert_eq!(s.find("memory_workers").value, 2048.0);
        s.machine.cgroup_memory_max_bytes = Some(64 << 20);
        let r = s.find("memory_workers");
        assert_eq!(r.value, 16.0);
        assert!(r.text.contains("cgroup limit"), "{}", r.text);
    }

    #[test]
    fn payload_advice_turns_on_the_ratio_and_its_interval() {
        let mut s = synthetic();
        let r = s.find("large_payloads");
        assert_eq!(r.value, 3.0);
        assert_eq!(r.verdict, "shared_memory");
        assert!(r.text.contains("worth it"), "{}", r.text);
        s.ipc.shared_memory_1mib = Stat::exact(2200.0, Unit::MibPerSec);
        let r = s.find("large_payloads");
        assert_eq!(r.verdict, "pipe_is_enough");
        assert!(r.text.contains("a pipe is enough"), "{}", r.text);
        // The two runs: 6.9× then 0.91×. An interval across the threshold decides nothing.
        s.ipc.shared_memory_1mib = Stat::spread(3000.0, 1500.0, 9000.0, Unit::MibPerSec);
        let r = s.find("large_payloads");
        assert_eq!(r.verdict, "undecided");
        assert!(r.text.contains("do not say"), "{}", r.text);
    }

    #[test]
    fn codec_bytes_only_when_it_pays() {
        let mut s = synthetic();
        let r = s.find("codec_bytes");
        assert_eq!((r.value, r.verdict.as_str()), (20.0, "mark_bytes"));
        s.ipc.codec.buffer_1mib_as_seq = Stat::exact(7000.0, Unit::MibPerSec);
        assert!(derive(s.inputs()).iter().all(|r| r.id != "codec_bytes"));
        s.ipc.codec.buffer_1mib_as_seq = Stat::spread(4000.0, 1000.0, 6000.0, Unit::MibPerSec);
        assert!(derive(s.inputs()).iter().all(|r| r.id != "codec_bytes"));
    }

    #[test]
    fn nice_is_recommended_when_it_helps_the_foreground() {
        let mut s = synthetic();
        let r = s.find("foreground_nice");
        assert_eq!(r.verdict, "nice_helps");
        assert!((r.value - 3900.0 / 160.0).abs() < 1e-9, "{}", r.value);
        assert!(
            r.text
                .contains("from 90.0 µs idle to 3.90 ms at nice 0 (43.3× idle)"),
            "{}",
            r.text
        );
        assert!(r.text.contains("`worker_nice(10)`"), "{}", r.text);
        // Nice that changes nothing is said so.
        s.foreground.processes_nice_10 = scenario(1000.0, 3000.0);
        assert_eq!(s.find("foreground_nice").verdict, "nice_no_better");
        // A background that does not hurt needs no nice.
        s.foreground.processes_nice_0 = scenario(70.0, 150.0);
        let r = s.find("foreground_nice");
        assert_eq!(r.verdict, "nice_not_needed");
        assert!(r.text.contains("within 2× of idle"), "{}", r.text);
        // Without the idle figure there is nothing to compare with.
        s.foreground.idle = None;
        assert!(derive(s.inputs()).iter().all(|r| r.id != "foreground_nice"));
    }

    #[test]
    fn the_cluster_pays_off_from_ten_times_its_cost_per_task() {
        let mut s = synthetic();
        let r = s.find("cluster");
        assert_eq!(r.value, 250.0);
        assert_eq!(r.unit, "us");
        assert!(
            r.text.contains("tasks of at least 250 µs each"),
            "{}",
            r.text
        );
        assert!(r.text.contains("tasks of 1.80 ms or more"), "{}", r.text);
        // 2.25 × 8 ms = 18 ms on 4 workers at 3.70×: 66.6 ms of one core's work.
        assert!(
            r.text.contains(
                "more than 66.6 ms of one core's work (18.0 ms on this machine's 4 workers"
            ),
            "{}",
            r.text
        );
        assert!(r.text.contains("private redis-server"), "{}", r.text);
        // Without a broker, the published figures, said so.
        s.cluster = ClusterCost::published("no redis-server on the PATH");
        let r = s.find("cluster");
        assert!((r.value - 207.6).abs() < 0.1, "{}", r.value);
        assert!(
            r.text
                .contains("no redis-server on the PATH: the published figures stand in"),
            "{}",
            r.text
        );
        assert!(
            r.text.contains("not measured without a broker"),
            "{}",
            r.text
        );
        // Tier 3 leads with the cores.
        s.machine.available_cores = 32;
        s.machine.tier = Tier::for_cores(32);
        assert!(
            s.find("cluster")
                .text
                .starts_with("This machine has 32 usable cores (tier 3)")
        );
    }

    #[test]
    fn every_basis_names_a_report_field() {
        let s = synthetic();
        let report = serde_json::json!({
            "machine": s.machine, "creation": s.creation, "switch": s.switch,
            "memory": s.memory, "ipc": s.ipc, "curves": s.curves, "foreground": s.foreground,
            "cluster": s.cluster,
        });
        for r in derive(s.inputs()) {
            for path in &r.basis {
                let mut v = &report;
                for key in path.split('.') {
                    v = v
                        .get(key)
                        .unwrap_or_else(|| panic!("{}: no field {path}", r.id));
                }
            }
        }
    }
}
