//! The cluster benchmark: no-op tasks through Redis Streams with worker processes, the way
//! `../shared/peers/distributed/bench.py` measures Celery, RQ and a bare Python Streams loop.
//!
//! Each run starts `--workers` worker processes (this binary re-run as `worker`), warms up with 20
//! round trips, then measures
//! - throughput: `--n` no-op tasks submitted one call at a time, until every result is in;
//! - latency: `--lat` sequential submit → result round trips (p50, p99).
//!
//! Each run uses its own queue, so runs do not see each other's leftovers. Prints one JSON line per
//! run and a `SUMMARY` line with the medians over the runs.
//!
//! With `--rate N`, measures a rate limit instead (docs/protocol.md, "Addition 3"): the no-op task
//! is limited to N per second across the workers, `N × (--seconds + 5)` tasks are queued at once,
//! and the run reports how many results arrived in the `--seconds` after the first one, as a rate
//! beside the limit.

use anyhow::bail;
use clap::{Parser, Subcommand};
use martelli::cluster::Client;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "martelli's cluster backend on no-op tasks (see BENCHMARKS.md)")]
struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// The broker.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    url: String,
    /// Tasks in the throughput phase.
    #[arg(long, default_value_t = 10_000)]
    n: usize,
    /// Sequential round trips in the latency phase.
    #[arg(long, default_value_t = 500)]
    lat: usize,
    /// Runs; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Threads (and so task slots) per worker.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Measure a rate limit of this many no-op tasks per second instead of the throughput.
    #[arg(long)]
    rate: Option<u32>,
    /// With --rate: the seconds the rate is measured over.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Measure workflows instead (docs/protocol.md, "Addition 5"): `chain` queues --chains
    /// chains of 3 no-op steps, `chord` one chord of --members no-op members and a no-op
    /// callback; each run reports the time until every chain's (the chord's) result is recorded.
    #[arg(long, value_parser = ["chain", "chord"])]
    workflow: Option<String>,
    /// With --workflow chain: how many chains.
    #[arg(long, default_value_t = 1000)]
    chains: usize,
    /// With --workflow chord: how many members.
    #[arg(long, default_value_t = 1000)]
    members: usize,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Runs one worker process (started by the benchmark itself).
    Worker {
        #[arg(long)]
        queue: String,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Sub::Worker { queue }) = &args.command {
        return martelli_bench::serve_noop(&args.url, queue, args.concurrency);
    }
    if let Some(rate) = args.rate {
        return measure_rate(&args, rate);
    }
    if let Some(kind) = &args.workflow {
        return measure_workflows(&args, kind);
    }
    if args.runs == 0 || args.n == 0 || args.lat == 0 {
        bail!("--runs, --n and --lat must be at least 1");
    }
    let mut throughput = Vec::new();
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    for run in 1..=args.runs {
        let queue = format!("bench-{}-{run}", std::process::id());
        let (tasks_per_s, lats) = with_workers(&args, &queue, |client| measure(client, &args))?;
        let p = |q: f64| lats[((q * lats.len() as f64).ceil() as usize).clamp(1, lats.len()) - 1];
        println!(
            "{{\"run\": {run}, \"tasks_per_s\": {tasks_per_s:.0}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}}}",
            p(0.5),
            p(0.99)
        );
        throughput.push(tasks_per_s);
        p50.push(p(0.5));
        p99.push(p(0.99));
    }
    println!(
        "SUMMARY {{\"mode\": \"martelli\", \"n\": {}, \"lat_n\": {}, \"runs\": {}, \"workers\": {}, \
         \"concurrency\": {}, \"median_tasks_per_s\": {:.0}, \"median_latency_median_ms\": {:.3}, \
         \"median_latency_p99_ms\": {:.3}}}",
        args.n,
        args.lat,
        args.runs,
        args.workers,
        args.concurrency,
        median(&mut throughput),
        median(&mut p50),
        median(&mut p99)
    );
    Ok(())
}

