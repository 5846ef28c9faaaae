//! A CPU pipeline: a producer cuts a range of numbers into chunks, one consumer per core counts the
//! primes in each chunk, and the main thread adds the counts up.
//!
//! ```text
//! cargo run --release -p martelli --example cpu_pipeline             # primes below 2,000,000
//! cargo run --release -p martelli --example cpu_pipeline -- 10000000
//! ```
//!
//! CPU-bound Rust code runs in parallel on threads (there is no interpreter lock), so the thread
//! backend is the right tier here; the work queue hands chunks to whichever worker is free, which
//! balances chunks of uneven cost (larger numbers take longer to test) without any planning.

use martelli::{JoinableQueue, Pool, available_cores};
use std::error::Error;
use std::ops::Range;
use std::time::{Duration, Instant};

/// Counts the primes in `range` by trial division (deliberately plain CPU work).
fn count_primes(range: Range<u64>) -> u64 {
    range
        .filter(|&n| n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .count() as u64
}

/// Counts the primes below `limit` with `workers` consumers; returns the count and the time taken.
pub(crate) fn run(limit: u64, workers: usize) -> Result<(u64, Duration), Box<dyn Error>> {
    const CHUNK: u64 = 10_000;
    let start = Instant::now();
    let pool = Pool::threads(workers)?;
    let chunks: JoinableQueue<Range<u64>> = JoinableQueue::bounded(workers * 4);
    let counts: JoinableQueue<u64> = JoinableQueue::new();
    pool.consume(count_primes, &chunks)
        .output(&counts)
        .start()?;

    let mut lo = 0;
    while lo < limit {
        let hi = (lo + CHUNK).min(limit);
        chunks.put(lo..hi)?;
        lo = hi;
    }
    chunks.join(); // every chunk counted, and every count already in `counts`
    let mut total = 0;
    while let Ok(count) = counts.try_take() {
        total += *count;
    }
    Ok((total, start.elapsed()))
}

fn main() -> Result<(), Box<dyn Error>> {
    let limit = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(2_000_000);
    let workers = available_cores();
    let (parallel, elapsed) = run(limit, workers)?;
    println!("{parallel} primes below {limit}: {elapsed:.2?} on {workers} worker(s)");
    let start = Instant::now();
    let sequential = count_primes(0..limit);
    println!("sequential check: {sequential} in {:.2?}", start.elapsed());
    if parallel != sequential {
        return Err("the pipeline and the sequential count disagree".into());
    }
    Ok(())
}
