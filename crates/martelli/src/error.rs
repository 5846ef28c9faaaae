//! Errors: how a task ended when it did not return a value ([`TaskError`]), and why the pool refused to
//! do something ([`Error`], [`TrySubmitError`]).

use std::fmt;
use std::time::Duration;

/// The result of one task: its value, or the way it ended without one.
pub type TaskResult<T> = Result<T, TaskError>;

/// How a task ended without a value. Every outcome in martelli's model has its own variant, so a caller
/// can match on what happened; the `Display` text says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task ran and returned an error (a task submitted with
    /// [`Pool::submit_fallible`](crate::Pool::submit_fallible), or a process or cluster task that
    /// returned `Err`).
    #[error("the task returned an error: {0}")]
    Failed(#[source] TaskFailure),
    /// The task panicked. The worker survived; the panic's message is kept.
    #[error(
        "the task panicked: {message} (the worker survived; fix the panic, or return an error instead)"
    )]
    Panicked {
        /// The panic payload when it was a string, otherwise a placeholder.
        message: String,
    },
    /// The task was cancelled (by [`Future::cancel`](crate::Future::cancel) or a shutdown that cancels
    /// pending work) before it produced a value.
    #[error("the task was cancelled before it finished")]
    Cancelled,
    /// The task ran longer than its timeout. On the thread backends the thread is not killed: its
    /// [`CancelToken`](crate::CancelToken) fired and its eventual value is discarded.
    #[error(
        "the task timed out after {after:?} (raise the timeout with TaskOptions::timeout or \
         PoolBuilder::task_timeout, or make the task shorter)"
    )]
    TimedOut {
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The worker process running the task died (process and cluster backends).
    #[error("the worker running the task died: {0}")]
    WorkerDied(WorkerDeath),
    /// No task has this name in the worker program (a task submitted by name with
    /// [`Pool::submit_named`](crate::Pool::submit_named)).
    #[error(
        "no task named {name:?} is registered in the worker program (a task's name is its module \
         path and function name, or the name given in #[martelli::task(name = \"…\")])"
    )]
    UnknownTask {
        /// The name asked for.
        name: String,
    },
    /// The task's arguments or result could not cross the process boundary: they did not encode or
    /// decode, or a frame was larger than the pool's maximum. A worker that sent a bad frame was
    /// replaced.
    #[error("the task's data could not cross to or from its worker: {0}")]
    Codec(String),
    /// The task was delivered too many times without a result and was given up (cluster backend).
    #[error(
        "the task was lost after {attempts} attempt(s): {reason} (look for it in the dead-letter stream)"
    )]
    Lost {
        /// How many times delivery was attempted.
        attempts: u32,
        /// Why the last attempt failed.
        reason: String,
    },
}

impl TaskError {
    /// True when the task returned an error of its own.
    pub fn is_failed(&self) -> bool {
        matches!(self, TaskError::Failed(_))
    }
    /// True when the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, TaskError::Panicked { .. })
    }
    /// True when the task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, TaskError::Cancelled)
    }
    /// True when the task timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, TaskError::TimedOut { .. })
    }
    /// True when the worker running the task died.
    pub fn is_worker_death(&self) -> bool {
        matches!(self, TaskError::WorkerDied(_))
    }
    /// True when no task has the name asked for.
    pub fn is_unknown_task(&self) -> bool {
        matches!(self, TaskError::UnknownTask { .. })
    }
    /// True when the task's arguments or result could not be sent or received.
    pub fn is_codec(&self) -> bool {
        matches!(self, TaskError::Codec(_))
    }
    /// True when the task was lost (cluster backend).
    pub fn is_lost(&self) -> bool {
        matches!(self, TaskError::Lost { .. })
    }

    pub(crate) fn panicked(payload: Box<dyn std::any::Any + Send>) -> TaskError {
        TaskError::Panicked {
            message: panic_message(payload.as_ref()),
        }
    }
}

/// The text of a panic payload, when it has one.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<panic payload that is not a string>".to_owned()
    }
}

/// An error a task returned: its message, and the original error when it did not cross a process
/// boundary.
pub struct TaskFailure {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl TaskFailure {
    /// A failure from an error value; the value is kept and reachable with [`TaskFailure::source_error`].
    pub fn from_error<E>(error: E) -> Self
    where
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        let error = error.into();
        TaskFailure {
            message: error.to_string(),
            source: Some(error),
        }
    }

