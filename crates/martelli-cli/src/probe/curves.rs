//! Workload curves: a CPU-bound job on 1…2×cores workers (threads and processes), and an I/O-bound
//! job (simulated waits) on threads (up to 1,000) and on async tasks for 10…10,000 concurrent waits.

use super::child::Piped;
use super::stats::{Stat, Unit, in_unit};
use super::workload::{IoRun, spin};
use super::{Ctx, Notes, ProbeError};
use martelli::Pool;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::time::Instant;

/// Both curves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Curves {
    pub(crate) cpu: CpuCurve,
    pub(crate) io: IoCurve,
}

/// The CPU-bound job: a fixed amount of work split evenly over `workers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CpuCurve {
    /// One run of the whole job on the probing thread, when its size was calibrated, in ms.
    pub(crate) calibration_ms: f64,
    pub(crate) points: Vec<CpuPoint>,
}

/// The job on one number of workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CpuPoint {
    pub(crate) workers: u64,
    /// Wall time on a martelli thread pool of `workers` threads, in ms.
    pub(crate) threads: Stat,
    /// Wall time on `workers` helper processes (started beforehand), in ms.
    pub(crate) processes: Stat,
    /// Median one-worker time over median time here, threads.
    pub(crate) threads_speedup: f64,
    /// Median one-worker time over median time here, processes.
    pub(crate) processes_speedup: f64,
    /// The speedup's interval: the one-worker interval over this point's, end against end
    /// ([`speedup_interval`]).
    pub(crate) threads_speedup_ci: [f64; 2],
    pub(crate) processes_speedup_ci: [f64; 2],
}

/// The interval of a speedup `base / at`: the lowest base over the highest time here, and the
/// highest base over the lowest time. It holds with at least the confidence of both intervals
/// together (each 95 %: at least 90 %).
pub(crate) fn speedup_interval(base: &Stat, at: &Stat) -> [f64; 2] {
    [base.ci_low / at.ci_high, base.ci_high / at.ci_low]
}

/// The I/O-bound job: `concurrency` waits of `wait_ms` each, all pending at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct IoCurve {
    pub(crate) wait_ms: u64,
    pub(crate) points: Vec<IoPoint>,
}

/// The I/O job at one concurrency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct IoPoint {
    pub(crate) concurrency: u64,
    /// On a martelli thread pool with one thread per wait; `None` when the machine refused the threads.
    pub(crate) threads: Option<IoSide>,
    /// On tokio tasks on one thread.
    #[serde(rename = "async")]
    pub(crate) async_: Option<IoSide>,
}

/// Time and memory of one side of an I/O point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct IoSide {
    /// Wall time, start to last wait's end, in ms.
    pub(crate) wall: Stat,
    /// Resident-set growth while all waits were pending, in bytes.
    pub(crate) memory: Stat,
}

/// Threads or processes left for the rest of the system when the I/O curve sizes its thread pools
/// against the machine's task limit.
const THREAD_MARGIN: u64 = 256;

/// The most threads the I/O curve starts. Ten thousand threads cost seconds to create and to join,
/// and on a loaded machine their wake-ups pile up: thousands runnable at once, which raises the
/// load average for minutes and makes the next run see a busy machine. Async goes on to 10,000.
pub(crate) const MAX_IO_THREADS: u64 = 1_000;

/// The worker counts of the CPU curve: every count from 1 to 2×cores on small machines, powers of
/// two plus the core count and its double on big ones.
pub(crate) fn worker_counts(cores: u64) -> Vec<u64> {
    let cores = cores.max(1);
    let top = 2 * cores;
    if top <= 8 {
        return (1..=top).collect();
    }
    let mut counts: Vec<u64> = std::iter::successors(Some(1u64), |n| n.checked_mul(2))
        .take_while(|&n| n <= top)
        .collect();
    counts.extend([cores, top]);
    counts.sort_unstable();
    counts.dedup();
    counts
}

/// The concurrencies of the I/O curve.
pub(crate) fn io_concurrencies(quick: bool) -> Vec<u64> {
    if quick {
        vec![10, 100, 1_000]
    } else {
        vec![10, 100, 1_000, 10_000]
    }
}

pub(crate) fn measure(ctx: &Ctx, notes: &mut Notes) -> Result<Curves, ProbeError> {
    Ok(Curves {
        cpu: cpu(ctx)?,
        io: io(ctx, notes)?,
    })
}

