//! loom models of martelli's synchronisation: every interleaving (up to a preemption bound) of the
//! operations below is run, and each must keep the rules written at the top of `future.rs` and
//! `cancel.rs`. Run them with `bash scripts/loom.sh`.

use crate::cancel::CancelToken;
use crate::error::TaskError;
use crate::future::promise;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

/// Rule 1: a task cancelled while queued never runs; a task that runs is never reported cancelled by
/// that cancel; exactly one outcome is delivered.
#[test]
fn cancel_races_with_start() {
    loom::model(|| {
        let (p, f) = promise::<u32>();
        let worker = thread::spawn(move || {
            if p.start() {
                p.complete(Ok(7));
                true
            } else {
                false
            }
        });
        let cancelled = f.cancel();
        let outcome = f.wait();
        let ran = worker.join().expect("the worker does not panic");
        assert!(!(cancelled && ran), "a cancelled task ran");
        match outcome {
            Ok(v) => {
                assert!(ran);
                assert_eq!(v, 7);
            }
            Err(e) => {
                assert!(e.is_cancelled());
                assert!(cancelled && !ran);
            }
        }
    });
}

/// Rule 2: a thread blocked in `wait` is always woken by the completion (no lost wake-up).
#[test]
fn wait_is_woken_by_complete() {
    loom::model(|| {
        let (p, f) = promise::<u32>();
        let worker = thread::spawn(move || {
            assert!(p.start());
            p.complete(Ok(1));
        });
        assert_eq!(f.wait().expect("completed"), 1);
        worker.join().expect("the worker does not panic");
    });
}

/// Rule 3: a promise dropped unrun (its job discarded) resolves the future as cancelled.
#[test]
fn dropped_promise_resolves_cancelled() {
    loom::model(|| {
        let (p, f) = promise::<u32>();
        let dropper = thread::spawn(move || drop(p));
        assert!(f.wait().expect_err("no value").is_cancelled());
        dropper.join().expect("no panic");
    });
}

/// Rule 2: a callback registered while the task completes runs exactly once, with the outcome.
#[test]
fn on_done_runs_exactly_once() {
    loom::model(|| {
        let (p, f) = promise::<u32>();
        let calls = Arc::new(AtomicUsize::new(0));
        let worker = thread::spawn(move || {
            assert!(p.start());
            p.complete(Ok(5));
        });
        let counter = Arc::clone(&calls);
        f.on_done(move |r| {
            assert_eq!(*r.as_ref().expect("a value"), 5);
            counter.fetch_add(1, Ordering::SeqCst);
        });
        worker.join().expect("no panic");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(f.wait().expect("a value"), 5);
    });
}

/// Rule 1: a value and a cancel of the running task: the value wins; the token fires if the task was
/// still running.
#[test]
fn cancel_of_a_running_task_keeps_its_value() {
    loom::model(|| {
        let (p, f) = promise::<u32>();
        assert!(p.start());
        let token = p.token().clone();
        let worker = thread::spawn(move || {
            p.complete(Ok(3));
        });
        assert!(!f.cancel());
        // The token fired, unless the task had already finished (then cancel leaves it as it is).
        assert!(token.is_cancelled() || f.is_done());
        worker.join().expect("no panic");
        assert_eq!(f.wait().expect("the value wins"), 3);
    });
}

/// `.await` on a future is woken by its completion on another thread.
#[test]
fn await_is_woken_by_complete() {
    loom::model(|| {
        let (p, f) = promise::<u32>();
        let worker = thread::spawn(move || {
            assert!(p.start());
            p.complete(Err(TaskError::Cancelled));
        });
        let outcome = loom::future::block_on(f);
        assert!(outcome.expect_err("an error").is_cancelled());
        worker.join().expect("no panic");
    });
}

/// A task waiting on `CancelToken::cancelled` is woken by `cancel` from another thread.
#[test]
fn cancelled_future_is_woken_by_cancel() {
    loom::model(|| {
        let token = CancelToken::new();
        let remote = token.clone();
        let canceller = thread::spawn(move || remote.cancel());
        loom::future::block_on(token.cancelled());
        assert!(token.is_cancelled());
        canceller.join().expect("no panic");
    });
}

