//! The rules of the backend choice: which tier, threads or processes, and how many workers.

use super::*;

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
pub(super) fn sizing_curve(curves: &Curves) -> Vec<(u64, Stat)> {
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

pub(super) fn workers_word(n: u64) -> String {
    if n == 1 {
        "1 worker".to_owned()
    } else {
        format!("{n} workers")
    }
}

/// `12.3 ms [12.1–12.6]`
pub(super) fn with_interval(s: &Stat) -> String {
    format!(
        "{} [{}–{}]",
        Human(s.median, s.unit),
        Human(s.ci_low, s.unit),
        Human(s.ci_high, s.unit)
    )
}

/// Whether other work used the CPUs while the CPU curve was measured.
pub(super) fn curve_was_busy(noise: &Noise) -> bool {
    noise.busy_rows.iter().any(|r| within(r, "curves.cpu"))
}

pub(super) fn tier(i: Inputs<'_>) -> Recommendation {
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
pub(super) fn curve_other_cpu(noise: &Noise) -> f64 {
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
pub(super) fn threads_or_processes(i: Inputs<'_>) -> Recommendation {
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
