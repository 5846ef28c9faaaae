//! The same CPU-bound job on each tier: inline (1 core), then threads (all cores), or any tier you
//! name. One setting moves it; the code does not change.
//!
//! ```text
//! cargo run --release --example tiers                        # inline, then threads
//! cargo run --release --example tiers -- processes:2         # inline, then 2 worker processes
//! cargo run --release --example tiers -- async               # inline, then the event loop
//! cargo run --release --features cluster --example tiers -- redis://127.0.0.1:6379
//! ```
//!
//! On a cluster the tasks need workers: start this same program as one on any machine that reaches
//! the broker (`MARTELLI_CLUSTER_WORKER=redis://127.0.0.1:6379 ./tiers`), and it serves the job's
//! tasks until it gets SIGTERM or SIGINT.
//!
//! Arguments: `[spec] [chunks] [rounds]` — the tier to set beside inline, how many chunks of work
//! (8), and the rounds of arithmetic in each (40,000,000, about 50 ms on a current core).
//!
//! The job is a [`#[martelli::task]`](martelli::task) mapped with `map_task`, the form every tier
//! runs: a closure could not cross to a worker process or a cluster worker.

use martelli::{Pool, Report, TaskResult};
use std::time::Instant;

/// `rounds` rounds of xorshift arithmetic from `seed`: CPU-bound work.
#[martelli::task]
fn work(seed: u64, rounds: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

fn run(pool: &Pool, chunks: u64, rounds: u64) -> TaskResult<(u64, f64)> {
    let start = Instant::now();
    let mut checksum = 0u64;
    for r in pool
        .map_task(work, (0..chunks).map(|seed| (seed, rounds)))
        .chunk(1)
    {
        checksum = checksum.wrapping_add(r?);
    }
    Ok((checksum, start.elapsed().as_secs_f64()))
}

/// The argument at `index` as a number, or `default` when it is absent.
fn number(index: usize, default: u64) -> Result<u64, String> {
    match std::env::args().nth(index) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| format!("argument {index} must be a whole number, not {text:?}")),
    }
}

fn main() -> Result<(), Report> {
    // In a process started as a worker (a process pool's, or a cluster worker), this serves tasks
    // and never returns.
    martelli::init();
    let specs: Vec<String> = match std::env::args().nth(1) {
        Some(spec) => vec!["inline".into(), spec],
        None => vec!["inline".into(), "threads".into()],
    };
    let chunks = number(2, 8).map_err(std::io::Error::other)?;
    let rounds = number(3, 40_000_000).map_err(std::io::Error::other)?;
    println!(
        "{chunks} chunks of CPU-bound work, cores available: {}",
        martelli::available_cores()
    );
    let mut baseline = None;
    for spec in &specs {
        let pool = Pool::from_spec(spec)?;
        let (checksum, secs) = run(&pool, chunks, rounds)?;
        let speedup = baseline.map_or(1.0, |b: f64| b / secs);
        baseline.get_or_insert(secs);
        println!(
            "{:<12} {} workers  {:>7.3} s  speedup {:>5.2}x  (checksum {checksum:016x})",
            spec,
            pool.workers(),
            secs,
            speedup
        );
    }
    Ok(())
}
