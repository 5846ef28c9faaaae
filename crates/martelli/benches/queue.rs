//! MPMC throughput: 2 producer threads × 2 consumer threads move N small items through a queue
//! bounded at 1024, side by side with crossbeam-channel, flume and std::sync::mpsc in one run.
//!
//! martelli's figure includes the join accounting: every consumer calls `task_done` per item and the
//! clock stops when `join` returns (as in Python's `queue.Queue` peer). The channels have no such
//! accounting; their clock stops when the consumers have received every item. A reference row,
//! `crossbeam+counter`, adds one shared counter to crossbeam-channel: the least exact join
//! accounting can cost over a channel. std's receiver cannot
//! be shared, so its two consumers share it behind a mutex (the usual way to get MPMC from mpsc).
//!
//! ```text
//! cargo bench -p martelli --bench queue            # N=1000000 REPS=7 by default
//! N=200000 REPS=5 cargo bench -p martelli --bench queue
//! ```
//!
//! The queues run interleaved, one repetition of each in turn, so that a change in the machine's load
//! affects them alike. Prints a table, then one JSON line per queue (for `scripts/bench-queue.sh`).

use martelli::JoinableQueue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const PRODUCERS: usize = 2;
const CONSUMERS: usize = 2;
const CAPACITY: usize = 1024;

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("{name}={v:?} is not a number; using {default}");
            default
        }),
        Err(_) => default,
    }
}

/// One repetition through martelli's queue: the clock runs from the producers' start until `join`
/// returns, which is when every item has been taken *and* marked done.
fn martelli_rep(n: usize) -> Duration {
    let q = JoinableQueue::bounded(CAPACITY);
    let go = Arc::new(Barrier::new(PRODUCERS + 1));
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let q = q.clone();
            thread::spawn(move || {
                let mut sum = 0u64;
                while let Ok(x) = q.get() {
                    sum = sum.wrapping_add(x);
                    q.task_done().expect("one task_done per item");
                }
                sum
            })
        })
        .collect();
    let per = (n / PRODUCERS) as u64;
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|_| {
            let (q, go) = (q.clone(), Arc::clone(&go));
            thread::spawn(move || {
                go.wait();
                for i in 0..per {
                    q.put(i).expect("queue open");
                }
            })
        })
        .collect();
    go.wait();
    let start = Instant::now();
    for p in producers {
        p.join().expect("producer panicked");
    }
    q.join();
    let elapsed = start.elapsed();
    q.close();
    for c in consumers {
        c.join().expect("consumer panicked");
    }
    elapsed
}

/// One repetition through a channel: the clock runs from the producers' start until the consumers
/// have received every item and seen the channel disconnected.
fn channel_rep<S, R>(
    n: usize,
    make: impl FnOnce() -> (S, R),
    send: impl Fn(&S, u64) + Send + Sync + 'static,
    consumer: impl Fn(R) -> u64 + Send + Sync + Clone + 'static,
) -> Duration
where
    S: Send + Sync + 'static,
    R: Clone + Send + 'static,
{
    let (tx, rx) = make();
    let go = Arc::new(Barrier::new(PRODUCERS + 1));
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let (rx, consumer) = (rx.clone(), consumer.clone());
            thread::spawn(move || consumer(rx))
        })
        .collect();
    drop(rx);
    let tx = Arc::new(tx);
    let send = Arc::new(send);
    let per = (n / PRODUCERS) as u64;
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|_| {
            let (tx, send, go) = (Arc::clone(&tx), Arc::clone(&send), Arc::clone(&go));
            thread::spawn(move || {
                go.wait();
                for i in 0..per {
                    send(&tx, i);
                }
            })
        })
        .collect();
    drop(tx);
    go.wait();
    let start = Instant::now();
    for p in producers {
        p.join().expect("producer panicked");
    }
    // Every sender is gone now: the consumers drain the channel and see it disconnected.
    for c in consumers {
        c.join().expect("consumer panicked");
    }
    start.elapsed()
}

