//! The thread pool's queue and workers, as the pool uses them.

use crate::Pool;
use crate::sync::{AtomicBool, Ordering};
use std::sync::Arc;

/// Rule 3 under concurrency: jobs moving from the inbox to the outbox are always counted, so a
/// snapshot of the queue never holds more than the bound.
#[test]
fn the_bound_holds_while_workers_move_the_inbox_over() {
    const BOUND: usize = 3;
    let pool = Arc::new(
        Pool::builder()
            .threads(2)
            .queue_bound(BOUND)
            .build()
            .expect("a small pool starts"),
    );
    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (pool, done) = (Arc::clone(&pool), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut most = 0;
            while !done.load(Ordering::Acquire) {
                most = most.max(pool.queued());
            }
            most
        })
    };
    let submitters: Vec<_> = (0..3u64)
        .map(|s| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                let futures: Vec<_> = (0..2_000u64)
                    .map(|i| pool.submit(move || s * i).expect("the pool is open"))
                    .collect();
                futures
                    .into_iter()
                    .map(|f| f.wait().unwrap_or(0))
                    .sum::<u64>()
            })
        })
        .collect();
    let total: u64 = submitters
        .into_iter()
        .map(|t| t.join().expect("a submitter does not panic"))
        .sum();
    done.store(true, Ordering::Release);
    let most = monitor.join().expect("the monitor does not panic");
    assert_eq!(total, (0..3u64).map(|s| s * 1_999 * 2_000 / 2).sum::<u64>());
    assert!(
        most <= BOUND,
        "{most} jobs were queued under a bound of {BOUND}"
    );
}
