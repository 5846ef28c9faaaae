//! Three waits of 3 s, 1 s and 1 s, three ways: one after another (≈ 5 s), on three threads (≈ 3 s), and
//! as async tasks on one thread (≈ 3 s). Async fills the time spent waiting without more threads.
//!
//! ```text
//! cargo run --release --example three_waits              # real durations
//! cargo run --release --example three_waits -- 0.01      # scaled: 30 ms, 10 ms, 10 ms
//! ```

use martelli::Pool;
use std::time::{Duration, Instant};

fn threads_now() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("Threads:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scale: f64 = match std::env::args().nth(1) {
        Some(s) => s
            .parse()
            .map_err(|_| format!("not a scale factor: {s:?}"))?,
        None => 1.0,
    };
    if !(scale > 0.0 && scale.is_finite()) {
        return Err(format!("the scale must be a positive number, not {scale}").into());
    }
    let waits: Vec<Duration> = [3.0, 1.0, 1.0]
        .iter()
        .map(|s| Duration::from_secs_f64(s * scale))
        .collect();
    println!("waits: {waits:?}");

    // 1 core, no concurrency: the waits add up.
    let pool = Pool::inline();
    let start = Instant::now();
    for &w in &waits {
        pool.submit(move || std::thread::sleep(w))?.wait()?;
    }
    report("sequential", start.elapsed(), pool.workers());
    drop(pool);

    // One thread per wait: the waits overlap.
    let pool = Pool::threads(waits.len())?;
    let start = Instant::now();
    let futures = waits
        .iter()
        .map(|&w| pool.submit(move || std::thread::sleep(w)))
        .collect::<Result<Vec<_>, _>>()?;
    for f in futures {
        f.wait()?;
    }
    report("threads", start.elapsed(), pool.workers());
    drop(pool); // joins its three threads

    // One thread, an event loop: the waits overlap at their .await points.
    let pool = Pool::event_loop()?;
    let start = Instant::now();
    let futures = waits
        .iter()
        .map(|&w| pool.submit_async(async move { tokio::time::sleep(w).await }))
        .collect::<Result<Vec<_>, _>>()?;
    for f in futures {
        f.wait()?;
    }
    report("async", start.elapsed(), pool.workers());
    Ok(())
}

fn report(mode: &str, took: Duration, workers: usize) {
    let threads = threads_now().map_or("?".to_owned(), |t| t.to_string());
    println!(
        "{mode:<10} {:>9.3} s   workers: {workers}   threads in the process: {threads}",
        took.as_secs_f64()
    );
}
