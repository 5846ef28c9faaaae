//! Backends: where jobs run. Every backend implements [`Backend`], the one internal trait between the
//! [`Pool`](crate::Pool) users see and the machinery that executes work, so a new backend is one new
//! module here.
//!
//! | module | tier | runs jobs on |
//! | --- | --- | --- |
//! | [`inline`] | 1 core | the caller's thread, at submit |
//! | [`threads`] | 2–8 cores, I/O-bound or GIL-free CPU work | a fixed set of worker threads with a priority queue |
//! | `event_loop` | 1 core, many concurrent waits | a tokio runtime: async tasks switch at `.await` points |
//! | `processes` | 2–8 cores, isolation, hard timeouts | worker processes (this program re-executed), tasks by name |
//! | `cluster` | 9+ cores, many machines | cluster workers fed through Redis Streams, tasks by name (feature `cluster`) |
//!
//! Backends that run tasks outside this process also implement [`RemoteBackend`]: they take tasks by
//! name with encoded arguments ([`RemoteJob`]) instead of closures.

#[cfg(feature = "cluster")]
pub(crate) mod cluster;
#[cfg(feature = "async")]
pub(crate) mod event_loop;
pub(crate) mod inline;
#[cfg(target_os = "linux")]
pub(crate) mod processes;
pub(crate) mod threads;

use crate::cancel::CancelToken;
use crate::cell::CellJob;
use crate::error::{Error, TaskError};
use crate::job::Job;
use crate::local::WorkerInfo;
use crate::options::{Priority, Shutdown};
use crate::task_future::{BoxTask, FutureJob};
use std::fmt;
use std::sync::Arc;

/// Whether `execute` may wait for room in a bounded queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Block while the queue is full (backpressure).
    Wait,
    /// Refuse at once when the queue is full.
    Try,
}

/// A job the backend did not take, handed back.
pub(crate) enum Rejected<J = Job> {
    Full(J),
    ShutDown(J),
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

    /// Takes a task cell's job (`Pool::submit` and its kin): one allocation per task. The default
    /// wraps it as a boxed [`Job`]; the queueing backends take it as it is.
    fn execute_cell(
        &self,
        job: CellJob,
        priority: Priority,
        admission: Admission,
    ) -> Result<(), Rejected<CellJob>> {
        let job = Job {
            priority,
            task: Box::new(job),
        };
        self.execute(job, admission).map_err(|rejected| {
            let (job, full) = match rejected {
                Rejected::Full(job) => (job, true),
                Rejected::ShutDown(job) => (job, false),
            };
            match job.task.into_any().map(|any| any.downcast::<CellJob>()) {
                Some(Ok(cell)) if full => Rejected::Full(*cell),
                Some(Ok(cell)) => Rejected::ShutDown(*cell),
                // Unreachable: the job was built above; dropping it resolves its future.
                _ => unreachable!("the job handed back is the CellJob that was sent"),
            }
        })
    }

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

    /// The backend as an event loop, when it is one: `submit_async` then spawns the task's driver
    /// straight into the runtime's own task cell, with no box of its own.
    #[cfg(feature = "async")]
    fn event_loop(&self) -> Option<&event_loop::EventLoop> {
        None
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

    /// The backend's face for tasks by name, when it runs tasks outside this process (then it
    /// refuses closures). `None` for in-process backends.
    fn remote(&self) -> Option<&dyn RemoteBackend> {
        None
    }

    /// Whether daemon consumers (`Pool::consume`) can live on this backend's workers: `Ok`, or
    /// where the backend runs its jobs (for the error that says why they cannot), e.g. "on the
    /// caller's thread".
    fn hosts_daemons(&self) -> Result<(), &'static str> {
        Err("where daemons are not supported yet")
    }

    /// True when a task's stdout and stderr can be captured apart from this process's
    /// (`submit_task_captured`): only a backend whose tasks run in processes of their own that
    /// this one started.
    fn captures_output(&self) -> bool {
        false
    }
}

/// What a backend that runs tasks in other processes (or machines) adds to [`Backend`].
pub(crate) trait RemoteBackend {
    /// The largest frame the backend sends or accepts.
    fn max_frame(&self) -> usize;

    /// How this backend's workers read a task's arguments and write its result: what the pool
    /// encodes a [`RemoteJob`]'s payload as, and decodes its outcome from.
    fn wire(&self) -> Wire {
        Wire::Frames
    }

    /// Takes a task by name: queues it, or refuses it (dropping the job resolves its future as
    /// cancelled).
    fn execute_remote(&self, job: RemoteJob, admission: Admission) -> Result<(), RemoteRejected>;
}

/// The encodings of remote backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    /// Process-pool frames (`codec.rs`): the payload is a whole `Run`, `RunBatch` or
    /// `RunCaptured` frame with postcard arguments; results are postcard.
    Frames,
    /// One MessagePack argument array per task, results in MessagePack (the cluster's protocol,
    /// docs/protocol.md, which producers in other languages can write). A chunk of a task map is
    /// sent as one task per input, so that it spreads over many workers.
    #[cfg(feature = "cluster")]
    MessagePack,
}

/// Why a remote backend did not take a job.
#[derive(Debug)]
pub(crate) enum RemoteRejected {
    Full,
    ShutDown,
    /// The backend could not take it for a reason the caller must hear (a broker refused it).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    Failed(Error),
}

/// A task by name, ready to send: its payload, encoded once as the backend's [`Wire`] says, and
/// where its outcome goes.
pub(crate) struct RemoteJob {
    pub(crate) id: u64,
    pub(crate) priority: Priority,
    /// The task's registered name (also inside the payload when it is a frame).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) task: std::borrow::Cow<'static, str>,
    pub(crate) frame: Vec<u8>,
    pub(crate) sink: Box<dyn Sink>,
}

/// The typed end of a remote job: its promise, decoding the value when it comes back.
pub(crate) trait Sink: Send {
    /// Marks the task running; false when it was cancelled while queued (then it must not run).
    fn start(&self) -> bool;
    /// The task's cancellation token.
    fn token(&self) -> &CancelToken;
    /// The task's timeout, counted from its start.
    fn timeout(&self) -> Option<std::time::Duration>;
    /// Resolves the task: `Ok` holds the encoded value.
    fn complete(self: Box<Self>, outcome: Result<&[u8], TaskError>);
    /// The id of the [`Future`](crate::Future) this sink resolves, when it resolves exactly one
    /// (not an input of a chunk).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    fn future(&self) -> Option<crate::future::TaskId> {
        None
    }
    /// True when the task's stdout and stderr are captured (its frame is a `RunCaptured`).
    fn captures(&self) -> bool {
        false
    }
    /// Receives what a captured task wrote, before [`complete`](Sink::complete).
    fn capture(
        &mut self,
        _stdout: crate::capture::CapturedStream,
        _stderr: crate::capture::CapturedStream,
    ) {
    }
}

/// How a task by name is sent to a worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunKind {
    /// One call (`Run`).
    One,
    /// A chunk of a task map (`RunBatch`).
    Batch,
    /// One call with its stdout and stderr captured (`RunCaptured`).
    Captured,
}

impl RunKind {
    /// The frame header for task `task` with id `id`.
    pub(crate) fn header(self, id: u64, task: &str) -> crate::codec::Header<'_> {
        use crate::codec::Header;
        match self {
            RunKind::One => Header::Run { id, task },
            RunKind::Batch => Header::RunBatch { id, task },
            RunKind::Captured => Header::RunCaptured { id, task },
        }
    }
}