fn median(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort_unstable();
    (
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
    )
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects queues by name.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let n = env_usize("N", 1_000_000);
    let reps = env_usize("REPS", 7).max(1);
    type Rep = Box<dyn Fn(usize) -> Duration>;
    let queues: Vec<(&str, Rep)> = vec![
        ("martelli", Box::new(martelli_rep)),
        (
            "crossbeam-channel",
            Box::new(|n| {
                channel_rep(
                    n,
                    || crossbeam_channel::bounded::<u64>(CAPACITY),
                    |tx, i| tx.send(i).expect("receivers alive"),
                    |rx| rx.iter().fold(0u64, u64::wrapping_add),
                )
            }),
        ),
        (
            // A reference, not a peer: crossbeam-channel plus one shared counter that every send
            // increments and every receive decrements — the least that exact join accounting over a
            // channel adds. martelli's queue pays this and its close bookkeeping.
            "crossbeam+counter",
            Box::new(|n| {
                channel_rep(
                    n,
                    || {
                        let (tx, rx) = crossbeam_channel::bounded::<u64>(CAPACITY);
                        let count = Arc::new(AtomicU64::new(0));
                        ((tx, Arc::clone(&count)), (rx, count))
                    },
                    |(tx, count), i| {
                        count.fetch_add(1, Ordering::SeqCst);
                        tx.send(i).expect("receivers alive")
                    },
                    |(rx, count)| {
                        rx.iter().fold(0u64, |sum, x| {
                            count.fetch_sub(1, Ordering::SeqCst);
                            sum.wrapping_add(x)
                        })
                    },
                )
            }),
        ),
        (
            "flume",
            Box::new(|n| {
                channel_rep(
                    n,
                    || flume::bounded::<u64>(CAPACITY),
                    |tx, i| tx.send(i).expect("receivers alive"),
                    |rx| rx.iter().fold(0u64, u64::wrapping_add),
                )
            }),
        ),
        (
            "std-mpsc",
            Box::new(|n| {
                channel_rep(
                    n,
                    || {
                        let (tx, rx) = std::sync::mpsc::sync_channel::<u64>(CAPACITY);
                        (tx, Arc::new(Mutex::new(rx)))
                    },
                    |tx, i| tx.send(i).expect("receiver alive"),
                    |rx| {
                        let mut sum = 0u64;
                        loop {
                            let next = rx.lock().expect("no consumer panics").recv();
                            match next {
                                Ok(x) => sum = sum.wrapping_add(x),
                                Err(_) => return sum,
                            }
                        }
                    },
                )
            }),
        ),
    ];
    println!(
        "MPMC {PRODUCERS} producers x {CONSUMERS} consumers, {n} items, bound {CAPACITY}, median of {reps}"
    );
    println!(
        "{:<20} {:>14} {:>12} {:>10}",
        "queue", "items/s", "ns/item", "vs crossbeam"
    );
    let selected: Vec<&(&str, Rep)> = queues
        .iter()
        .filter(|(name, _)| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str())))
        .collect();
    for (_, rep) in &selected {
        rep(n / 10); // warm up: threads, allocator, caches
    }
    // Interleave the queues rep by rep, so a change in the machine's load hits all of them alike.
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(reps); selected.len()];
    for _ in 0..reps {
        for (i, (_, rep)) in selected.iter().enumerate() {
            samples[i].push(rep(n));
        }
    }
    let results: Vec<(&str, Duration, Duration, Duration)> = selected
        .iter()
        .zip(samples)
        .map(|((name, _), samples)| {
            let (med, min, max) = median(samples);
            (*name, med, min, max)
        })
        .collect();
    let crossbeam = results
        .iter()
        .find(|r| r.0 == "crossbeam-channel")
        .map(|r| r.1);
    for (name, med, _, _) in &results {
        let items_per_s = n as f64 / med.as_secs_f64();
        let ratio = crossbeam.map(|c| c.as_secs_f64() / med.as_secs_f64());
        println!(
            "{name:<20} {items_per_s:>14.0} {:>12.1} {:>10}",
            med.as_nanos() as f64 / n as f64,
            ratio.map_or("-".to_owned(), |r| format!("{r:.2}x")),
        );
    }
    for (name, med, min, max) in &results {
        println!(
            "{{\"bench\":\"queue_mpmc_2x2\",\"impl\":\"{name}\",\"items\":{n},\"seconds\":{{\"median\":{},\"min\":{},\"max\":{},\"n\":{reps}}},\"items_per_s_median\":{}}}",
            med.as_secs_f64(),
            min.as_secs_f64(),
            max.as_secs_f64(),
            n as f64 / med.as_secs_f64()
        );
    }
}
