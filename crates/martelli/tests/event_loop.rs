//! The event-loop backend: async tasks interleave on one thread, cancellation happens at `.await`
//! points, offloading never stalls the loop, and the blocking-call detector tells a blocked loop from
//! a healthy one.

use martelli::{BlockingReport, CancelToken, Error, Pool, Shutdown, TaskError, TaskOptions};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Sets its flag when dropped: proves a task's future was dropped, not just abandoned.
struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn thousands_of_tasks_wait_at_once_on_one_thread() {
    const N: usize = 5_000;
    let pool = Pool::event_loop().unwrap();
    assert_eq!((pool.kind(), pool.workers()), ("async", 1));
    let gate = CancelToken::new();
    let (waiting_tx, waiting_rx) = channel();
    let futures: Vec<_> = (0..N)
        .map(|i| {
            let gate = gate.clone();
            let waiting = waiting_tx.clone();
            pool.submit_async(async move {
                let thread = std::thread::current().id();
                waiting.send(()).unwrap();
                gate.cancelled().await;
                (i, thread)
            })
            .unwrap()
        })
        .collect();
    // Every task is suspended at its await at the same time: only interleaving makes that possible.
    for _ in 0..N {
        waiting_rx.recv().unwrap();
    }
    gate.cancel();
    let results: Vec<_> = futures.into_iter().map(|f| f.wait().unwrap()).collect();
    let loop_thread = results[0].1;
    assert!(
        results.iter().all(|&(_, t)| t == loop_thread),
        "one thread ran them all"
    );
    assert_eq!(results.iter().map(|r| r.0).sum::<usize>(), N * (N - 1) / 2);
}

#[test]
fn a_timeout_drops_the_task_at_its_next_await() {
    let pool = Pool::event_loop().unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(Arc::clone(&dropped));
    let never = CancelToken::new();
    let fut = pool
        .with(TaskOptions::new().timeout(Duration::from_millis(30)))
        .submit_async(async move {
            let _flag = flag;
            never.cancelled().await;
        })
        .unwrap();
    match fut.wait() {
        Err(TaskError::TimedOut { after }) => assert_eq!(after, Duration::from_millis(30)),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    pool.shutdown(Shutdown::Wait);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the task's future was dropped"
    );
}

#[test]
fn cancel_drops_a_running_task_at_its_await() {
    let pool = Pool::event_loop().unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(Arc::clone(&dropped));
    let (started_tx, started_rx) = channel();
    let never = CancelToken::new();
    let fut = pool
        .submit_async(async move {
            let _flag = flag;
            started_tx.send(()).unwrap();
            never.cancelled().await;
            "unreachable"
        })
        .unwrap();
    started_rx.recv().unwrap();
    assert!(!fut.cancel(), "running: cancel is a request, not a removal");
    assert!(fut.wait().unwrap_err().is_cancelled());
    pool.shutdown(Shutdown::Wait);
    assert!(dropped.load(Ordering::SeqCst));
}

#[test]
fn inside_an_existing_runtime_the_pool_uses_it() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime_thread = std::thread::current().id();
    let ran_on = rt.block_on(async {
        let pool = Pool::event_loop().unwrap();
        let fut = pool
            .submit_async(async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                std::thread::current().id()
            })
            .unwrap();
        let ran_on = fut.await.unwrap();
        // Dropping the pool on the runtime's own thread must not wait on (and so deadlock) the runtime.
        drop(pool);
        ran_on
    });
    assert_eq!(ran_on, runtime_thread);
}

#[test]
fn to_thread_never_stalls_a_timer_on_the_loop() {
    // The blocking function can only return after a timer on the same one-thread loop has ticked three
    // times: if to_thread blocked the loop, the timer could not tick and this would time out.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = rt.block_on(async {
        let (tick_tx, tick_rx) = channel::<()>();
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(5));
            loop {
                interval.tick().await;
                if tick_tx.send(()).is_err() {
                    break;
                }
            }
        });
        let work = martelli::to_thread(move || {
            for _ in 0..3 {
                tick_rx.recv().unwrap();
            }
            "blocking work done"
        });
        let out = tokio::time::timeout(Duration::from_secs(10), work).await;
        ticker.abort();
        out
    });
    assert_eq!(
        out.expect("the loop was stalled").unwrap(),
        "blocking work done"
    );
}

#[test]
fn to_thread_reports_a_panic_as_an_outcome() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let out = rt.block_on(martelli::to_thread(|| -> u8 { panic!("bad input") }));
    assert!(matches!(out, Err(TaskError::Panicked { ref message }) if message == "bad input"));
}

