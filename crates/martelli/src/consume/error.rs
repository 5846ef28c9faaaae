//! Why consumers did not start ([`ConsumeError`]) and how an item failed ([`ItemError`]).

use crate::error::TaskError;
use std::any::Any;
use std::fmt;

/// Why [`Consume::start`](super::Consume::start) started no consumer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    /// The pool's backend cannot host a daemon: the inline backend runs tasks on the caller's thread,
    /// the event loop (`async`) on its loop thread, and a consumer there would block that thread for
    /// the life of the pool.
    #[error(
        "daemon consumers need workers that are threads of their own, but the {backend:?} backend runs \
         tasks {runs_on}, which a consumer would block for the life of the pool; use a thread pool \
         (Pool::threads) for consumers"
    )]
    Unsupported {
        /// The pool's backend (`Pool::kind`).
        backend: &'static str,
        /// Where that backend runs tasks.
        runs_on: &'static str,
    },
    /// The pool is shut down.
    #[error("the pool is shut down and starts no consumers (build a new pool)")]
    ShutDown,
    /// A closure was given to a pool that runs tasks in other processes: only `#[martelli::task]`
    /// functions cross a process boundary.
    #[error(
        "the {backend:?} backend runs #[martelli::task] functions in other processes, not closures; \
         serve the queue with Pool::consume_task"
    )]
    NotATask {
        /// The pool's backend (`Pool::kind`).
        backend: &'static str,
    },
    /// More consumer threads were asked for than a pool may have.
    #[error(
        "asked for {asked} consumers, more than the {max} consumer threads a pool may have; each \
         consumer keeps one task in flight, so a few per worker process are plenty"
    )]
    TooManyConsumers {
        /// Consumers asked for.
        asked: usize,
        /// The most a pool may have.
        max: usize,
    },
    /// The operating system refused to start a consumer thread.
    #[error("could not start a consumer thread: {0} (ask for fewer consumers)")]
    Spawn(#[source] std::io::Error),
    /// [`Consume::consumers`](super::Consume::consumers) was given 0.
    #[error("asked for 0 consumers; ask for at least 1")]
    NoConsumers,
    /// Fewer pool workers are free than consumers were asked for.
    #[error(
        "asked for {asked} consumer(s) but only {free} of the pool's {workers} workers are free: each \
         consumer occupies a worker for the life of the pool (build the pool with more threads, ask \
         for fewer consumers, or stop other consumers first)"
    )]
    NotEnoughWorkers {
        /// Consumers asked for.
        asked: usize,
        /// Workers not already serving a queue.
        free: usize,
        /// The pool's workers.
        workers: usize,
    },
}

/// An item a consumer failed on: the error it returned, its panic, its worker's death or timeout,
/// or a result that could not be delivered; with the item itself when the consumer kept it.
///
/// ```
/// use martelli::{ItemError, JoinableQueue, Pool, TaskError};
///
/// #[martelli::task]
/// fn parse(text: String) -> Result<u32, std::num::ParseIntError> {
///     text.parse()
/// }
///
/// let pool = Pool::threads(1)?;
/// let input = JoinableQueue::new();
/// let errors: JoinableQueue<ItemError> = JoinableQueue::new();
/// pool.consume_task(parse, &input).errors(&errors).start()?;
/// input.put(("12".to_string(),))?;
/// input.put(("twelve".to_string(),))?;
/// input.join();
/// let mut failure = errors.try_get()?;
/// assert!(matches!(failure.error(), TaskError::Failed(_)));
/// // The task's argument tuple: which input failed.
/// assert_eq!(failure.take_item::<(String,)>(), Some(("twelve".to_string(),)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(thiserror::Error)]
#[error("consumer {consumer} failed on an item: {error}")]
pub struct ItemError {
    pub(super) error: TaskError,
    pub(super) consumer: usize,
    /// The item, when the consumer kept it (`consume_task`). Behind a mutex only so that the error
    /// stays `Sync` for any item type; it is reached through `&mut self`, never locked.
    pub(super) item: Option<std::sync::Mutex<Box<dyn Any + Send>>>,
}

impl fmt::Debug for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ItemError")
            .field("error", &self.error)
            .field("consumer", &self.consumer)
            .field("has_item", &self.has_item())
            .finish()
    }
}

impl ItemError {
    /// How the item failed ([`TaskError::Failed`], [`TaskError::Panicked`], or on a process or
    /// cluster pool also [`TaskError::WorkerDied`], [`TaskError::TimedOut`] …).
    pub fn error(&self) -> &TaskError {
        &self.error
    }

    /// The error, by value.
    pub fn into_error(self) -> TaskError {
        self.error
    }

    /// Which consumer of its group (from 0) failed.
    pub fn consumer(&self) -> usize {
        self.consumer
    }

    /// True while this failure holds its item (see [`take_item`](ItemError::take_item)).
    pub fn has_item(&self) -> bool {
        self.item.is_some()
    }

    /// Takes the item that failed, if this failure holds one of type `T`; a wrong `T` gives `None`
    /// and leaves the item in place.
    ///
    /// Failures from [`Pool::consume_task`](crate::Pool::consume_task) hold their item, `T` being the task's argument tuple
    /// (`(String,)` for a task of one `String`), on every backend; a result that could not be
    /// delivered (a closed output queue) holds none, the task having run. Failures from
    /// [`consume`](crate::Pool::consume) and [`consume_fallible`](crate::Pool::consume_fallible) hold none: their
    /// closure took the item.
    pub fn take_item<T: 'static>(&mut self) -> Option<T> {
        let boxed = self
            .item
            .take()?
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        match boxed.downcast::<T>() {
            Ok(item) => Some(*item),
            Err(other) => {
                self.item = Some(std::sync::Mutex::new(other));
                None
            }
        }
    }
}

/// How a consumer's task failed, with the item when the task handed it back.
pub(super) struct Failure<T> {
    pub(super) error: TaskError,
    pub(super) item: Option<T>,
}

impl<T> From<TaskError> for Failure<T> {
    fn from(error: TaskError) -> Self {
        Failure { error, item: None }
    }
}

// User closures are shared with `std`'s `Arc` even under loom: they are not synchronisation state, and
