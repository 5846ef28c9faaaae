//! Stress: thousands of short runs of producers, consumers, close and join racing each other. Every
//! run checks the accounting exactly (nothing lost, nothing counted twice), and a hang fails the test
//! through a deadline instead of stalling the suite.

use martelli::{JoinableQueue, Pool};
use martelli_testkit::poll::{within, within_each};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

const ITERATIONS: u64 = if cfg!(miri) { 10 } else { 2_000 };
/// A test that is one run (bounded work) must end within this.
const LIMIT: Duration = Duration::from_secs(120);
/// In a test of many runs, each run must end within this (the total grows with the machine's load).
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// A small deterministic generator, so a failing iteration can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn put_get_close_races_lose_nothing() {
    within_each(RUN_LIMIT, |progress| {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for iteration in 0..ITERATIONS {
            let capacity = 1 + (rng.next() % 4) as usize;
            let immediate = rng.next() % 2 == 0;
            let delay = rng.next() % 64;
            // Even iterations exercise the channel flavour (FIFO), odd ones the locked one (LIFO).
            let q = if iteration % 2 == 0 {
                JoinableQueue::bounded(capacity)
            } else {
                JoinableQueue::builder()
                    .lifo()
                    .capacity(capacity)
                    .build()
                    .unwrap()
            };
            let accepted = AtomicU64::new(0);
            let handed_back = AtomicU64::new(0);
            let got = AtomicU64::new(0);
            let discarded = thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        // Bounded, so that a close the scheduler delays cannot make a run long.
                        for i in 0u64..2_000 {
                            match q.put(i) {
                                Ok(()) => accepted.fetch_add(1, Ordering::Relaxed),
                                Err(e) => {
                                    assert_eq!(e.into_inner(), i);
                                    handed_back.fetch_add(1, Ordering::Relaxed);
                                    break;
                                }
                            };
                        }
                    });
                }
                for _ in 0..2 {
                    s.spawn(|| {
                        while q.get().is_ok() {
                            got.fetch_add(1, Ordering::Relaxed);
                            q.task_done().unwrap();
                        }
                    });
                }
                for _ in 0..delay {
                    thread::yield_now();
                }
                if immediate {
                    q.close_now().len() as u64
                } else {
                    q.close();
                    0
                }
            });
            let (accepted, got) = (accepted.into_inner(), got.into_inner());
            assert_eq!(
                accepted,
                got + discarded,
                "iteration {iteration}: every accepted item was got or handed back by close_now"
            );
            assert!(
                handed_back.into_inner() <= 2,
                "a producer's put is refused at most once: it stops there"
            );
            assert_eq!(q.unfinished(), 0, "iteration {iteration}");
            q.join();
            progress.tick();
        }
    });
}

#[test]
fn task_done_and_join_race() {
    within_each(RUN_LIMIT, |progress| {
        let mut rng = XorShift(42);
        for _ in 0..ITERATIONS {
            let items = 1 + rng.next() % 3;
            let q = JoinableQueue::new();
            for i in 0..items {
                q.put(i).unwrap();
            }
            thread::scope(|s| {
                s.spawn(|| {
                    for _ in 0..items {
                        q.get().unwrap();
                        q.task_done().unwrap();
                    }
                });
                s.spawn(|| q.join());
                q.join();
            });
            assert_eq!(q.unfinished(), 0);
            progress.tick();
        }
    });
}

#[test]
fn timeouts_racing_with_puts_strand_no_item() {
    // Getters that time out must not swallow the wake-up meant for a getter that blocks for good.
    within_each(RUN_LIMIT, |progress| {
        let mut rng = XorShift(7);
        for iteration in 0..ITERATIONS / 5 {
            let items = 50u64;
            let capacity = 1 + (rng.next() % 3) as usize;
            let q = if iteration % 2 == 0 {
                JoinableQueue::bounded(capacity)
            } else {
                JoinableQueue::builder()
                    .priority()
                    .capacity(capacity)
                    .build()
                    .unwrap()
            };
            let got = AtomicU64::new(0);
            thread::scope(|s| {
                for c in 0..3u64 {
                    let (q, got) = (&q, &got);
                    s.spawn(move || {
                        let mut turn = c;
                        loop {
                            turn += 1;
                            let item = if turn % 2 == 0 {
                                match q.get_timeout(Duration::from_micros(turn % 50)) {
                                    Ok(item) => Some(item),
                                    Err(e) if e.is_timeout() => None,
                                    Err(_) => return,
                                }
                            } else {
                                match q.get() {
                                    Ok(item) => Some(item),
                                    Err(_) => return,
                                }
                            };
                            if item.is_some() {
                                got.fetch_add(1, Ordering::Relaxed);
                                q.task_done().unwrap();
                            }
                        }
                    });
                }
                for i in 0..items {
                    if i % 3 == 0 {
                        while let Err(e) = q.put_timeout(i, Duration::from_micros(i % 20)) {
                            assert!(e.is_timeout());
                        }
                    } else {
                        q.put(i).unwrap();
                    }
                }
                q.join();
                q.close();
            });
            assert_eq!(got.into_inner(), items);
            progress.tick();
        }
    });
}

#[test]
fn many_producers_and_consumers_with_priorities() {
    within(LIMIT, || {
        const PER_PRODUCER: u64 = 2_000;
        let q = JoinableQueue::builder()
            .priority()
            .capacity(8)
            .build()
            .unwrap();
        let total = AtomicU64::new(0);
        let count = AtomicU64::new(0);
        thread::scope(|s| {
            let producers: Vec<_> = (0..4u64)
                .map(|p| {
                    let q = &q;
                    s.spawn(move || {
                        for i in 0..PER_PRODUCER {
                            q.put((i % 5, p * PER_PRODUCER + i)).unwrap();
                        }
                    })
                })
                .collect();
            for _ in 0..4 {
                s.spawn(|| {
                    while let Ok(item) = q.take() {
                        total.fetch_add(item.1, Ordering::Relaxed);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            for p in producers {
                p.join().unwrap();
            }
            q.join();
            q.close();
        });
        let n = 4 * PER_PRODUCER;
        assert_eq!(count.into_inner(), n);
        assert_eq!(total.into_inner(), n * (n - 1) / 2);
    });
}

#[test]
fn pool_shutdown_racing_with_consumers_loses_no_item() {
    // Items are either processed (their result in the output, spilled over the bound if need be) or
    // still queued in the input; never both, never neither.
    within_each(RUN_LIMIT, |progress| {
        let mut rng = XorShift(99);
        for iteration in 0..ITERATIONS / 10 {
            let items = 40u64;
            let input = if iteration % 2 == 0 {
                JoinableQueue::new()
            } else {
                JoinableQueue::builder().lifo().build().unwrap()
            };
            let output = JoinableQueue::bounded(1 + (rng.next() % 4) as usize);
            let pool = Pool::threads(2).unwrap();
            pool.consume(|n: u64| n, &input)
                .output(&output)
                .start()
                .unwrap();
            for n in 0..items {
                input.put(n).unwrap();
            }
            for _ in 0..rng.next() % 200 {
                thread::yield_now();
            }
            drop(pool);
            let mut seen: Vec<u64> = std::iter::from_fn(|| output.try_get().ok()).collect();
            assert_eq!(input.unfinished(), input.len(), "iteration {iteration}");
            seen.extend(std::iter::from_fn(|| input.try_get().ok()));
            seen.sort_unstable();
            assert_eq!(
                seen,
                (0..items).collect::<Vec<_>>(),
                "iteration {iteration}"
            );
            progress.tick();
        }
    });
}
