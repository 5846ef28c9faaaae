//! Jobs: what a backend queues and runs. A job wraps the user's closure with its promise, so running it
//! completes the task's future whatever happens (value, error, panic), and dropping it unrun cancels it.

use crate::cancel::{CancelToken, CurrentTokenGuard};
use crate::error::{TaskError, TaskFailure, TaskResult};
use crate::future::{Expirer, Promise};
use crate::options::Priority;
use crate::watchdog::Watchdog;
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

/// A unit of work as a backend sees it.
pub(crate) struct Job {
    pub(crate) priority: Priority,
    pub(crate) task: Box<dyn Runnable>,
}

impl Job {
    pub(crate) fn run(self) {
        self.task.run();
    }
}

/// A type-erased job body.
pub(crate) trait Runnable: Send {
    /// Runs the task and completes its future. Never unwinds.
    fn run(self: Box<Self>);
    /// The job as `Any`, so that a refused submission can hand the user's closure back. `None` for jobs
    /// that borrow (scoped jobs), which are never refused that way.
    fn into_any(self: Box<Self>) -> Option<Box<dyn Any + Send>>;
    /// The task's cancellation token, so that a shutdown can fire it while the task runs.
    fn token(&self) -> &CancelToken;
}

/// The user's closure, and how its return value becomes an outcome.
pub(crate) trait Body<T>: Send {
    fn call(self) -> TaskResult<T>;
}

/// A closure whose return value is the task's value.
pub(crate) struct Plain<F>(pub(crate) F);

impl<F, T> Body<T> for Plain<F>
where
    F: FnOnce() -> T + Send,
{
    fn call(self) -> TaskResult<T> {
        Ok((self.0)())
    }
}

/// A closure whose `Err` is the task's [`TaskError::Failed`].
pub(crate) struct Fallible<F>(pub(crate) F);

impl<F, T, E> Body<T> for Fallible<F>
where
    F: FnOnce() -> Result<T, E> + Send,
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    fn call(self) -> TaskResult<T> {
        (self.0)().map_err(|e| TaskError::Failed(TaskFailure::from_error(e)))
    }
}

/// A per-task timeout, armed when the task starts.
pub(crate) struct Timeout<T> {
    pub(crate) after: Duration,
    pub(crate) watchdog: Arc<Watchdog>,
    /// `Promise::expirer`, which needs `T: 'static`; a function pointer keeps that bound out of
    /// `TaskJob`, so that scoped (borrowing) tasks share this code.
    pub(crate) expirer: fn(&Promise<T>) -> Expirer,
}

/// A task: its body, its promise and its timeout.
pub(crate) struct TaskJob<B, T> {
    pub(crate) body: B,
    pub(crate) promise: Promise<T>,
    pub(crate) timeout: Option<Timeout<T>>,
}

impl<B: Body<T>, T> TaskJob<B, T> {
    pub(crate) fn run(self) {
        let TaskJob {
            body,
            promise,
            timeout,
        } = self;
        if !promise.start() {
            return; // cancelled while queued
        }
        if let Some(t) = timeout {
            t.watchdog.arm(t.after, (t.expirer)(&promise));
        }
        let result = {
            let _current = CurrentTokenGuard::enter(promise.token());
            match catch_unwind(AssertUnwindSafe(|| body.call())) {
                Ok(result) => result,
                Err(payload) => Err(TaskError::panicked(payload)),
            }
        };
        // Dropping a value can panic too; it must not unwind through the worker.
        let _ = catch_unwind(AssertUnwindSafe(move || promise.complete(result)));
    }
}

/// A task cell's job, boxed for a backend that only queues [`Job`]s.
impl Runnable for crate::cell::CellJob {
    fn run(self: Box<Self>) {
        (*self).run();
    }

    fn into_any(self: Box<Self>) -> Option<Box<dyn Any + Send>> {
        Some(self)
    }

    fn token(&self) -> &CancelToken {
        crate::cell::CellJob::token(self)
    }
}

/// A job that owns everything it uses.
pub(crate) struct Owned<B, T>(pub(crate) TaskJob<B, T>);

impl<B, T> Runnable for Owned<B, T>
where
    B: Body<T> + 'static,
    T: Send + 'static,
{
    fn run(self: Box<Self>) {
        self.0.run();
    }

    fn into_any(self: Box<Self>) -> Option<Box<dyn Any + Send>> {
        Some(self)
    }

    fn token(&self) -> &CancelToken {
        self.0.promise.token()
    }
}
