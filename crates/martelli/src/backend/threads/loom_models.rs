//! loom models of the queue's protocol (see the parent module): every interleaving of a worker
//! and its submitters, up to the preemption bound of `scripts/loom.sh`.

use super::{Admission, Inner, Work};
use crate::cell::new_task;
use crate::future::Future;
use crate::job::Plain;
use crate::options::{Priority, Shutdown};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

/// A task cell's job that counts its runs, and its future.
fn job(runs: &Arc<AtomicUsize>) -> (Work, Future<()>) {
    let runs = Arc::clone(runs);
    let (job, future) = new_task(
        Plain(move || {
            runs.fetch_add(1, Ordering::SeqCst);
        }),
        None,
    );
    (Work::Cell(job), future)
}

fn submit(inner: &Inner, job: Work) -> bool {
    inner.submit(job, Priority::Normal, Admission::Wait).is_ok()
}

fn worker(inner: &Arc<Inner>) -> thread::JoinHandle<()> {
    let inner = Arc::clone(inner);
    thread::spawn(move || {
        while let Some(job) = inner.next_job() {
            inner.run(0, job);
        }
    })
}

/// Rules 1, 2 and 4: every submitted job runs exactly once, a sleeping worker is never left
/// asleep with work queued, and the worker exits once the queue is closed and drained.
#[test]
fn every_job_runs_once_and_the_worker_exits_on_close() {
    loom::model(|| {
        let inner = Arc::new(Inner::new(1, None));
        let runs = Arc::new(AtomicUsize::new(0));
        let w = worker(&inner);
        for _ in 0..2 {
            let (job, _future) = job(&runs);
            assert!(submit(&inner, job));
        }
        drop(inner.close(Shutdown::Wait));
        w.join().expect("the worker does not panic");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    });
}

/// Rule 3: a submitter blocked on a full bounded queue is always woken when a worker makes room.
#[test]
fn a_blocked_submitter_is_woken_when_room_is_made() {
    loom::model(|| {
        let inner = Arc::new(Inner::new(1, Some(1)));
        let runs = Arc::new(AtomicUsize::new(0));
        let w = worker(&inner);
        let submitter = {
            let inner = Arc::clone(&inner);
            let runs = Arc::clone(&runs);
            thread::spawn(move || {
                for _ in 0..2 {
                    let (job, _future) = job(&runs);
                    assert!(submit(&inner, job));
                }
            })
        };
        submitter.join().expect("the submitter does not panic");
        drop(inner.close(Shutdown::Wait));
        w.join().expect("the worker does not panic");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    });
}

/// Rule 4 with `CancelPending`: each future resolves exactly once, as its value if the job ran or
/// as cancelled if it was discarded, and a discarded job never runs.
#[test]
fn cancel_pending_resolves_every_future_once() {
    loom::model(|| {
        let inner = Arc::new(Inner::new(1, None));
        let runs = Arc::new(AtomicUsize::new(0));
        let w = worker(&inner);
        let mut futures = Vec::new();
        for _ in 0..2 {
            let (job, future) = job(&runs);
            assert!(submit(&inner, job));
            futures.push(future);
        }
        drop(inner.close(Shutdown::CancelPending));
        w.join().expect("the worker does not panic");
        let mut ok = 0;
        for future in futures {
            match future.wait() {
                Ok(()) => ok += 1,
                Err(e) => assert!(e.is_cancelled()),
            }
        }
        assert_eq!(runs.load(Ordering::SeqCst), ok);
    });
}

/// Rule 6: a `CancelPending` shutdown races a worker that runs a task whose future is gone (so
/// the worker's reference is the cell's last). The shutdown fires the task's token only while
/// the worker still holds it, and the worker frees the cell only after the shutdown is done
/// with its slot; the task runs at most once and the worker exits.
#[test]
fn cancel_pending_fires_a_running_token_without_outliving_it() {
    loom::model(|| {
        let inner = Arc::new(Inner::new(1, None));
        let runs = Arc::new(AtomicUsize::new(0));
        let (job, future) = job(&runs);
        let token = future.token().clone();
        drop(future);
        assert!(submit(&inner, job));
        drop(token);
        let w = worker(&inner);
        drop(inner.close(Shutdown::CancelPending));
        w.join().expect("the worker does not panic");
        assert!(runs.load(Ordering::SeqCst) <= 1);
    });
}