#[test]
fn block_on_works_outside_a_runtime_and_refuses_inside_one() {
    let pool = Pool::event_loop().unwrap();
    let value = pool
        .block_on(async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            5
        })
        .unwrap()
        .unwrap();
    assert_eq!(value, 5);

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let refused = rt.block_on(async { pool.block_on(async { 1 }) });
    let err = refused.unwrap_err();
    assert!(matches!(err, Error::WouldBlockRuntime));
    assert!(err.to_string().contains(".await"), "{err}");
}

#[test]
fn the_blocking_detector_names_a_task_that_blocks_the_loop_and_spares_a_good_one() {
    let reports = Arc::new(Mutex::new(Vec::<BlockingReport>::new()));
    let sink = Arc::clone(&reports);
    let pool = Pool::builder()
        .event_loop()
        .detect_blocking(Duration::from_millis(20))
        .on_blocking(move |r| sink.lock().unwrap().push(r.clone()))
        .build()
        .unwrap();
    let good = pool
        .with(TaskOptions::new().name("good-sleeper"))
        .submit_async(async {
            tokio::time::sleep(Duration::from_millis(60)).await;
        })
        .unwrap();
    good.wait().unwrap();
    assert!(
        reports.lock().unwrap().is_empty(),
        "a task that awaits is not blocking"
    );

    let bad = pool
        .with(TaskOptions::new().name("bad-sleeper"))
        .submit_async(async {
            std::thread::sleep(Duration::from_millis(60)); // blocks the loop
        })
        .unwrap();
    let bad_id = bad.id();
    bad.wait().unwrap();
    let reports = reports.lock().unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].task, Some("bad-sleeper"));
    assert_eq!(reports[0].id, bad_id);
    assert!(reports[0].blocked_for >= Duration::from_millis(60));
    assert!(reports[0].to_string().contains("bad-sleeper"));
}

#[test]
fn async_tasks_also_run_on_thread_pools() {
    // Without an event loop a task holds its worker across awaits, but it runs all the same.
    let threads = Pool::threads(2).unwrap();
    let signal = CancelToken::new();
    let waiter = {
        let signal = signal.clone();
        threads
            .submit_async(async move {
                signal.cancelled().await;
                "signalled"
            })
            .unwrap()
    };
    signal.cancel();
    assert_eq!(waiter.wait().unwrap(), "signalled");
    let inline = Pool::inline();
    assert_eq!(inline.submit_async(async { 3 }).unwrap().wait().unwrap(), 3);
}

#[test]
fn shutdown_cancel_pending_drops_waiting_tasks_and_wait_lets_them_finish() {
    let pool = Pool::event_loop().unwrap();
    let never = CancelToken::new();
    let waiting: Vec<_> = (0..100)
        .map(|_| {
            let never = never.clone();
            pool.submit_async(async move { never.cancelled().await })
                .unwrap()
        })
        .collect();
    pool.shutdown(Shutdown::CancelPending);
    for f in waiting {
        assert!(f.wait().unwrap_err().is_cancelled());
    }
    assert!(matches!(pool.submit_async(async {}), Err(Error::ShutDown)));

    let pool = Pool::event_loop().unwrap();
    let finishing: Vec<_> = (0..100u64)
        .map(|i| {
            pool.submit_async(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                i
            })
            .unwrap()
        })
        .collect();
    pool.shutdown(Shutdown::Wait);
    assert_eq!(
        finishing
            .into_iter()
            .map(|f| f.wait().unwrap())
            .sum::<u64>(),
        4_950
    );
}

#[test]
fn a_queue_bound_limits_tasks_in_flight() {
    let pool = Pool::builder().event_loop().queue_bound(2).build().unwrap();
    let gate = CancelToken::new();
    let held: Vec<_> = (0..2)
        .map(|_| {
            let gate = gate.clone();
            pool.submit_async(async move { gate.cancelled().await })
                .unwrap()
        })
        .collect();
    let refused = pool.try_submit(|| ()).unwrap_err();
    assert!(refused.is_full());
    gate.cancel();
    for f in held {
        f.wait().unwrap();
    }
    pool.try_submit(|| ()).unwrap().wait().unwrap();
}