/// `--rate`: one run with the no-op task limited to `rate` per second across the workers.
fn measure_rate(args: &Args, rate: u32) -> anyhow::Result<()> {
    if rate == 0 || args.seconds == 0 {
        bail!("--rate and --seconds must be at least 1");
    }
    let queue = format!("bench-rate-{}", std::process::id());
    let (counted, observed) = with_workers(args, &queue, |client| {
        // Warm-up without a limit.
        martelli_bench::warm_up(client)?;
        client.set_rate_limit(
            martelli_bench::NOOP,
            martelli::cluster::RateLimit::per_second(rate),
        )?;
        // Let every worker read the limit (they read it every 100 ms).
        std::thread::sleep(std::time::Duration::from_millis(500));
        let n = usize::try_from(u64::from(rate) * (args.seconds + 5))?;
        let futures = (0..n)
            .map(|_| client.submit_raw(martelli_bench::NOOP, Vec::new()))
            .collect::<Result<Vec<_>, _>>()?;
        let window = std::time::Duration::from_secs(args.seconds);
        let mut first = None;
        let mut counted = 0usize;
        for future in futures {
            future.wait()?;
            let now = Instant::now();
            let t0 = *first.get_or_insert(now);
            if now - t0 <= window {
                counted += 1;
            } else {
                break;
            }
        }
        client.clear_rate_limit(martelli_bench::NOOP)?;
        // The count includes the first result, at the window's start: N + 1 results span N
        // intervals.
        let observed = counted.saturating_sub(1) as f64 / args.seconds as f64;
        Ok((counted, observed))
    })?;
    println!(
        "SUMMARY {{\"mode\": \"martelli-rate\", \"limit_per_s\": {rate}, \"seconds\": {}, \
         \"workers\": {}, \"concurrency\": {}, \"results_in_window\": {counted}, \
         \"observed_per_s\": {observed:.2}, \"deviation_pct\": {:.2}}}",
        args.seconds,
        args.workers,
        args.concurrency,
        (observed - f64::from(rate)) / f64::from(rate) * 100.0
    );
    Ok(())
}

/// `--workflow`: `--runs` runs of 1,000 chains of 3 no-op steps, or of one chord, each on a queue
/// of its own with fresh workers; the time from the first submission until every result is
/// recorded (read by id, every 5 ms: workflows answer by record, not on a reply list).
fn measure_workflows(args: &Args, kind: &str) -> anyhow::Result<()> {
    use martelli::cluster::Step;
    let mut seconds = Vec::new();
    for run in 1..=args.runs.max(1) {
        let queue = format!("bench-{kind}-{}-{run}", std::process::id());
        let s = with_workers(args, &queue, |client| {
            martelli_bench::warm_up(client)?;
            let noop = || Step::raw(martelli_bench::NOOP, Vec::new()).whole();
            let t0 = Instant::now();
            let mut waiting: Vec<String> = if kind == "chain" {
                (0..args.chains)
                    .map(|_| {
                        client
                            .chain([noop(), noop(), noop()])
                            .map(|c| c.id().to_owned())
                    })
                    .collect::<Result<_, _>>()?
            } else {
                vec![
                    client
                        .chord((0..args.members).map(|_| noop()), noop())?
                        .id()
                        .to_owned(),
                ]
            };
            while !waiting.is_empty() {
                let mut still = Vec::with_capacity(waiting.len());
                for id in waiting {
                    match client.status(&id)? {
                        Some(r) if r.state.is_ended() => {
                            if r.state != martelli::cluster::RecordState::Done {
                                bail!("workflow {id} ended {:?}", r.error());
                            }
                        }
                        _ => still.push(id),
                    }
                }
                waiting = still;
                if !waiting.is_empty() {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
            Ok(t0.elapsed().as_secs_f64())
        })?;
        println!("{{\"run\": {run}, \"workflow\": \"{kind}\", \"seconds\": {s:.3}}}");
        seconds.push(s);
    }
    let (what, tasks) = if kind == "chain" {
        (format!("{} chains of 3", args.chains), args.chains * 3)
    } else {
        (
            format!("1 chord of {} + callback", args.members),
            args.members + 1,
        )
    };
    let median_s = median(&mut seconds);
    println!(
        "SUMMARY {{\"mode\": \"martelli-{kind}\", \"what\": \"{what}\", \"runs\": {}, \
         \"workers\": {}, \"concurrency\": {}, \"median_s\": {median_s:.3}, \
         \"tasks_per_s\": {:.0}}}",
        args.runs,
        args.workers,
        args.concurrency,
        tasks as f64 / median_s
    );
    Ok(())
}

/// Runs `f` with a client on `queue` and `--workers` fresh worker processes serving it.
fn with_workers<T>(
    args: &Args,
    queue: &str,
    f: impl FnOnce(&Client) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    martelli_bench::with_workers(&args.url, queue, args.workers, args.concurrency, f)
}

fn measure(client: &Client, args: &Args) -> anyhow::Result<(f64, Vec<f64>)> {
    martelli_bench::warm_up(client)?;
    let t0 = Instant::now();
    let futures = (0..args.n)
        .map(|_| client.submit_raw(martelli_bench::NOOP, Vec::new()))
        .collect::<Result<Vec<_>, _>>()?;
    for future in futures {
        future.wait()?;
    }
    let tasks_per_s = args.n as f64 / t0.elapsed().as_secs_f64();
    let mut lats = Vec::with_capacity(args.lat);
    for _ in 0..args.lat {
        let t = Instant::now();
        client
            .submit_raw(martelli_bench::NOOP, Vec::new())?
            .wait()?;
        lats.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lats.sort_by(f64::total_cmp);
    Ok((tasks_per_s, lats))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
