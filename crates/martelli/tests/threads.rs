//! Behaviour that needs real concurrency: cancellation, priorities, backpressure, timeouts, shutdown,
//! waiting modes, and never blocking the foreground. Workers are held and released with channels, so no
//! test uses sleeps to synchronise.

use martelli::{
    Error, Pool, Priority, Shutdown, Status, TaskError, TaskOptions, WaitMode, as_completed, wait,
};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Occupies one worker until released; `started` tells when it runs.
fn hold(pool: &Pool) -> (martelli::Future<()>, Sender<()>) {
    let (release_tx, release_rx) = channel::<()>();
    let (started_tx, started_rx) = channel::<()>();
    let fut = pool
        .submit(move || {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv();
        })
        .unwrap();
    started_rx.recv().unwrap();
    (fut, release_tx)
}

fn gated<T: Send + 'static>(pool: &Pool, value: T) -> (martelli::Future<T>, Sender<()>) {
    let (tx, rx): (Sender<()>, Receiver<()>) = channel();
    let fut = pool
        .submit(move || {
            let _ = rx.recv();
            value
        })
        .unwrap();
    (fut, tx)
}

#[test]
fn cancel_of_a_queued_task_removes_it() {
    let pool = Pool::threads(1).unwrap();
    let (blocker, release) = hold(&pool);
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    let queued = pool
        .submit(move || flag.store(true, Ordering::SeqCst))
        .unwrap();
    assert_eq!(queued.status(), Status::Queued);
    assert!(queued.cancel());
    assert!(queued.token().is_cancelled());
    assert!(!queued.cancel(), "a second cancel finds it done");
    release.send(()).unwrap();
    blocker.wait().unwrap();
    assert!(queued.wait().unwrap_err().is_cancelled());
    pool.shutdown(Shutdown::Wait);
    assert!(!ran.load(Ordering::SeqCst), "a cancelled task must not run");
}

#[test]
fn cancel_of_a_running_task_fires_its_token_and_lets_it_finish() {
    let pool = Pool::threads(1).unwrap();
    let (started_tx, started_rx) = channel();
    let fut = pool
        .submit(move || {
            started_tx.send(()).unwrap();
            let mut spins = 0u64;
            while !martelli::is_cancelled() {
                spins += 1;
                std::thread::yield_now();
            }
            spins
        })
        .unwrap();
    started_rx.recv().unwrap();
    assert!(fut.is_running());
    assert!(!fut.cancel(), "a running task is not removed");
    assert!(fut.token().is_cancelled());
    assert!(fut.wait().is_ok(), "it returned on its own, with its value");
}

#[test]
fn as_completed_yields_in_completion_order() {
    let pool = Pool::threads(3).unwrap();
    let (f0, g0) = gated(&pool, 0);
    let (f1, g1) = gated(&pool, 1);
    let (f2, g2) = gated(&pool, 2);
    let mut it = as_completed(vec![f0, f1, f2]);
    g2.send(()).unwrap();
    assert_eq!(it.next().unwrap().wait().unwrap(), 2);
    g0.send(()).unwrap();
    assert_eq!(it.next().unwrap().wait().unwrap(), 0);
    g1.send(()).unwrap();
    assert_eq!(it.next().unwrap().wait().unwrap(), 1);
    assert!(it.next().is_none());
    assert!(!it.timed_out());
}

#[test]
fn as_completed_with_a_timeout_hands_back_the_pending_futures() {
    let pool = Pool::threads(2).unwrap();
    let done = pool.submit(|| 1).unwrap();
    let (slow, gate) = gated(&pool, 2);
    let mut it = as_completed(vec![done, slow]).timeout(Duration::from_millis(50));
    assert_eq!(it.next().unwrap().wait().unwrap(), 1);
    assert!(it.next().is_none());
    assert!(it.timed_out());
    let pending = it.into_pending();
    assert_eq!(pending.len(), 1);
    gate.send(()).unwrap();
    let rest: Vec<_> = pending.into_iter().map(|f| f.wait().unwrap()).collect();
    assert_eq!(rest, [2]);
}