/// A token's owner alone (an async task's driver on its own token), whose waker is kept inline
/// without a list, is woken by `cancel` from another thread.
#[test]
fn an_owner_kept_inline_is_woken_by_cancel() {
    loom::model(|| {
        let token = CancelToken::new();
        let remote = token.clone();
        let canceller = thread::spawn(move || remote.cancel());
        loom::future::block_on(std::future::poll_fn(|cx| {
            token.host().state().poll_owner(cx.waker())
        }));
        assert!(token.is_cancelled());
        canceller.join().expect("no panic");
    });
}

/// The waker list's slots: a waiter that registers and goes away while another thread cancels
/// leaves the others registered (its slot is freed, maybe reused), and the token's owner and a
/// `Cancelled` that stays are both woken by `cancel`.
#[test]
fn waker_slots_survive_a_dropped_waiter_and_cancel() {
    use std::future::Future as _;
    use std::task::{Context, Poll, Waker};
    loom::model(|| {
        let token = CancelToken::new();
        let remote = token.clone();
        let other = thread::spawn(move || {
            {
                let mut gone = std::pin::pin!(remote.cancelled());
                let _ = gone.as_mut().poll(&mut Context::from_waker(Waker::noop()));
            }
            remote.cancel();
        });
        let mut stays = std::pin::pin!(token.cancelled());
        loom::future::block_on(std::future::poll_fn(|cx| {
            let owner = token.host().state().poll_owner(cx.waker());
            let waiter = stays.as_mut().poll(cx);
            if owner.is_ready() && waiter.is_ready() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }));
        assert!(token.is_cancelled());
        other.join().expect("no panic");
    });
}