fn cpu(ctx: &Ctx) -> Result<CpuCurve, ProbeError> {
    // Calibrate: how many spin units make the job last `target` ms on one core.
    let target_ms = f64::from(ctx.pick(10, 60));
    // The fastest of three short runs sets the size: on a machine whose CPU time comes in bursts
    // (a shared virtual machine), one run can be slowed several times over.
    let probe_units = 2_000_000u64;
    let probe_ms = (0..3)
        .map(|_| {
            let t = Instant::now();
            spin(probe_units);
            in_unit(t.elapsed(), Unit::Millis)
        })
        .fold(f64::INFINITY, f64::min)
        .max(1e-3);
    let units = ((probe_units as f64) * target_ms / probe_ms).max(1.0) as u64;
    let t = Instant::now();
    spin(units);
    let calibration_ms = in_unit(t.elapsed(), Unit::Millis);

    let counts = worker_counts(ctx.cores);
    let plan = ctx.plans.curve;
    // Rounds go over every worker count, and threads and processes take turns within a count, so
    // that a change in the machine's load while the probe runs touches every point alike. Rounds
    // go on until every point's interval is narrow or the curve's budget is spent.
    let mut samples: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); counts.len()];
    let mut round = 0;
    let mut measured_since = Instant::now();
    loop {
        round += 1;
        if round == plan.warmup + 1 {
            measured_since = Instant::now();
        }
        ctx.step(&format!("curves: CPU-bound job, round {round}"));
        for (i, &w) in counts.iter().enumerate() {
            let share = units / w;
            let point = format!("curves.cpu.points[workers={w}]");
            let t = ctx.row(&format!("{point}.threads"), || cpu_on_threads(w, share))?;
            let p = ctx.row(&format!("{point}.processes"), || {
                cpu_on_processes(ctx, w, share)
            })?;
            if round > plan.warmup {
                samples[i].0.push(t);
                samples[i].1.push(p);
            }
        }
        let rows: Vec<&[f64]> = samples
            .iter()
            .flat_map(|(t, p)| [t.as_slice(), p.as_slice()])
            .collect();
        if round > plan.warmup && plan.enough(&rows, measured_since.elapsed()) {
            break;
        }
    }
    let summary = |samples: &[f64]| {
        Stat::from_samples(samples, Unit::Millis)
            .ok_or_else(|| ProbeError::Measure("the CPU curve measured nothing".into()))
    };
    let mut rows = Vec::with_capacity(counts.len());
    for (&w, (t, p)) in counts.iter().zip(&samples) {
        rows.push((w, summary(t)?, summary(p)?));
    }
    let base = rows.first().map(|&(_, t, p)| (t, p));
    let points = rows
        .into_iter()
        .map(|(workers, threads, processes)| {
            let (bt, bp) = base.unwrap_or((threads, processes));
            CpuPoint {
                workers,
                threads,
                processes,
                threads_speedup: bt.median / threads.median,
                processes_speedup: bp.median / processes.median,
                threads_speedup_ci: speedup_interval(&bt, &threads),
                processes_speedup_ci: speedup_interval(&bp, &processes),
            }
        })
        .collect();
    Ok(CpuCurve {
        calibration_ms,
        points,
    })
}