#[test]
fn wait_first_returns_when_one_is_done() {
    let pool = Pool::threads(2).unwrap();
    let (slow, gate) = gated(&pool, "slow");
    let quick = pool.submit(|| "quick").unwrap();
    let waited = wait(vec![slow, quick], WaitMode::First, None);
    assert_eq!(waited.done.len(), 1);
    assert_eq!(waited.pending.len(), 1);
    gate.send(()).unwrap();
    let done: Vec<_> = waited.done.into_iter().map(|f| f.wait().unwrap()).collect();
    assert_eq!(done, ["quick"]);
}

#[test]
fn wait_first_error_returns_at_the_first_error_only() {
    let pool = Pool::threads(3).unwrap();
    let (slow, gate) = gated(&pool, 1u32);
    let ok = pool.submit(|| 2u32).unwrap();
    let ok_id = ok.id();
    // A success alone does not stop FirstError: it waits until the failure.
    let (failing_tx, failing_rx) = channel::<()>();
    let failing = pool
        .submit_fallible(move || -> Result<u32, String> {
            let _ = failing_rx.recv();
            Err("disk full".to_owned())
        })
        .unwrap();
    let failing_id = failing.id();
    let waiter =
        std::thread::spawn(move || wait(vec![slow, ok, failing], WaitMode::FirstError, None));
    failing_tx.send(()).unwrap();
    let waited = waiter.join().unwrap();
    let mut done_ids: Vec<_> = waited.done.iter().map(|f| f.id()).collect();
    done_ids.sort();
    assert_eq!(done_ids, [ok_id, failing_id]);
    assert_eq!(waited.pending.len(), 1);
    gate.send(()).unwrap();
    for f in waited.pending {
        assert_eq!(f.wait().unwrap(), 1);
    }
}

#[test]
fn wait_with_a_timeout_splits_done_and_pending() {
    let pool = Pool::threads(2).unwrap();
    let (slow, gate) = gated(&pool, 0);
    let quick = pool.submit(|| 1).unwrap();
    // The quick task is done before `wait` starts, so a loaded machine cannot push it past the
    // 50 ms timeout: what is checked is the split, not the scheduler's speed.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !quick.is_done() {
        assert!(Instant::now() < deadline, "a no-op task never finished");
        std::thread::sleep(Duration::from_millis(1));
    }
    let waited = wait(
        vec![slow, quick],
        WaitMode::All,
        Some(Duration::from_millis(50)),
    );
    assert_eq!(waited.done.len(), 1);
    assert_eq!(waited.pending.len(), 1);
    gate.send(()).unwrap();
}

#[test]
fn high_priority_overtakes_queued_lower_priorities() {
    let pool = Pool::threads(1).unwrap();
    let (blocker, release) = hold(&pool);
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut futures = Vec::new();
    for (name, priority) in [
        ("low-1", Priority::Low),
        ("normal-1", Priority::Normal),
        ("high-1", Priority::High),
        ("low-2", Priority::Low),
        ("high-2", Priority::High),
        ("normal-2", Priority::Normal),
    ] {
        let order = Arc::clone(&order);
        futures.push(
            pool.with(TaskOptions::new().priority(priority))
                .submit(move || order.lock().unwrap().push(name))
                .unwrap(),
        );
    }
    release.send(()).unwrap();
    blocker.wait().unwrap();
    for f in futures {
        f.wait().unwrap();
    }
    assert_eq!(
        *order.lock().unwrap(),
        ["high-1", "high-2", "normal-1", "normal-2", "low-1", "low-2"]
    );
}

#[test]
fn try_submit_hands_the_task_back_when_the_queue_is_full() {
    let pool = Pool::builder().threads(1).queue_bound(1).build().unwrap();
    let (blocker, release) = hold(&pool);
    let queued = pool.submit(|| 1).unwrap();
    let refused = pool.try_submit(|| 2).unwrap_err();
    assert!(refused.is_full());
    assert_eq!((refused.into_inner())(), 2, "the closure comes back intact");
    release.send(()).unwrap();
    blocker.wait().unwrap();
    assert_eq!(queued.wait().unwrap(), 1);
    assert_eq!(pool.try_submit(|| 3).unwrap().wait().unwrap(), 3);
}

