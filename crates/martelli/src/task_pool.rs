//! [`TaskPool`]: a pool that takes only `#[martelli::task]` functions.

use crate::capture::Captured;
use crate::consume::Consume;
use crate::error::Error;
use crate::future::Future;
use crate::options::{Shutdown, TaskOptions};
use crate::pool::{Pool, Submitter};
use crate::queue::JoinableQueue;
use crate::task::Task;
use crate::task_map::TaskMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A [`Pool`] that takes only [`#[martelli::task]`](crate::task) functions.
///
/// A [`Pool`] takes closures and tasks alike, and a process pool refuses a closure at run time
/// ([`Error::NotATask`]): a closure cannot cross a process boundary. A `TaskPool` has no method that
/// takes a closure, so the same mistake is a compile error, and code written against it runs unchanged
/// on every backend — a thread pool runs the tasks in this process, a process pool in its workers.
///
/// ```
/// use martelli::TaskPool;
///
/// #[martelli::task]
/// fn checksum(data: Vec<u8>) -> u32 {
///     data.iter().map(|&b| u32::from(b)).sum()
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     martelli::init(); // a process started as a worker serves tasks here
///     // "processes:2" in production; the spec is a setting, not code.
///     let pool = TaskPool::from_env("threads:2")?;
///     assert_eq!(pool.submit_task(checksum, (vec![1, 2, 3],))?.wait()?, 6);
///     let sums: Vec<u32> = pool
///         .map_task(checksum, (0..4u8).map(|n| (vec![n; 3],)))
///         .collect::<Result<_, _>>()?;
///     assert_eq!(sums, [0, 3, 6, 9]);
///     Ok(())
/// }
/// ```
///
/// It does not compile with a closure:
///
/// ```compile_fail
/// let pool = martelli::TaskPool::from_spec("threads:2")?;
/// pool.submit_task(|| 1 + 1, ())?;
/// # Ok::<(), martelli::Error>(())
/// ```
///
/// Dropping it drops the pool: queued and running tasks finish first.
#[derive(Debug)]
pub struct TaskPool {
    pool: Pool,
}

impl TaskPool {
    /// A pool of `n` worker processes (0: one per available core), as [`Pool::processes`]. The
    /// program's `main` must call [`martelli::init()`](crate::init) first.
    pub fn processes(n: usize) -> Result<TaskPool, Error> {
        Pool::processes(n).map(TaskPool::from)
    }

    /// A pool from a spec (`"threads:8"`, `"processes:4"`, …), as [`Pool::from_spec`].
    pub fn from_spec(spec: &str) -> Result<TaskPool, Error> {
        Pool::from_spec(spec).map(TaskPool::from)
    }

    /// A pool from the `MARTELLI_POOL` environment variable, or `default` when it is unset, as
    /// [`Pool::from_env`].
    pub fn from_env(default: &str) -> Result<TaskPool, Error> {
        Pool::from_env(default).map(TaskPool::from)
    }

    /// Submits `task` with its arguments (a tuple); types are checked at compile time. See
    /// [`Pool::submit_task`].
    pub fn submit_task<T: Task>(&self, task: T, args: T::Args) -> Result<Future<T::Output>, Error> {
        self.pool.submit_task(task, args)
    }

    /// Submits a task by its registered name; types are checked when it runs. See
    /// [`Pool::submit_named`].
    pub fn submit_named<A, R>(&self, name: &str, args: A) -> Result<Future<R>, Error>
    where
        A: Serialize,
        R: DeserializeOwned + Send + 'static,
    {
        self.pool.submit_named(name, args)
    }

    /// Submits `task` with its stdout and stderr captured (process pools). See
    /// [`Pool::submit_task_captured`].
    pub fn submit_task_captured<T: Task>(
        &self,
        task: T,
        args: T::Args,
    ) -> Result<Future<Captured<T::Output>>, Error> {
        self.pool.submit_task_captured(task, args)
    }

    /// Maps `task` over `inputs` lazily, in chunks, results in input order. See [`Pool::map_task`].
    pub fn map_task<T, I>(&self, task: T, inputs: I) -> TaskMap<'_, T, I::IntoIter>
    where
        T: Task,
        I: IntoIterator<Item = T::Args>,
    {
        self.pool.map_task(task, inputs)
    }

    /// Daemon consumers that run `task` on every item of `queue`. See [`Pool::consume_task`].
    pub fn consume_task<T: Task>(
        &self,
        task: T,
        queue: &JoinableQueue<T::Args>,
    ) -> Consume<'_, T::Args, T::Output> {
        self.pool.consume_task(task, queue)
    }

    /// The task verbs with `options` (priority, timeout; on a process pool the timeout kills the
    /// worker running the task) for the one call that follows, as [`Pool::with`].
    pub fn with(&self, options: impl Into<TaskOptions>) -> TaskSubmitter<'_> {
        TaskSubmitter {
            inner: self.pool.with(options),
        }
    }

    /// The backend's name (`"threads"`, `"processes"`, …).
    pub fn kind(&self) -> &'static str {
        self.pool.kind()
    }

    /// How many tasks can run at once.
    pub fn workers(&self) -> usize {
        self.pool.workers()
    }

    /// Tasks waiting to start.
    pub fn queued(&self) -> usize {
        self.pool.queued()
    }

    /// True once the pool is shutting down.
    pub fn is_shut_down(&self) -> bool {
        self.pool.is_shut_down()
    }

    /// Stops taking tasks and finishes the ones taken, as `mode` says. See [`Pool::shutdown`].
    pub fn shutdown(&self, mode: Shutdown) {
        self.pool.shutdown(mode);
    }

    /// The whole [`Pool`] API, closures included: on a process pool they are refused at run time.
    pub fn as_pool(&self) -> &Pool {
        &self.pool
    }

    /// The pool itself.
    pub fn into_pool(self) -> Pool {
        self.pool
    }
}

impl From<Pool> for TaskPool {
    fn from(pool: Pool) -> TaskPool {
        TaskPool { pool }
    }
}

/// The verbs of a [`TaskPool`] with [`TaskOptions`] for one call: what [`TaskPool::with`] returns.
/// Like the pool, it takes tasks only, never closures.
#[derive(Debug, Clone, Copy)]
pub struct TaskSubmitter<'a> {
    inner: Submitter<'a>,
}

impl<'a> TaskSubmitter<'a> {
    /// [`TaskPool::submit_task`] with these options.
    pub fn submit_task<T: Task>(&self, task: T, args: T::Args) -> Result<Future<T::Output>, Error> {
        self.inner.submit_task(task, args)
    }

    /// [`TaskPool::submit_named`] with these options.
    pub fn submit_named<A, R>(&self, name: &str, args: A) -> Result<Future<R>, Error>
    where
        A: Serialize,
        R: DeserializeOwned + Send + 'static,
    {
        self.inner.submit_named(name, args)
    }

    /// [`TaskPool::submit_task_captured`] with these options.
    pub fn submit_task_captured<T: Task>(
        &self,
        task: T,
        args: T::Args,
    ) -> Result<Future<Captured<T::Output>>, Error> {
        self.inner.submit_task_captured(task, args)
    }

    /// [`TaskPool::map_task`] with these options for every chunk.
    pub fn map_task<T, I>(&self, task: T, inputs: I) -> TaskMap<'a, T, I::IntoIter>
    where
        T: Task,
        I: IntoIterator<Item = T::Args>,
    {
        self.inner.map_task(task, inputs)
    }
}
