//! Async tasks on any backend: the driver that runs a `Future` as a martelli task (cancellation at
//! `.await` points, panics caught per poll, the blocking detector), and a minimal executor that runs such
//! a task on a worker thread when the backend has no event loop.

use crate::cancel::{CancelToken, CurrentTokenGuard};
use crate::error::{TaskError, TaskResult};
use crate::future::{Promise, TaskId};
use crate::job::Timeout;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// A boxed task future, as backends receive it.
pub(crate) type BoxTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A report of the blocking-call detector: a task ran this long between two `.await` points.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlockingReport {
    /// The task's name, when it was given one ([`TaskOptions::name`](crate::TaskOptions::name)).
    pub task: Option<&'static str>,
    /// The task's id.
    pub id: TaskId,
    /// How long one poll of the task took.
    pub blocked_for: Duration,
}

impl fmt::Display for BlockingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.task.unwrap_or("unnamed");
        write!(
            f,
            "task {name:?} ({}) blocked the event loop for {:?} between two .await points; move \
             blocking or CPU-bound work to martelli::to_thread or a thread pool",
            self.id, self.blocked_for
        )
    }
}

/// The blocking-call detector's settings.
#[derive(Clone)]
pub(crate) struct Detector {
    pub(crate) threshold: Duration,
    pub(crate) report: Arc<dyn Fn(&BlockingReport) + Send + Sync>,
}

impl fmt::Debug for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Detector")
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

pin_project_lite::pin_project! {
    /// Runs one async task: starts it (unless it was cancelled while queued), arms its timeout,
    /// polls the user's future with the task's token current — catching panics and timing each
    /// poll for the detector — and completes the promise. One allocation per task holds all of it.
    struct Driver<F: Future> {
        // The user's future, structurally pinned.
        #[pin]
        fut: F,
        // `None` once the outcome is delivered.
        promise: Option<Promise<F::Output>>,
        started: bool,
        // The rarely used settings, boxed so that a plain task's driver stays small (100,000
        // waiting tasks should cost as little memory as possible).
        extras: Option<Box<Extras<F::Output>>>,
    }
}

struct Extras<T> {
    timeout: Option<Timeout<T>>,
    detector: Option<Arc<Detector>>,
    name: Option<&'static str>,
}

impl<F: Future> Future for Driver<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let Some(promise) = this.promise.as_ref() else {
            return Poll::Ready(());
        };
        if !*this.started {
            *this.started = true;
            if !promise.start() {
                *this.promise = None; // cancelled while queued: the future is already resolved
                return Poll::Ready(());
            }
            if let Some(t) = this.extras.as_mut().and_then(|e| e.timeout.take()) {
                t.watchdog.arm(t.after, (t.expirer)(promise));
            }
        }
        let token = promise.token().clone();
        if token.is_cancelled() {
            return finish(this.promise, Err(TaskError::Cancelled));
        }
        let detector = this.extras.as_ref().and_then(|e| e.detector.as_ref());
        let before = detector.map(|_| Instant::now());
        let polled = {
            let _current = CurrentTokenGuard::enter(&token);
            let fut = this.fut;
            catch_unwind(AssertUnwindSafe(|| fut.poll(cx)))
        };
        if let (Some(detector), Some(before)) = (detector, before) {
            let blocked_for = before.elapsed();
            if blocked_for >= detector.threshold {
                (detector.report)(&BlockingReport {
                    task: this.extras.as_ref().and_then(|e| e.name),
                    id: promise.id(),
                    blocked_for,
                });
            }
        }
        match polled {
            Ok(Poll::Ready(value)) => finish(this.promise, Ok(value)),
            Err(payload) => finish(this.promise, Err(TaskError::panicked(payload))),
            Ok(Poll::Pending) => {
                // The token may fire while the task waits (cancel, timeout, shutdown): be woken for it.
                if Pin::new(&mut token.cancelled()).poll(cx).is_ready() {
                    return finish(this.promise, Err(TaskError::Cancelled));
                }
                Poll::Pending
            }
        }
    }
}

/// Delivers a driver's outcome, once.
fn finish<T>(promise: &mut Option<Promise<T>>, outcome: TaskResult<T>) -> Poll<()> {
    if let Some(promise) = promise.take() {
        promise.complete(outcome);
    }
    Poll::Ready(())
}

/// The boxed driver of an async task.
pub(crate) fn driver<F>(
    fut: F,
    promise: Promise<F::Output>,
    timeout: Option<Timeout<F::Output>>,
    detector: Option<Arc<Detector>>,
    name: Option<&'static str>,
) -> BoxTask
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let extras = (timeout.is_some() || detector.is_some() || name.is_some()).then(|| {
        Box::new(Extras {
            timeout,
            detector,
            name,
        })
    });
    Box::pin(Driver {
        fut,
        promise: Some(promise),
        started: false,
        extras,
    })
}

/// Wakes a parked thread.
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `fut` to completion on this thread, parking between polls. Used to run async tasks on backends
/// without an event loop: the worker thread is held for the task's whole life, awaits included.
pub(crate) fn block_on_here<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(value) = fut.as_mut().poll(&mut cx) {
            return value;
        }
        std::thread::park();
    }
}

/// A job that runs an async task to completion on the worker thread that takes it.
pub(crate) struct FutureJob {
    pub(crate) task: BoxTask,
    pub(crate) token: CancelToken,
}

impl crate::job::Runnable for FutureJob {
    fn run(self: Box<Self>) {
        block_on_here(self.task);
    }

    fn into_any(self: Box<Self>) -> Option<Box<dyn std::any::Any + Send>> {
        None
    }

    fn token(&self) -> &CancelToken {
        &self.token
    }
}