#[test]
fn submit_blocks_while_the_queue_is_full() {
    let pool = Arc::new(Pool::builder().threads(1).queue_bound(1).build().unwrap());
    let (blocker, release) = hold(&pool);
    let _queued = pool.submit(|| ()).unwrap();
    let (done_tx, done_rx) = channel();
    let submitter = {
        let pool = Arc::clone(&pool);
        std::thread::spawn(move || {
            let fut = pool.submit(|| 7).unwrap();
            done_tx.send(()).unwrap();
            fut.wait().unwrap()
        })
    };
    // Backpressure: the submitter cannot get in while the queue is full.
    assert!(done_rx.recv_timeout(Duration::from_millis(100)).is_err());
    release.send(()).unwrap();
    done_rx.recv().unwrap();
    assert_eq!(submitter.join().unwrap(), 7);
    blocker.wait().unwrap();
}

#[test]
fn a_task_past_its_timeout_is_timed_out_and_its_token_fires() {
    let pool = Pool::threads(1).unwrap();
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&saw_cancel);
    let fut = pool
        .with(TaskOptions::new().timeout(Duration::from_millis(30)))
        .submit(move || {
            while !martelli::is_cancelled() {
                std::thread::yield_now();
            }
            flag.store(true, Ordering::SeqCst);
        })
        .unwrap();
    match fut.wait() {
        Err(TaskError::TimedOut { after }) => assert_eq!(after, Duration::from_millis(30)),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    pool.shutdown(Shutdown::Wait);
    assert!(
        saw_cancel.load(Ordering::SeqCst),
        "the task saw its token fire"
    );
}

#[test]
fn the_pool_default_timeout_applies_and_a_task_option_replaces_it() {
    let pool = Pool::builder()
        .threads(2)
        .task_timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let spin = || {
        while !martelli::is_cancelled() {
            std::thread::yield_now();
        }
    };
    assert!(pool.submit(spin).unwrap().wait().unwrap_err().is_timeout());
    let quick = pool
        .with(TaskOptions::new().timeout(Duration::from_secs(60)))
        .submit(|| 5)
        .unwrap();
    assert_eq!(quick.wait().unwrap(), 5);
}