/// The CPU job on a fresh martelli pool of `w` threads (started before the clock, joined after it).
fn cpu_on_threads(w: u64, share: u64) -> Result<f64, ProbeError> {
    let pool = Pool::builder()
        .threads(usize::try_from(w).unwrap_or(usize::MAX))
        .name_prefix("probe-cpu")
        .build()
        .map_err(ProbeError::Pool)?;
    let start = Instant::now();
    let futures = (0..w)
        .map(|_| pool.submit(move || spin(share)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ProbeError::Pool)?;
    for f in futures {
        f.wait()
            .map_err(|e| ProbeError::Measure(format!("a CPU task failed: {e}")))?;
    }
    Ok(in_unit(start.elapsed(), Unit::Millis))
}

/// The CPU job on `w` fresh helper processes (started and ready before the clock).
fn cpu_on_processes(ctx: &Ctx, w: u64, share: u64) -> Result<f64, ProbeError> {
    let mut workers: Vec<Piped> = (0..w)
        .map(|_| ctx.helper.spawn_piped("spin", &[]))
        .collect::<Result<_, _>>()?;
    for worker in &mut workers {
        let line = worker.read_line()?;
        if line.trim() != "ready" {
            return Err(ProbeError::Measure(format!("spin helper said {line:?}")));
        }
    }
    let order = format!("{share}\n");
    let start = Instant::now();
    for worker in &mut workers {
        worker.stdin()?.write_all(order.as_bytes())?;
    }
    for worker in &mut workers {
        let line = worker.read_line()?;
        if line.trim() != "done" {
            return Err(ProbeError::Measure(format!("spin helper said {line:?}")));
        }
    }
    Ok(in_unit(start.elapsed(), Unit::Millis))
}

fn io(ctx: &Ctx, notes: &mut Notes) -> Result<IoCurve, ProbeError> {
    let wait_ms = 10;
    let mut points = Vec::new();
    for (i, n) in io_concurrencies(ctx.quick).into_iter().enumerate() {
        ctx.step(&format!("curves: {n} concurrent waits"));
        let mut side = |kind: &str| -> Result<Option<IoSide>, ProbeError> {
            if kind == "threads" && n > MAX_IO_THREADS {
                notes.insert(
                    &format!("curves.io.points[{i}].{kind}"),
                    format!(
                        "not measured: more than {MAX_IO_THREADS} threads waking together load \
                         the machine for minutes after the probe; the points below show how \
                         threads grow"
                    ),
                );
                return Ok(None);
            }
            // Threads beyond what the machine allows would only fail, and could starve other
            // programs of theirs: say so instead of trying (a margin is left for everything else).
            if let (true, Some((limit, which))) = (kind == "threads", ctx.task_limit) {
                if n + THREAD_MARGIN > limit {
                    notes.insert(
                        &format!("curves.io.points[{i}].{kind}"),
                        format!(
                            "not available: {n} threads would exceed {which} ({limit}) with \
                             everything else running"
                        ),
                    );
                    return Ok(None);
                }
            }
            let plan = ctx.plans.fresh;
            let start = Instant::now();
            let mut runs: Vec<IoRun> = Vec::new();
            let mut wall: Vec<f64> = Vec::new();
            while !plan.enough(&[&wall], start.elapsed()) {
                let path = format!("curves.io.points[concurrency={n}].{kind}");
                let args = [kind.to_owned(), n.to_string(), wait_ms.to_string()];
                match ctx.row(&path, || ctx.helper.run_json::<IoRun>("io", &args)) {
                    Ok(run) => {
                        wall.push(run.wall_ms);
                        runs.push(run);
                    }
                    Err(e) => {
                        notes.insert(
                            &format!("curves.io.points[{i}].{kind}"),
                            format!("not available: {e}"),
                        );
                        return Ok(None);
                    }
                }
            }
            let memory: Vec<f64> = runs.iter().map(|r| r.rss_delta).collect();
            match (
                Stat::from_samples(&wall, Unit::Millis),
                Stat::from_samples(&memory, Unit::Bytes),
            ) {
                (Some(wall), Some(memory)) => Ok(Some(IoSide { wall, memory })),
                _ => Err(ProbeError::Measure(format!(
                    "the {kind} I/O helper reported no usable value"
                ))),
            }
        };
        let threads = side("threads")?;
        let async_ = side("async")?;
        points.push(IoPoint {
            concurrency: n,
            threads,
            async_,
        });
    }
    Ok(IoCurve { wait_ms, points })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_counts_cover_one_to_twice_the_cores() {
        assert_eq!(worker_counts(1), vec![1, 2]);
        assert_eq!(worker_counts(2), vec![1, 2, 3, 4]);
        assert_eq!(worker_counts(4), vec![1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(worker_counts(6), vec![1, 2, 4, 6, 8, 12]);
        assert_eq!(worker_counts(64), vec![1, 2, 4, 8, 16, 32, 64, 128]);
        assert_eq!(worker_counts(0), vec![1, 2]);
    }

    #[test]
    fn io_concurrencies_reach_ten_thousand_in_full() {
        assert_eq!(io_concurrencies(true).last(), Some(&1_000));
        assert_eq!(io_concurrencies(false), vec![10, 100, 1_000, 10_000]);
    }
}
