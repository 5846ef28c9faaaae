//! Keep the foreground responsive: how late a thread that sleeps 1 ms in a loop wakes up, on an idle
//! machine and while a background pool keeps every usable core busy.
//!
//! Five scenarios, each a [`Scenario`] of the report's `foreground` section:
//!
//! | key | background |
//! | --- | --- |
//! | `idle` | nothing |
//! | `processes_nice_0` | a martelli process pool of one worker per core, each spinning, at normal priority |
//! | `processes_nice_10` | the same pool built with `worker_nice(10)` |
//! | `processes_nice_19` | the same with `worker_nice(19)`, the lowest priority |
//! | `threads` | a martelli thread pool of one thread per core, spinning, at normal priority |
//!
//! The foreground is the probing thread itself: it sleeps 1 ms, again and again, and records by how
//! much each sleep overran (the wake-up latency). The scenarios take turns over a few rounds, so a
//! change in other work touches them alike. The background work is [`burn`]: a task that spins for
//! a given time, so every worker is runnable for the whole window.

use super::ProbeError;
use super::stats::{Unit, quantile};
use martelli::{Future, Pool};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// How long the foreground sleeps each time.
pub(crate) const SLEEP: Duration = Duration::from_millis(1);

/// The longest a [`burn`] task spins, whatever it is asked: a cap for a task any martelli worker of
/// this program can be sent.
const MAX_BURN_MS: u64 = 10_000;

/// Spins on the CPU for `ms` milliseconds (at most 10 s): the background work of the foreground
/// scenarios, run by a process pool of this program's own workers (`burn::call` runs it here).
#[martelli::task(name = "martelli-probe::burn")]
pub(crate) fn burn(ms: u64) -> u64 {
    let end = Instant::now() + Duration::from_millis(ms.min(MAX_BURN_MS));
    let mut spins = 0u64;
    while Instant::now() < end {
        spins = spins.wrapping_add(std::hint::black_box(super::workload::spin(10_000)) & 1);
    }
    spins
}

/// The wake-up latency of the foreground in one scenario, in µs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
    pub(crate) mean: f64,
    /// How many sleeps were timed.
    pub(crate) samples: u64,
    pub(crate) unit: Unit,
}

impl Latency {
    /// Summarises latencies in µs; `None` for none.
    pub(crate) fn from_samples(samples: &[f64]) -> Option<Latency> {
        if samples.is_empty() || samples.iter().any(|s| !s.is_finite()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Latency {
            p50: quantile(&sorted, 0.50),
            p99: quantile(&sorted, 0.99),
            max: sorted[sorted.len() - 1],
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            samples: sorted.len() as u64,
            unit: Unit::Micros,
        })
    }
}

/// One scenario: its latency and how it compares with the idle one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Scenario {
    #[serde(flatten)]
    pub(crate) latency: Latency,
    /// This p50 over the idle scenario's (1 for `idle` itself).
    pub(crate) p50_over_idle: f64,
    /// This p99 over the idle scenario's.
    pub(crate) p99_over_idle: f64,
}

/// The `foreground` section of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Foreground {
    /// How long each sleep asks for, µs.
    pub(crate) sleep_us: u64,
    /// How long the foreground was timed in each scenario, seconds (over all rounds).
    pub(crate) seconds_per_scenario: f64,
    /// Workers of each background pool: one per usable core.
    pub(crate) background_workers: u64,
    pub(crate) idle: Option<Scenario>,
    pub(crate) processes_nice_0: Option<Scenario>,
    pub(crate) processes_nice_10: Option<Scenario>,
    pub(crate) processes_nice_19: Option<Scenario>,
    pub(crate) threads: Option<Scenario>,
}

/// What runs in the background of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Background {
    None,
    /// A process pool at this nice increment.
    Processes(i32),
    /// A thread pool at normal priority.
    Threads,
}