#[test]
fn shutdown_wait_runs_every_queued_task() {
    let pool = Pool::threads(2).unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let futures: Vec<_> = (0..500)
        .map(|_| {
            let count = Arc::clone(&count);
            pool.submit(move || {
                count.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap()
        })
        .collect();
    pool.shutdown(Shutdown::Wait);
    assert_eq!(count.load(Ordering::SeqCst), 500);
    assert!(futures.into_iter().all(|f| f.wait().is_ok()));
}

#[test]
fn shutdown_cancel_pending_cancels_queued_and_signals_running() {
    let pool = Pool::threads(1).unwrap();
    let (started_tx, started_rx) = channel();
    let running = pool
        .submit(move || {
            started_tx.send(()).unwrap();
            while !martelli::is_cancelled() {
                std::thread::yield_now();
            }
            "stopped"
        })
        .unwrap();
    started_rx.recv().unwrap();
    let queued: Vec<_> = (0..10).map(|i| pool.submit(move || i).unwrap()).collect();
    pool.shutdown(Shutdown::CancelPending);
    assert_eq!(running.wait().unwrap(), "stopped");
    for f in queued {
        assert!(f.wait().unwrap_err().is_cancelled());
    }
}

#[test]
fn dropping_the_pool_finishes_queued_and_running_tasks() {
    let count = Arc::new(AtomicUsize::new(0));
    let futures: Vec<_>;
    {
        let pool = Pool::threads(2).unwrap();
        futures = (0..50)
            .map(|_| {
                let count = Arc::clone(&count);
                pool.submit(move || {
                    std::thread::sleep(Duration::from_millis(1));
                    count.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap()
            })
            .collect();
    }
    assert_eq!(count.load(Ordering::SeqCst), 50);
    assert!(futures.into_iter().all(|f| f.is_done()));
}

#[test]
fn awaiting_on_a_current_thread_runtime_never_blocks_its_timer() {
    // The pool task can only finish after a timer on the runtime has ticked three times. If awaiting the
    // future blocked the runtime's only thread, the timer could never tick and this test would time out.
    let pool = Pool::threads(1).unwrap();
    let (ticks_tx, ticks_rx) = channel::<()>();
    let fut = pool
        .submit(move || {
            for _ in 0..3 {
                ticks_rx.recv().unwrap();
            }
            "computed"
        })
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let out = rt.block_on(async move {
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(10));
            loop {
                interval.tick().await;
                if ticks_tx.send(()).is_err() {
                    break;
                }
            }
        });
        let out = tokio::time::timeout(Duration::from_secs(10), fut).await;
        ticker.abort();
        out
    });
    assert_eq!(out.expect("the runtime was blocked").unwrap(), "computed");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn an_initializer_runs_once_per_worker_and_a_panicking_one_fails_build() {
    let inits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&inits);
    let pool = Pool::builder()
        .threads(3)
        .name_prefix("init-test")
        .initializer(move |w| {
            assert!(w.name().starts_with("init-test-"));
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    assert_eq!(inits.load(Ordering::SeqCst), 3);
    let name = pool
        .submit(|| martelli::WorkerInfo::current().name().to_owned())
        .unwrap()
        .wait()
        .unwrap();
    assert!(name.starts_with("init-test-"), "{name}");
    drop(pool);

    let err = Pool::builder()
        .threads(2)
        .initializer(|w| {
            if w.index() == 1 {
                panic!("no database")
            }
        })
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Initializer { ref message } if message == "no database"));
}

#[test]
fn absurd_settings_are_errors_from_build() {
    let too_many = Pool::threads(1_000_000).unwrap_err();
    assert!(matches!(too_many, Error::InvalidConfig(_)), "{too_many}");
    assert!(too_many.to_string().contains("1000000"));
    let zero_bound = Pool::builder()
        .threads(1)
        .queue_bound(0)
        .build()
        .unwrap_err();
    assert!(zero_bound.to_string().contains("queue_bound(0)"));
    let tiny_stack = Pool::builder()
        .threads(1)
        .stack_size(100)
        .build()
        .unwrap_err();
    assert!(tiny_stack.to_string().contains("stack_size(100)"));
    let zero_timeout = Pool::builder()
        .threads(1)
        .task_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(zero_timeout.to_string().contains("task_timeout(0)"));
}

#[test]
fn settings_the_backend_does_not_read_are_errors_from_build() {
    // Worker processes, cluster workers and tokio's threads run no initializer of the pool and take
    // no stack size from it: refused before anything starts, naming the setting and the backend.
    let mut builders = vec![("processes", Pool::builder().processes(1))];
    #[cfg(feature = "async")]
    builders.push(("async", Pool::builder().event_loop()));
    #[cfg(feature = "cluster")]
    builders.push(("cluster", Pool::builder().cluster("redis://127.0.0.1:1")));
    for (backend, builder) in builders {
        let init = builder.clone().initializer(|_| {}).build().unwrap_err();
        let text = init.to_string();
        assert!(
            text.contains("initializer") && text.contains(backend),
            "{text}"
        );
        let stack = builder.stack_size(1 << 20).build().unwrap_err();
        let text = stack.to_string();
        assert!(
            text.contains("stack_size") && text.contains(backend),
            "{text}"
        );
    }
    // The thread and inline backends read both.
    let pool = Pool::builder()
        .threads(1)
        .stack_size(1 << 20)
        .initializer(|_| {})
        .build();
    assert!(pool.is_ok());
    assert!(Pool::builder().inline().initializer(|_| {}).build().is_ok());
}

#[test]
fn threads_zero_means_one_per_core() {
    let pool = Pool::threads(0).unwrap();
    assert_eq!(pool.workers(), martelli::available_cores());
}

#[test]
fn a_scope_opened_inside_a_worker_of_the_same_pool_does_not_deadlock() {
    // One worker: the outer task occupies it, so the scope's tasks can only run if the waiting worker
    // runs them itself.
    let pool = Arc::new(Pool::threads(1).unwrap());
    let inner_pool = Arc::clone(&pool);
    let fut = pool
        .submit(move || {
            let data = [1u32, 2, 3, 4];
            let sum = AtomicUsize::new(0);
            inner_pool.scope(|s| {
                for x in &data {
                    let sum = &sum;
                    s.submit(move || sum.fetch_add(*x as usize, Ordering::SeqCst))
                        .unwrap();
                }
            });
            sum.load(Ordering::SeqCst)
        })
        .unwrap();
    assert_eq!(
        fut.wait_timeout(Duration::from_secs(10))
            .expect("deadlocked")
            .unwrap(),
        10
    );
}

#[test]
fn a_panicking_scope_body_still_joins_its_tasks() {
    let pool = Pool::threads(2).unwrap();
    let finished = AtomicUsize::new(0);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.scope(|s| {
            for _ in 0..4 {
                let finished = &finished;
                s.submit(move || {
                    std::thread::sleep(Duration::from_millis(5));
                    finished.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
            }
            panic!("scope body fails");
        })
    }));
    assert!(result.is_err());
    assert_eq!(finished.load(Ordering::SeqCst), 4);
}