    /// A failure known only by its message (an error that crossed a process or machine boundary).
    pub fn from_message(message: impl Into<String>) -> Self {
        TaskFailure {
            message: message.into(),
            source: None,
        }
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The original error, when the task ran in this process.
    pub fn source_error(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }

    /// The original error as type `E`, when it is one.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.source.as_ref()?.downcast_ref::<E>()
    }
}

impl fmt::Debug for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskFailure")
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A `TaskFailure` stands for the error the task returned: its message is that error's message, and
/// its [`source`](std::error::Error::source) is that error's source, so a cause chain printed from a
/// [`TaskError::Failed`] goes on with what caused the task's error.
impl std::error::Error for TaskFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref()?.source()
    }
}

/// How a worker process died: its exit code or signal, and the last lines it wrote to stderr.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerDeath {
    /// The exit code, when the worker exited.
    pub exit_code: Option<i32>,
    /// The signal number, when a signal killed the worker.
    pub signal: Option<i32>,
    /// The last lines of the worker's stderr.
    pub stderr_tail: String,
}

impl fmt::Display for WorkerDeath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.exit_code, self.signal) {
            (_, Some(sig)) => write!(f, "killed by signal {sig}")?,
            (Some(code), None) => write!(f, "exited with code {code}")?,
            (None, None) => f.write_str("vanished")?,
        }
        if !self.stderr_tail.is_empty() {
            write!(f, "; its stderr ended with:\n{}", self.stderr_tail)?;
        }
        Ok(())
    }
}

/// Why a pool refused to build or to take work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Output capture was asked of a pool whose tasks run in this process, where every task shares
    /// the process's stdout and stderr.
    #[error(
        "capturing a task's stdout and stderr needs a process pool, and this pool runs {backend} \
         (build it with PoolBuilder::processes, or use submit_task)"
    )]
    CaptureNeedsProcesses {
        /// The pool's backend.
        backend: &'static str,
    },
    /// The pool was shut down; it takes no more work. Build a new pool.
    #[error("the pool is shut down and takes no more tasks (build a new pool)")]
    ShutDown,
    /// A builder setting is out of range.
    #[error("invalid pool configuration: {0}")]
    InvalidConfig(String),
    /// A pool spec (`Pool::from_spec`, `MARTELLI_POOL`) could not be parsed.
    #[error(
        "unknown pool spec {spec:?}: {reason}; valid forms are \"inline\", \"threads\" (one per core) \
         \"threads:N\", \"processes\", \"processes:N\", \"async\" (an event loop on one thread), \
         \"async:N\" and \"redis://host[:port]\" (a cluster)"
    )]
    UnknownSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A worker's initializer panicked; the pool was not started.
    #[error(
        "a worker's initializer panicked: {message} (the pool was not started; fix the initializer)"
    )]
    Initializer {
        /// The panic's message.
        message: String,
    },
    /// A blocking call was made from a thread that drives an async runtime.
    #[error(
        "this call would block a thread that drives an async runtime, stalling every task on it; \
         `.await` the task's Future instead (or call from outside the runtime)"
    )]
    WouldBlockRuntime,
    /// This process was started as a worker of a process pool, but its `main` did not call
    /// [`martelli::init()`](crate::init) first, so it runs the program from the top instead of
    /// serving tasks. It must not start workers of its own: that would be a fork bomb.
    #[error(
        "this process was started as a martelli worker, but its main did not call martelli::init() \
         first; call martelli::init() on the first line of main"
    )]
    NotInitialized,
    /// A worker process could not be started.
    #[error("could not start a worker process: {message}")]
    WorkerStart {
        /// What failed.
        message: String,
    },
    /// A worker process started but did not complete the handshake.
    #[error("worker program {program} failed its handshake: {reason} (worker {death})")]
    Handshake {
        /// The worker program.
        program: String,
        /// What went wrong, and what to do.
        reason: String,
        /// How the worker ended (it was killed if it still ran).
        death: String,
    },
    /// Two tasks share one name.
    #[error(transparent)]
    DuplicateTask(#[from] crate::task::DuplicateTask),
    /// A closure was given to a backend that runs tasks in other processes.
    #[error(
        "the {backend} backend runs only #[martelli::task] functions, not closures (a closure cannot \
         cross a process boundary); submit with Pool::submit_task"
    )]
    NotATask {
        /// The backend's name.
        backend: &'static str,
    },
    /// The cluster backend could not connect to its broker or take a task.
    #[cfg(feature = "cluster")]
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The operating system refused to start a worker.
    #[error(
        "could not start worker thread {name:?}: {source} (lower the number of workers or their stack size)"
    )]
    Spawn {
        /// The worker's name.
        name: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// Why [`Pool::try_submit`](crate::Pool::try_submit) did not take a task. The task is handed back.
#[derive(thiserror::Error)]
pub enum TrySubmitError<F> {
    /// The pool's queue is at its bound; try again later or use `submit`, which waits.
    #[error(
        "the pool's queue is full (use submit, which waits for room, or raise PoolBuilder::queue_bound)"
    )]
    Full(F),
    /// The pool is shut down.
    #[error("the pool is shut down and takes no more tasks (build a new pool)")]
    ShutDown(F),
    /// The pool runs tasks in other processes, which closures cannot reach.
    #[error(
        "this pool runs only #[martelli::task] functions, not closures; submit with Pool::submit_task"
    )]
    NotATask(F),
}