/// Completion hooks (what `as_completed` and `wait` build on) run exactly once, whether registered
/// before or after completion.
#[test]
fn hooks_run_exactly_once() {
    loom::model(|| {
        let (p, f) = promise::<u32>();
        let hits = Arc::new(AtomicUsize::new(0));
        let worker = thread::spawn(move || {
            assert!(p.start());
            p.complete(Ok(0));
        });
        let counter = Arc::clone(&hits);
        f.add_hook(Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        worker.join().expect("no panic");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    });
}

/// Task cells (`cell.rs`): the closure, the future's state and the token in one allocation, with
/// one job handle. These models race the job (run, or dropped unrun) against the future (cancel,
/// wait, drop) and a token clone.
mod cells {
    use crate::cell::new_task;
    use crate::job::Plain;
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::thread;

    /// A value that counts its drops, so that a model can check the outcome is dropped exactly once.
    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Cancel against start: a task cancelled while queued never runs (its closure is dropped
    /// unrun); one that started keeps its value; exactly one outcome.
    #[test]
    fn cancel_races_with_run() {
        loom::model(|| {
            let runs = Arc::new(AtomicUsize::new(0));
            let counter = Arc::clone(&runs);
            let (job, future) = new_task(
                Plain(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    7u32
                }),
                None,
            );
            let worker = thread::spawn(move || job.run());
            let cancelled = future.cancel();
            let outcome = future.wait();
            worker.join().expect("the worker does not panic");
            let ran = runs.load(Ordering::SeqCst);
            assert!(ran <= 1);
            if cancelled {
                assert_eq!(ran, 0, "a task cancelled while queued ran");
                assert!(outcome.expect_err("cancelled").is_cancelled());
            } else {
                assert_eq!(ran, 1);
                assert_eq!(outcome.expect("the value"), 7);
            }
        });
    }

    /// Cancel of a running task: `cancel` returns false, the token fires (unless the task had
    /// already finished), and the value wins.
    #[test]
    fn cancel_of_a_running_cell_fires_its_token() {
        loom::model(|| {
            let (job, future) = new_task(Plain(|| 3u32), None);
            let token = future.token().clone();
            let worker = thread::spawn(move || job.run());
            let cancelled = future.cancel();
            if !cancelled {
                assert!(token.is_cancelled() || future.is_done());
            }
            worker.join().expect("no panic");
            match future.wait() {
                Ok(v) => {
                    assert!(!cancelled);
                    assert_eq!(v, 3);
                }
                Err(e) => {
                    assert!(e.is_cancelled());
                    assert!(cancelled);
                }
            }
            assert!(token.is_cancelled() || !cancelled);
        });
    }

    /// A job dropped unrun (a `CancelPending` shutdown) against a thread blocked in `wait`: the
    /// waiter is woken with `Cancelled`, the token fires, and the closure is dropped, not run.
    #[test]
    fn an_unrun_job_dropped_wakes_the_waiter_as_cancelled() {
        loom::model(|| {
            let drops = Arc::new(AtomicUsize::new(0));
            let captured = Counted(Arc::clone(&drops));
            let (job, future) = new_task(
                Plain(move || {
                    drop(captured);
                    1u32
                }),
                None,
            );
            let dropper = thread::spawn(move || drop(job));
            let token = future.token().clone();
            assert!(future.wait().expect_err("no value").is_cancelled());
            dropper.join().expect("no panic");
            assert!(token.is_cancelled());
            assert_eq!(
                drops.load(Ordering::SeqCst),
                1,
                "the closure is dropped once"
            );
        });
    }

    /// The future dropped while its task runs: the outcome is dropped exactly once, by whichever
    /// handle goes last (here the job, or the token clone the main thread keeps).
    #[test]
    fn the_future_dropped_while_the_job_runs() {
        loom::model(|| {
            let drops = Arc::new(AtomicUsize::new(0));
            let counter = Arc::clone(&drops);
            let (job, future) = new_task(Plain(move || Counted(counter)), None);
            let token = future.token().clone();
            let worker = thread::spawn(move || job.run());
            drop(future);
            worker.join().expect("no panic");
            assert_eq!(drops.load(Ordering::SeqCst), 0, "the token keeps the cell");
            drop(token);
            assert_eq!(drops.load(Ordering::SeqCst), 1);
        });
    }

    /// Cancel, the job dropped unrun and a waiter, all at once: one outcome, `Cancelled`; the
    /// closure never runs.
    #[test]
    fn cancel_races_with_an_unrun_job_dropped() {
        loom::model(|| {
            let runs = Arc::new(AtomicUsize::new(0));
            let counter = Arc::clone(&runs);
            let (job, future) = new_task(
                Plain(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                }),
                None,
            );
            let future = Arc::new(future);
            let canceller = {
                let future = Arc::clone(&future);
                thread::spawn(move || future.cancel())
            };
            let dropper = thread::spawn(move || drop(job));
            canceller.join().expect("no panic");
            dropper.join().expect("no panic");
            let future = Arc::try_unwrap(future).unwrap_or_else(|_| panic!("one handle left"));
            assert!(future.token().is_cancelled());
            assert!(future.wait().expect_err("no value").is_cancelled());
            assert_eq!(runs.load(Ordering::SeqCst), 0);
        });
    }

    /// The watchdog's timeout against the task's own completion: exactly one outcome; a timed-out
    /// task's token has fired; a timeout before the start does nothing (the task then runs).
    #[test]
    fn a_timeout_races_with_completion() {
        loom::model(|| {
            let (job, future) = new_task(Plain(|| 9u32), None);
            let token = future.token().clone();
            let worker = thread::spawn(move || job.run());
            if let Some(cell) = token.host().as_job() {
                cell.expire(std::time::Duration::from_millis(1));
            }
            worker.join().expect("no panic");
            match future.wait() {
                Ok(v) => assert_eq!(v, 9),
                Err(e) => {
                    assert!(e.is_timeout());
                    assert!(token.is_cancelled());
                }
            }
        });
    }

    /// `.await` on a cell's future is woken by the job's completion on another thread.
    #[test]
    fn await_is_woken_by_the_job() {
        loom::model(|| {
            let (job, future) = new_task(Plain(|| 5u32), None);
            let worker = thread::spawn(move || job.run());
            assert_eq!(loom::future::block_on(future).expect("a value"), 5);
            worker.join().expect("no panic");
        });
    }
}
