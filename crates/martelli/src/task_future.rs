//! Async tasks on any backend: the driver that runs a `Future` as a martelli task (cancellation at
//! `.await` points, panics caught per poll, the blocking detector), and a minimal executor that runs such
//! a task on a worker thread when the backend has no event loop.

use crate::cancel::{CancelToken, CurrentTokenGuard};
use crate::error::{TaskError, TaskResult};
use crate::future::{Promise, TaskId};
use crate::job::Timeout;
use crate::sync::Arc;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
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

/// Polls the user's future with its token current, catching panics and timing each poll.
struct Guarded<F> {
    inner: Pin<Box<F>>,
    token: CancelToken,
    detector: Option<Detector>,
    name: Option<&'static str>,
    id: TaskId,
}

impl<F: Future> Future for Guarded<F> {
    type Output = TaskResult<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.token.is_cancelled() {
            return Poll::Ready(Err(TaskError::Cancelled));
        }
        let started = this.detector.as_ref().map(|_| Instant::now());
        let polled = {
            let _current = CurrentTokenGuard::enter(&this.token);
            catch_unwind(AssertUnwindSafe(|| this.inner.as_mut().poll(cx)))
        };
        if let (Some(detector), Some(started)) = (&this.detector, started) {
            let blocked_for = started.elapsed();
            if blocked_for >= detector.threshold {
                (detector.report)(&BlockingReport {
                    task: this.name,
                    id: this.id,
                    blocked_for,
                });
            }
        }
        match polled {
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Ok(Poll::Pending) => {
                // The token may fire while the task waits: be woken for it too.
                let mut cancelled = this.token.cancelled();
                if Pin::new(&mut cancelled).poll(cx).is_ready() {
                    return Poll::Ready(Err(TaskError::Cancelled));
                }
                Poll::Pending
            }
            Err(payload) => Poll::Ready(Err(TaskError::panicked(payload))),
        }
    }
}

/// Builds the driver future of an async task: it starts the task (unless cancelled while queued), arms
/// its timeout, runs it until it ends or its token fires, and completes the promise.
pub(crate) fn driver<F>(
    fut: F,
    promise: Promise<F::Output>,
    timeout: Option<Timeout<F::Output>>,
    detector: Option<Detector>,
    name: Option<&'static str>,
    id: TaskId,
) -> BoxTask
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Box::pin(async move {
        if !promise.start() {
            return;
        }
        if let Some(t) = timeout {
            t.watchdog.arm(t.after, (t.expirer)(&promise));
        }
        let token = promise.token().clone();
        let outcome = Guarded {
            inner: Box::pin(fut),
            token,
            detector,
            name,
            id,
        }
        .await;
        promise.complete(outcome);
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
