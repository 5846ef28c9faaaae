//! The same CPU-bound job on each tier this machine offers: inline (1 core), then threads (all cores).
//!
//! ```text
//! cargo run --release --example tiers
//! ```
//!
//! Pass a pool spec to try another tier: `cargo run --release --example tiers -- threads:2`.

use martelli::{Pool, TaskResult};
use std::time::Instant;

/// About 50 ms of arithmetic on a current core in release mode.
fn work(seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..40_000_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

fn run(pool: &Pool, chunks: u64) -> TaskResult<(u64, f64)> {
    let start = Instant::now();
    let mut checksum = 0u64;
    for r in pool.map(work, 0..chunks).chunk(1) {
        checksum = checksum.wrapping_add(r?);
    }
    Ok((checksum, start.elapsed().as_secs_f64()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let chunks = 8;
    let specs: Vec<String> = match std::env::args().nth(1) {
        Some(spec) => vec!["inline".into(), spec],
        None => vec!["inline".into(), "threads".into()],
    };
    println!(
        "{chunks} chunks of CPU-bound work, cores available: {}",
        martelli::available_cores()
    );
    let mut baseline = None;
    for spec in &specs {
        let pool = Pool::from_spec(spec)?;
        let (checksum, secs) = run(&pool, chunks)?;
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