#[test]
fn wait_timeout_hands_the_future_back() {
    let pool = Pool::threads(1).unwrap();
    let (fut, gate) = gated(&pool, 3);
    let fut = fut.wait_timeout(Duration::from_millis(20)).unwrap_err();
    let fut = fut.try_get().unwrap_err();
    gate.send(()).unwrap();
    assert_eq!(fut.wait().unwrap(), 3);
}

#[test]
fn stress_many_submitters_many_tasks() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = if cfg!(debug_assertions) {
        5_000
    } else {
        50_000
    };
    let pool = Arc::new(Pool::builder().threads(4).queue_bound(64).build().unwrap());
    let submitters: Vec<_> = (0..THREADS)
        .map(|t| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                let futures: Vec<_> = (0..PER_THREAD)
                    .map(|i| pool.submit(move || t * PER_THREAD + i).unwrap())
                    .collect();
                futures
                    .into_iter()
                    .map(|f| f.wait().unwrap())
                    .sum::<usize>()
            })
        })
        .collect();
    let total: usize = submitters.into_iter().map(|h| h.join().unwrap()).sum();
    let n = THREADS * PER_THREAD;
    assert_eq!(total, n * (n - 1) / 2);
}

#[test]
fn stress_cancel_races_with_start() {
    // Cancel and start race for every task: each future must resolve exactly once, as either its value
    // or Cancelled, and a cancelled task must never have run.
    let pool = Pool::threads(2).unwrap();
    for _ in 0..200 {
        let ran = Arc::new(AtomicUsize::new(0));
        let futures: Vec<_> = (0..20)
            .map(|_| {
                let ran = Arc::clone(&ran);
                pool.submit(move || {
                    ran.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap()
            })
            .collect();
        let mut cancelled = 0;
        for f in &futures {
            if f.cancel() {
                cancelled += 1;
            }
        }
        let mut ok = 0;
        for f in futures {
            match f.wait() {
                Ok(()) => ok += 1,
                Err(e) => assert!(e.is_cancelled()),
            }
        }
        assert_eq!(ok + cancelled, 20);
        pool.submit(|| ()).unwrap().wait().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), ok);
    }
}