impl Background {
    /// The scenarios in the order they take turns, with their keys in the report.
    pub(crate) const ALL: [(&'static str, Background); 5] = [
        ("idle", Background::None),
        ("processes_nice_0", Background::Processes(0)),
        ("processes_nice_10", Background::Processes(10)),
        ("processes_nice_19", Background::Processes(19)),
        ("threads", Background::Threads),
    ];

    /// The scenario a key names.
    pub(crate) fn from_key(key: &str) -> Option<Background> {
        Background::ALL
            .iter()
            .find(|(k, _)| *k == key)
            .map(|&(_, b)| b)
    }
}

/// A running background pool whose workers all spin until their window ends.
enum Running {
    None,
    Processes(Pool, Vec<Future<u64>>),
    Threads(Pool, Vec<Future<u64>>),
}

impl Running {
    /// Starts the background: `workers` workers spinning for `window` (plus a margin, so that they
    /// outlast the foreground's timing).
    fn start(
        background: Background,
        workers: u64,
        window: Duration,
    ) -> Result<Running, ProbeError> {
        let ms = u64::try_from((window + MARGIN).as_millis()).unwrap_or(u64::MAX);
        let n = usize::try_from(workers).unwrap_or(usize::MAX).max(1);
        match background {
            Background::None => Ok(Running::None),
            Background::Processes(nice) => {
                let pool = Pool::builder()
                    .processes(n)
                    .worker_nice(nice)
                    .build()
                    .map_err(ProbeError::Pool)?;
                let burns = (0..n)
                    .map(|_| pool.submit_task(burn, (ms,)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(ProbeError::Pool)?;
                Ok(Running::Processes(pool, burns))
            }
            Background::Threads => {
                let pool = Pool::builder()
                    .threads(n)
                    .name_prefix("probe-burn")
                    .build()
                    .map_err(ProbeError::Pool)?;
                let burns = (0..n)
                    .map(|_| pool.submit(move || burn::call(ms)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(ProbeError::Pool)?;
                Ok(Running::Threads(pool, burns))
            }
        }
    }

    /// Waits for the background to finish and shuts its pool down.
    fn stop(self) -> Result<(), ProbeError> {
        let (pool, burns) = match self {
            Running::None => return Ok(()),
            Running::Processes(pool, burns) | Running::Threads(pool, burns) => (pool, burns),
        };
        for b in burns {
            b.wait()
                .map_err(|e| ProbeError::Measure(format!("a background task failed: {e}")))?;
        }
        pool.shutdown(martelli::Shutdown::Wait);
        Ok(())
    }
}

/// Times 1 ms sleeps of this thread for `window`; appends each overrun in µs.
fn time_sleeps(window: Duration, out: &mut Vec<f64>) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        let t = Instant::now();
        std::thread::sleep(SLEEP);
        out.push(t.elapsed().saturating_sub(SLEEP).as_secs_f64() * 1e6);
    }
}

/// Time the background gets to start spinning before the foreground is timed.
const SETTLE: Duration = Duration::from_millis(30);

/// How much longer than the foreground's window the background spins, so that a worker that
/// started late still covers it.
const MARGIN: Duration = Duration::from_millis(20);

/// Runs one scenario for `window`: starts its background, times the foreground, stops it.
pub(crate) fn run_scenario(
    background: Background,
    workers: u64,
    window: Duration,
    out: &mut Vec<f64>,
) -> Result<(), ProbeError> {
    let running = Running::start(background, workers, window + SETTLE)?;
    std::thread::sleep(SETTLE);
    time_sleeps(window, out);
    running.stop()
}

/// Measures the five scenarios over `rounds` rounds of `window` each.
pub(crate) fn measure(
    ctx: &super::Ctx,
    notes: &mut super::Notes,
) -> Result<Foreground, ProbeError> {
    let rounds = ctx.pick(1, 3);
    let window = Duration::from_millis(u64::from(ctx.pick(300, 500)));
    let workers = ctx.cores;
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); Background::ALL.len()];
    let mut failed: Vec<Option<String>> = vec![None; Background::ALL.len()];
    for round in 0..rounds {
        for (i, &(key, background)) in Background::ALL.iter().enumerate() {
            if failed[i].is_some() {
                continue;
            }
            ctx.step(&format!(
                "foreground: {key}, round {} of {rounds}",
                round + 1
            ));
            let path = format!("foreground.{key}");
            if let Err(e) = ctx.row(&path, || {
                run_scenario(background, workers, window, &mut samples[i])
            }) {
                failed[i] = Some(format!("not available: {e}"));
            }
        }
    }
    let latencies: Vec<Option<Latency>> = samples
        .iter()
        .zip(&failed)
        .map(|(s, f)| {
            if f.is_some() {
                None
            } else {
                Latency::from_samples(s)
            }
        })
        .collect();
    for (i, why) in failed.into_iter().enumerate() {
        if let Some(why) = why {
            notes.insert(&format!("foreground.{}", Background::ALL[i].0), why);
        }
    }
    let idle = latencies[0].clone();
    let scenario = |l: &Option<Latency>| {
        l.clone().map(|latency| {
            let over = |a: f64, b: Option<f64>| b.map_or(f64::NAN, |b| a / b.max(1e-3));
            Scenario {
                p50_over_idle: over(latency.p50, idle.as_ref().map(|i| i.p50)),
                p99_over_idle: over(latency.p99, idle.as_ref().map(|i| i.p99)),
                latency,
            }
        })
    };
    Ok(Foreground {
        sleep_us: SLEEP.as_micros() as u64,
        seconds_per_scenario: window.as_secs_f64() * f64::from(rounds),
        background_workers: workers,
        idle: scenario(&latencies[0]),
        processes_nice_0: scenario(&latencies[1]),
        processes_nice_10: scenario(&latencies[2]),
        processes_nice_19: scenario(&latencies[3]),
        threads: scenario(&latencies[4]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let l = Latency::from_samples(&samples).expect("samples");
        assert_eq!(l.p50, 50.5);
        assert!((l.p99 - 99.01).abs() < 1e-9, "{l:?}");
        assert_eq!((l.max, l.mean, l.samples), (100.0, 50.5, 100));
        assert!(Latency::from_samples(&[]).is_none());
    }

    #[test]
    fn scenarios_have_stable_keys() {
        assert_eq!(
            Background::from_key("processes_nice_10"),
            Some(Background::Processes(10))
        );
        assert_eq!(Background::from_key("threads"), Some(Background::Threads));
        assert_eq!(Background::from_key("nice"), None);
    }

    #[test]
    fn burn_spins_for_its_time_on_a_thread_pool() {
        let mut out = Vec::new();
        run_scenario(Background::Threads, 1, Duration::from_millis(20), &mut out)
            .expect("a thread pool burns");
        assert!(!out.is_empty());
        assert!(out.iter().all(|&l| l >= 0.0));
        let t = Instant::now();
        burn::call(5);
        assert!(t.elapsed() >= Duration::from_millis(5));
    }
}
