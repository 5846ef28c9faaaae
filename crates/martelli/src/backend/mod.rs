//! Backends: where jobs run. Every backend implements [`Backend`], the one internal trait between the
//! [`Pool`](crate::Pool) users see and the machinery that executes work, so a new backend is one new
//! module here.
//!
//! | module | tier | runs jobs on |
//! | --- | --- | --- |
//! | [`inline`] | 1 core | the caller's thread, at submit |
//! | [`threads`] | 2–8 cores, I/O-bound or GIL-free CPU work | a fixed set of worker threads with a priority queue |
//! | `event_loop` | 1 core, many concurrent waits | a tokio runtime: async tasks switch at `.await` points |

#[cfg(feature = "async")]
pub(crate) mod event_loop;
pub(crate) mod inline;
pub(crate) mod threads;

use crate::cancel::CancelToken;
use crate::error::Error;
use crate::job::Job;
use crate::local::WorkerInfo;
use crate::pool::Priority;
use crate::pool::Shutdown;
use crate::sync::Arc;
use crate::task_future::{BoxTask, FutureJob};
use std::fmt;

/// Whether `execute` may wait for room in a bounded queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Block while the queue is full (backpressure).
    Wait,
    /// Refuse at once when the queue is full.
    Try,
}

/// A job the backend did not take, handed back.
pub(crate) enum Rejected {
    Full(Job),
    ShutDown(Job),
}

/// A per-worker start hook (the builder's initializer).
pub(crate) type Initializer = Arc<dyn Fn(&WorkerInfo) + Send + Sync>;

/// What every backend is built from.
#[derive(Clone)]
pub(crate) struct BackendConfig {
    pub(crate) workers: usize,
    pub(crate) name_prefix: String,
    pub(crate) stack_size: Option<usize>,
    pub(crate) queue_bound: Option<usize>,
    pub(crate) initializer: Option<Initializer>,
}

impl fmt::Debug for BackendConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendConfig")
            .field("workers", &self.workers)
            .field("name_prefix", &self.name_prefix)
            .field("stack_size", &self.stack_size)
            .field("queue_bound", &self.queue_bound)
            .field("initializer", &self.initializer.is_some())
            .finish()
    }
}

/// The one internal interface every backend implements.
pub(crate) trait Backend: Send + Sync + fmt::Debug {
    /// The backend's name as in a pool spec (`"inline"`, `"threads"`).
    fn kind(&self) -> &'static str;

    /// How many tasks can run at once.
    fn workers(&self) -> usize;

    /// Takes a job: queues it (or runs it, for `inline`). The job's promise resolves its future
    /// whatever happens next; a refused job is handed back.
    fn execute(&self, job: Job, admission: Admission) -> Result<(), Rejected>;

    /// Takes an async task. The default runs it on a worker like any job, holding the worker across its
    /// `.await`s; a backend with an event loop overrides this to interleave tasks at their `.await`s.
    fn spawn_task(
        &self,
        task: BoxTask,
        token: CancelToken,
        priority: Priority,
    ) -> Result<(), Error> {
        let job = Job {
            priority,
            task: Box::new(FutureJob { task, token }),
        };
        self.execute(job, Admission::Wait)
            .map_err(|_| Error::ShutDown)
    }

    /// Jobs waiting to start.
    fn queued(&self) -> usize;

    /// When the calling thread is one of this backend's workers, runs one queued job here and returns
    /// true. Lets a worker that waits for other tasks of its own pool (a nested scope) make progress
    /// instead of deadlocking.
    fn help_one(&self) -> bool;

    /// Stops taking jobs, then finishes according to `mode`, and returns once every worker has exited
    /// (a worker that calls this on its own pool is not waited for). Idempotent.
    fn shutdown(&self, mode: Shutdown);

    /// True once `shutdown` has begun.
    fn is_shut_down(&self) -> bool;
}