/// Counts drops of what a task captured and of what it returned.
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn stress_cancel_wait_and_drop_race_on_every_task() {
    // Each task's cell is shared by its queued job, its future and clones of its token. Many
    // threads race cancel, wait, wait_timeout, drop of the future and drop of a token clone against
    // the workers running the jobs, and a `CancelPending` shutdown drops the jobs still queued. Every
    // closure must be dropped exactly once and every returned value exactly once (no double free, no
    // leak), a task whose cancel won must not run, and every waited future resolves once.
    const ROUNDS: usize = if cfg!(debug_assertions) { 20 } else { 100 };
    const RACERS: usize = 4;
    const PER_RACER: usize = 250;
    for round in 0..ROUNDS {
        let pool = Arc::new(Pool::threads(3).unwrap());
        let captured = Arc::new(AtomicUsize::new(0));
        let returned = Arc::new(AtomicUsize::new(0));
        let ran = Arc::new(AtomicUsize::new(0));
        let racers: Vec<_> = (0..RACERS)
            .map(|r| {
                let (pool, captured, returned, ran) = (
                    Arc::clone(&pool),
                    Arc::clone(&captured),
                    Arc::clone(&returned),
                    Arc::clone(&ran),
                );
                std::thread::spawn(move || {
                    let mut cancelled_and_ran = 0;
                    let mut cancels_won = 0;
                    for i in 0..PER_RACER {
                        let guard = DropCount(Arc::clone(&captured));
                        let (out, ran) = (Arc::clone(&returned), Arc::clone(&ran));
                        let future = match pool.submit(move || {
                            let _guard = guard;
                            ran.fetch_add(1, Ordering::SeqCst);
                            DropCount(out)
                        }) {
                            Ok(future) => future,
                            Err(_) => continue, // shut down: the closure was dropped unrun
                        };
                        match (i + r + round) % 6 {
                            0 => drop(future),
                            1 => {
                                let token = future.token().clone();
                                drop(future);
                                std::thread::yield_now();
                                drop(token);
                            }
                            2 => {
                                if future.cancel() {
                                    cancels_won += 1;
                                    if future.wait().is_ok() {
                                        cancelled_and_ran += 1;
                                    }
                                } else {
                                    let _ = future.wait();
                                }
                            }
                            3 => match future.wait_timeout(Duration::from_micros(50)) {
                                Ok(_) => {}
                                Err(future) => {
                                    future.cancel();
                                }
                            },
                            4 => {
                                let _ = future.wait();
                            }
                            _ => {
                                let token = future.token().clone();
                                let canceller = std::thread::spawn(move || token.cancel());
                                let _ = future.wait();
                                canceller.join().unwrap();
                            }
                        }
                    }
                    (cancels_won, cancelled_and_ran)
                })
            })
            .collect();
        // Half the rounds end with queued tasks discarded mid-race.
        if round % 2 == 1 {
            std::thread::sleep(Duration::from_micros(200));
            pool.shutdown(Shutdown::CancelPending);
        }
        let mut cancels_won = 0;
        for racer in racers {
            let (won, ran_anyway) = racer.join().unwrap();
            assert_eq!(ran_anyway, 0, "a task whose cancel won ran");
            cancels_won += won;
        }
        pool.shutdown(Shutdown::Wait);
        drop(pool);
        let ran = ran.load(Ordering::SeqCst);
        let closures = captured.load(Ordering::SeqCst);
        // Submitted or refused, run or discarded: every closure is dropped exactly once.
        assert_eq!(closures, RACERS * PER_RACER);
        assert_eq!(
            returned.load(Ordering::SeqCst),
            ran,
            "every value returned is dropped exactly once"
        );
        assert!(ran + cancels_won <= closures);
    }
}

/// A value whose `Drop` panics.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("this value refuses to be dropped");
    }
}

#[test]
fn a_value_that_panics_on_drop_after_its_future_is_gone_does_not_kill_the_worker() {
    // The future is dropped before the task runs, so the worker holds the last reference to the
    // task and drops its value; the panic must stay there.
    let pool = Pool::threads(1).unwrap();
    let (hold, release) = hold(&pool);
    let (gate_tx, gate_rx) = channel::<()>();
    let doomed = pool
        .submit(move || {
            let _ = gate_rx.recv();
            PanicsOnDrop
        })
        .unwrap();
    drop(doomed);
    release.send(()).unwrap();
    hold.wait().unwrap();
    gate_tx.send(()).unwrap();
    let next = pool.submit(|| 41 + 1).unwrap();
    match next.wait_timeout(Duration::from_secs(30)) {
        Ok(result) => assert_eq!(result.unwrap(), 42),
        Err(_) => panic!("the pool's only worker died"),
    }
}