impl<F> TrySubmitError<F> {
    /// The task that was not submitted.
    pub fn into_inner(self) -> F {
        match self {
            TrySubmitError::Full(f) | TrySubmitError::ShutDown(f) | TrySubmitError::NotATask(f) => {
                f
            }
        }
    }
    /// True when the queue was full.
    pub fn is_full(&self) -> bool {
        matches!(self, TrySubmitError::Full(_))
    }
    /// True when the pool was shut down.
    pub fn is_shut_down(&self) -> bool {
        matches!(self, TrySubmitError::ShutDown(_))
    }
}

impl<F> fmt::Debug for TrySubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySubmitError::Full(_) => f.write_str("Full(..)"),
            TrySubmitError::ShutDown(_) => f.write_str("ShutDown(..)"),
            TrySubmitError::NotATask(_) => f.write_str("NotATask(..)"),
        }
    }
}

/// An error as a person reads it: its sentence, then each cause on a line of its own — what a
/// program's `main` should show instead of `Debug` output.
///
/// Any error converts into it with `?`, and its `Debug` is the same text as its `Display`, so
/// `fn main() -> Result<(), martelli::Report>` prints sentences when it fails:
///
/// ```
/// // In a program: fn main() -> Result<(), martelli::Report> { … }
/// fn run() -> Result<(), martelli::Report> {
///     let _pool = martelli::Pool::from_spec("threads:many")?;
///     Ok(())
/// }
/// let shown = format!("{:?}", run().unwrap_err()); // what `main` would print
/// assert!(shown.contains("must be a whole number"), "{shown}");
/// assert!(!shown.contains("UnknownSpec"), "{shown}");
/// ```
///
/// A cause whose text the sentence before it already ends with (an error that prints its source
/// inside its own message) is not repeated.
pub struct Report(Box<dyn std::error::Error + Send + Sync + 'static>);

impl Report {
    /// The error this report shows.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl<E> From<E> for Report
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Report {
        Report(Box::new(error))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut said = self.0.to_string();
        f.write_str(&said)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let text = error.to_string();
            if !said.ends_with(&text) {
                write!(f, "\n  caused by: {text}")?;
            }
            said = text;
            cause = error.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod report_tests {
    use super::{Report, TaskError, TaskFailure};

    #[derive(Debug, thiserror::Error)]
    #[error("the disk is full")]
    struct Full;

    #[derive(Debug, thiserror::Error)]
    #[error("could not save the report")]
    struct Save(#[source] Full);

    #[test]
    fn a_report_is_the_sentence_then_each_cause_once() {
        let failed = TaskError::Failed(TaskFailure::from_error(Save(Full)));
        let text = Report::from(failed).to_string();
        assert_eq!(
            text,
            "the task returned an error: could not save the report\n  caused by: the disk is full"
        );
    }

    #[test]
    fn a_failure_is_the_source_of_failed_and_carries_the_original_cause() {
        use std::error::Error as _;
        let failed = TaskError::Failed(TaskFailure::from_error(Save(Full)));
        let failure = failed.source().expect("Failed has a source");
        assert_eq!(failure.to_string(), "could not save the report");
        let cause = failure
            .source()
            .expect("the failure goes on with the original cause");
        assert_eq!(cause.to_string(), "the disk is full");
        assert_eq!(format!("{:?}", Report::from(failed)).lines().count(), 2);
    }
}
