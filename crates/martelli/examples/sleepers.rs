//! Many concurrent waits: async tasks on one event-loop thread against OS threads. Prints one JSON
//! line; `scripts/bench-async.sh` runs it beside Python's asyncio and prints the ratios.
//!
//! ```text
//! cargo run --release --example sleepers -- async 100000     # 100,000 tasks each sleeping 10 ms
//! cargo run --release --example sleepers -- queued 100000    # the same, queued behind a busy loop
//! cargo run --release --example sleepers -- threads 10000    # 10,000 threads each sleeping 10 ms
//! cargo run --release --example sleepers -- tokio 100000     # the same on bare tokio: the floor
//! cargo run --release --example sleepers -- baseline         # the process at rest, for RSS deltas
//! ```
//!
//! Peak memory is the process's high-water resident set (`VmHWM` in `/proc/self/status`): Linux only.

use martelli::{Pool, as_completed};
use std::time::{Duration, Instant};

const SLEEP: Duration = Duration::from_millis(10);

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "async".to_owned());
    let n: usize = match args.next() {
        Some(n) => n.parse().map_err(|_| format!("not a count: {n:?}"))?,
        None => 100_000,
    };
    let start = Instant::now();
    let spawned;
    match mode.as_str() {
        "baseline" => {
            let pool = Pool::event_loop()?;
            pool.submit_async(async {})?.wait()?;
            spawned = start.elapsed();
        }
        "async" => {
            // All tasks are alive at once, as with asyncio.gather (which starts none before the loop
            // runs): each waits at a gate that opens once every task is spawned, then sleeps.
            let pool = Pool::event_loop()?;
            let gate = martelli::CancelToken::new();
            let futures = (0..n)
                .map(|_| {
                    let gate = gate.clone();
                    pool.submit_async(async move {
                        gate.cancelled().await;
                        tokio::time::sleep(SLEEP).await
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            spawned = start.elapsed();
            gate.cancel();
            // Wait for all, like asyncio.gather.
            for done in futures {
                done.wait()?;
            }
        }
        "queued" => {
            // All tasks alive at once as asyncio.gather and the tokio floor below have them: created
            // while the loop cannot run them (its one thread is busy with a first task that waits
            // for the spawning to end), so that no task carries a gate of its own. `async` above
            // holds each task at a shared `CancelToken` instead, whose waiter each task pays for.
            let pool = Pool::event_loop()?;
            let (release, hold) = std::sync::mpsc::channel::<()>();
            let (busy, loop_busy) = std::sync::mpsc::channel::<()>();
            let holder = pool.submit_async(async move {
                let _ = busy.send(());
                // Blocks the loop's thread on purpose, until every task is queued.
                let _ = hold.recv();
            })?;
            loop_busy.recv()?;
            // Handles in a vector of the exact size, as the tokio floor keeps its `JoinHandle`s.
            let mut futures = Vec::with_capacity(n);
            for _ in 0..n {
                futures.push(pool.submit_async(async { tokio::time::sleep(SLEEP).await })?);
            }
            spawned = start.elapsed();
            release.send(())?;
            holder.wait()?;
            for done in futures {
                done.wait()?;
            }
        }
        "tokio" => {
            // The floor: the same tasks on a bare tokio current-thread runtime, no martelli.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let mut handles = Vec::with_capacity(n);
            rt.block_on(async {
                for _ in 0..n {
                    handles.push(tokio::spawn(async { tokio::time::sleep(SLEEP).await }));
                }
            });
            spawned = start.elapsed();
            rt.block_on(async {
                for h in handles {
                    let _ = h.await;
                }
            });
        }
        "threads" => {
            let pool = Pool::builder().threads(n).stack_size(256 * 1024).build()?;
            spawned = start.elapsed();
            let futures = (0..n)
                .map(|_| pool.submit(|| std::thread::sleep(SLEEP)))
                .collect::<Result<Vec<_>, _>>()?;
            for done in as_completed(futures) {
                done.wait()?;
            }
            pool.shutdown(martelli::Shutdown::Wait);
        }
        other => {
            return Err(format!(
                "unknown mode {other:?}: use async, queued, tokio, threads or baseline"
            )
            .into());
        }
    }
    let wall = start.elapsed();
    let rss = peak_rss_kib().ok_or("cannot read VmHWM from /proc/self/status (Linux only)")?;
    println!(
        "{{\"mode\":\"{mode}\",\"n\":{n},\"wall_s\":{:.6},\"spawn_s\":{:.6},\"peak_rss_kib\":{rss}}}",
        wall.as_secs_f64(),
        spawned.as_secs_f64()
    );
    Ok(())
}