#[test]
fn a_closure_that_panics_on_drop_still_resolves_its_discarded_future() {
    // A queued task discarded by a CancelPending shutdown: dropping its closure panics, and the
    // future must resolve as cancelled all the same.
    let pool = Pool::threads(1).unwrap();
    let (hold, release) = hold(&pool);
    let guard = PanicsOnDrop;
    let queued = pool
        .submit(move || {
            std::mem::forget(guard);
        })
        .unwrap();
    let pool = Arc::new(pool);
    let shutdown = std::thread::spawn({
        let pool = Arc::clone(&pool);
        move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pool.shutdown(Shutdown::CancelPending)
            }))
            .is_err()
        }
    });
    // The queue is closed and drained in one step: once closed, the task is discarded, not run.
    while !pool.is_shut_down() {
        std::thread::yield_now();
    }
    release.send(()).unwrap();
    let _ = hold.wait();
    match queued.wait_timeout(Duration::from_secs(30)) {
        Ok(result) => assert!(matches!(result, Err(TaskError::Cancelled))),
        Err(_) => panic!("the discarded task's future never resolved"),
    }
    assert!(
        shutdown.join().unwrap(),
        "the closure's panic reaches the caller of shutdown"
    );
}

/// The lazy map with automatic chunks over many tiny items: every input gets exactly one outcome, in
/// input order, and panics (single ones, and runs of neighbours in one chunk) fail only their own
/// inputs, wherever they fall in a chunk.
#[test]
fn lazy_map_of_many_items_keeps_order_and_isolates_every_panic() {
    let pool = Pool::threads(2).unwrap();
    const N: u64 = 200_000;
    let bad = |x: u64| x % 9_973 == 0 || (50_000..50_003).contains(&x) || x == N - 1;
    let out: Vec<_> = pool
        .map(
            move |x: u64| {
                if bad(x) {
                    panic!("item {x} fails on purpose");
                }
                x * 2 + 1
            },
            0..N,
        )
        .collect();
    assert_eq!(out.len(), N as usize);
    for (i, r) in out.into_iter().enumerate() {
        let i = i as u64;
        match r {
            Ok(v) => {
                assert!(!bad(i), "item {i} should have failed");
                assert_eq!(v, i * 2 + 1, "item {i} out of order");
            }
            Err(e) => {
                assert!(bad(i), "item {i} failed: {e}");
                assert!(e.to_string().contains(&format!("item {i} fails")), "{e}");
            }
        }
    }
}

/// Values travel through buffers that are kept and used again from chunk to chunk: dropping a lazy
/// map part-way, with chunks still in flight and values not handed out, drops every value exactly
/// once (none leaks, none is dropped twice), and the values handed out are the right ones.
#[test]
fn a_lazy_map_dropped_part_way_drops_every_value_exactly_once() {
    let pool = Pool::threads(2).unwrap();
    let shared = Arc::new(());
    let tag = Arc::clone(&shared);
    let mut map = pool.map(move |x: u64| (x, Arc::clone(&tag)), 0..1_000_000u64);
    let mut kept = Vec::new();
    for i in 0..100_000u64 {
        let (x, value) = map.next().unwrap().unwrap();
        assert_eq!(x, i);
        if i % 10_000 == 0 {
            kept.push(value);
        }
    }
    drop(map);
    pool.shutdown(martelli::Shutdown::Wait);
    assert_eq!(Arc::strong_count(&shared), 1 + kept.len());
    drop(kept);
    assert_eq!(Arc::strong_count(&shared), 1);
}

/// Automatic chunks still keep the lazy map's memory bounded: with an endless input and a window of
/// two chunks, what it has pulled stays within what was consumed plus two of the largest automatic
/// chunks (16 Ki inputs each), however many items are consumed.
#[test]
fn lazy_map_with_automatic_chunks_pulls_a_bounded_number_of_inputs() {
    let pool = Pool::threads(2).unwrap();
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&pulled);
    let inputs = (0u64..).inspect(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let mut map = pool.map(|x: u64| x + 1, inputs).window(2);
    let mut most_ahead = 0;
    for consumed in 1..=300_000usize {
        assert_eq!(map.next().unwrap().unwrap(), consumed as u64);
        if consumed % 1_000 == 0 {
            most_ahead = most_ahead.max(pulled.load(Ordering::Relaxed) - consumed);
        }
    }
    assert!(
        most_ahead <= 2 * 16 * 1024,
        "{most_ahead} inputs were pulled ahead of the consumer"
    );
}