#[test]
fn map_async_keeps_order_and_never_exceeds_its_concurrency() {
    use std::sync::atomic::AtomicUsize;
    let pool = Pool::event_loop().unwrap();
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let out: Vec<u32> = pool
        .map_async(
            |x: u32| {
                let now = Arc::clone(&now);
                let peak = Arc::clone(&peak);
                async move {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    x * 10
                }
            },
            0..60,
        )
        .concurrency(5)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(out, (0..60).map(|x| x * 10).collect::<Vec<_>>());
    let peak = peak.load(Ordering::SeqCst);
    assert!((2..=5).contains(&peak), "peak concurrency {peak}");
}

#[test]
fn map_async_unordered_returns_every_result_and_each_timeout() {
    let pool = Pool::event_loop().unwrap();
    let mut ok = Vec::new();
    let mut timed_out = 0;
    for r in pool
        .with(TaskOptions::new().timeout(Duration::from_millis(20)))
        .map_async(
            |x: u64| async move {
                if x % 10 == 0 {
                    CancelToken::new().cancelled().await; // never finishes
                }
                x
            },
            0..50,
        )
        .unordered()
    {
        match r {
            Ok(x) => ok.push(x),
            Err(e) => {
                assert!(e.is_timeout(), "{e}");
                timed_out += 1;
            }
        }
    }
    ok.sort_unstable();
    assert_eq!(timed_out, 5);
    assert_eq!(ok, (0..50).filter(|x| x % 10 != 0).collect::<Vec<_>>());
}

/// Every async task ends in exactly one outcome, whatever races with it: a cancel from another
/// thread, a timeout, a panic, a handle dropped before the task ends, a bound full of tasks; and
/// every task's live count is released, so that `Shutdown::Wait` returns and the bound admits again.
/// (A task's token, its future's state and its driver's bookkeeping share one cell; the driver in
/// tokio's task cell points to it.)
#[test]
fn stress_async_outcomes_under_cancel_timeout_panic_and_dropped_handles() {
    const N: u64 = if cfg!(miri) { 50 } else { 2_000 };
    let pool = Pool::builder()
        .event_loop_threads(2)
        .queue_bound(64)
        .build()
        .unwrap();
    let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut kept = Vec::new();
    let mut to_cancel = Vec::new();
    for i in 0..N {
        struct Count(Arc<std::sync::atomic::AtomicU64>);
        impl Drop for Count {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Count(Arc::clone(&dropped));
        let options = match i % 5 {
            3 => TaskOptions::new().timeout(Duration::from_millis(1)),
            _ => TaskOptions::new(),
        };
        let fut = pool
            .with(options)
            .submit_async(async move {
                let _count = count;
                match i % 5 {
                    0 => i,
                    1 => panic!("task {i} panics"),
                    // Waits until cancelled (2), timed out (3), or runs on without its handle (4).
                    2 | 3 => {
                        std::future::pending::<()>().await;
                        unreachable!()
                    }
                    _ => {
                        tokio::time::sleep(Duration::from_micros(50)).await;
                        i
                    }
                }
            })
            .unwrap();
        match i % 5 {
            2 => to_cancel.push(fut),
            4 => drop(fut),
            _ => kept.push((i, fut)),
        }
        if to_cancel.len() == 8 {
            // Cancelled from another thread while the loop's threads poll them.
            let batch = std::mem::take(&mut to_cancel);
            std::thread::spawn(move || {
                for fut in &batch {
                    fut.cancel();
                }
                for fut in batch {
                    assert!(fut.wait().unwrap_err().is_cancelled());
                }
            })
            .join()
            .unwrap();
        }
    }
    for fut in &to_cancel {
        fut.cancel();
    }
    for fut in to_cancel {
        assert!(fut.wait().unwrap_err().is_cancelled());
    }
    for (i, fut) in kept {
        match (i % 5, fut.wait()) {
            (0, Ok(v)) => assert_eq!(v, i),
            (1, Err(TaskError::Panicked { message, .. })) => {
                assert!(message.contains(&format!("task {i} panics")), "{message}")
            }
            (3, Err(TaskError::TimedOut { .. })) => {}
            (4, Ok(v)) => assert_eq!(v, i),
            (kind, other) => panic!("task {i} (kind {kind}): unexpected {other:?}"),
        }
    }
    // Every task is counted out: the bound admits a full set again, and Wait returns.
    let again: Vec<_> = (0..64)
        .map(|i| pool.with(TaskOptions::new()).submit_async(async move { i }))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        again.into_iter().map(|f| f.wait().unwrap()).sum::<u64>(),
        2_016
    );
    pool.shutdown(Shutdown::Wait);
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        N,
        "every task's future was dropped"
    );
}
