//! [`Pool`]: the one face every backend shows.
//!
//! - `mod.rs`: the pool itself — constructors, what it reports, shutdown, and the verbs with the
//!   default options;
//! - `builder.rs`: [`PoolBuilder`], its settings and the checks at `build`;
//! - `submit.rs`: [`Submitter`], the verbs with per-call [`TaskOptions`] (`pool.with(options)`),
//!   where every submission is turned into a job for the backend;
//! - `remote.rs`: tasks sent by name to a backend that runs them in other processes.
//!
//! The verbs, their argument order and why there is one of each are in docs/architecture.md
//! ("The submit surface").

mod builder;
mod remote;
mod submit;

pub use builder::{MAX_THREADS, MIN_STACK_SIZE, PoolBuilder, available_cores};
pub(crate) use remote::RemoteRunner;
pub use submit::Submitter;

use crate::backend::{Backend, inline::Inline};
use crate::capture::Captured;
use crate::error::{Error, TaskResult, TrySubmitError};
use crate::future::Future;
use crate::options::{Shutdown, TaskOptions};
use crate::task::Task;
use crate::task_future::Detector;
use crate::watchdog::Watchdog;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A pool of workers that run tasks: the one API over every backend.
///
/// Pick a backend by constructor ([`Pool::inline`], [`Pool::threads`]), by builder
/// ([`Pool::builder`]) or by name at run time ([`Pool::from_spec`], [`Pool::from_env`]). Then hand work
/// over with [`submit`](Pool::submit) (one task, one [`Future`]), [`map`](Pool::map) (a lazy parallel
/// map) or [`scope`](Pool::scope) (tasks that borrow, joined at a barrier). Every verb takes the work
/// first, then what it works on; [`with`](Pool::with) gives one call its own [`TaskOptions`].
///
/// Dropping a pool runs every task already submitted to the end and joins the workers, like
/// [`Pool::shutdown`] with [`Shutdown::Wait`]. A pool is `Send + Sync`: share it by reference, or in an
/// `Arc` to submit from inside tasks.
pub struct Pool {
    /// Shared with the threads of daemon consumers on remote backends ([`Pool::consume_task`]).
    backend: Arc<dyn Backend>,
    daemons: crate::consume::Daemons,
    watchdog: Arc<Watchdog>,
    task_timeout: Option<Duration>,
    detector: Option<Arc<Detector>>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("backend", &self.backend)
            .field("task_timeout", &self.task_timeout)
            .finish()
    }
}

impl Pool {
    /// A pool around a started backend (what [`PoolBuilder::build`] ends with).
    pub(crate) fn from_parts(
        backend: Arc<dyn Backend>,
        task_timeout: Option<Duration>,
        detector: Option<Arc<Detector>>,
    ) -> Pool {
        Pool {
            backend,
            daemons: Default::default(),
            watchdog: Arc::new(Watchdog::default()),
            task_timeout,
            detector,
        }
    }

    /// A builder with the default settings.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::new()
    }

    /// A pool that runs each task on the caller's thread inside `submit`: the 1-core tier.
    pub fn inline() -> Pool {
        Pool::from_parts(Arc::new(Inline::default()), None, None)
    }

    /// A pool of `n` worker threads (0: one per available core).
    pub fn threads(n: usize) -> Result<Pool, Error> {
        PoolBuilder::new().threads(n).build()
    }

    /// A pool of `n` worker processes (0: one per available core); see
    /// [`PoolBuilder::processes`]. The program's `main` must call [`martelli::init()`](crate::init)
    /// first. Closures submitted to it are refused at run time; [`TaskPool`](crate::TaskPool) makes
    /// that a compile error.
    pub fn processes(n: usize) -> Result<Pool, Error> {
        PoolBuilder::new().processes(n).build()
    }

    /// A pool whose tasks run on cluster workers through the Redis broker at `url`; see
    /// [`PoolBuilder::cluster`].
    #[cfg(feature = "cluster")]
    pub fn cluster(url: &str) -> Result<Pool, Error> {
        PoolBuilder::new().cluster(url).build()
    }

    /// A pool that runs async tasks on a tokio event loop (one thread); see
    /// [`PoolBuilder::event_loop`].
    #[cfg(feature = "async")]
    pub fn event_loop() -> Result<Pool, Error> {
        PoolBuilder::new().event_loop().build()
    }

    /// A pool described by a spec string: `"inline"`, `"threads"` (one per core) or `"threads:N"`,
    /// `"processes[:N]"`, `"async[:N]"`, or a broker URL (`"redis://host:6379"`, `"rediss://…"`) for a
    /// cluster pool (feature `cluster`). An unknown spec is an error that lists the valid forms.
    pub fn from_spec(spec: &str) -> Result<Pool, Error> {
        crate::spec::Spec::parse(spec)?.builder().build()
    }

    /// A pool from the `MARTELLI_POOL` environment variable, or from `default` when it is unset, so a
    /// program's tier can change without recompiling: `MARTELLI_POOL=inline ./app` for debugging,
    /// `MARTELLI_POOL=threads:16 ./app` on a bigger machine.
    pub fn from_env(default: &str) -> Result<Pool, Error> {
        match std::env::var("MARTELLI_POOL") {
            Ok(spec) if !spec.trim().is_empty() => Pool::from_spec(&spec),
            _ => Pool::from_spec(default),
        }
    }

    /// The backend's name as a spec writes it: `"inline"`, `"threads"`, `"processes"`, `"async"` or
    /// `"cluster"`. For messages and logs; what a pool can do is in its verbs' errors.
    pub fn kind(&self) -> &'static str {
        self.backend.kind()
    }

    /// How many tasks can run at once.
    pub fn workers(&self) -> usize {
        self.backend.workers()
    }

    /// Tasks waiting to start.
    pub fn queued(&self) -> usize {
        self.backend.queued()
    }

    /// True once [`shutdown`](Pool::shutdown) has begun.
    pub fn is_shut_down(&self) -> bool {
        self.backend.is_shut_down()
    }

    /// The verbs of this pool with `options` (priority, timeout, a name) for the one call that
    /// follows: `pool.with(Priority::High).submit(f)`. See [`TaskOptions`].
    pub fn with(&self, options: impl Into<TaskOptions>) -> Submitter<'_> {
        Submitter::new(self, options.into())
    }

    /// The verbs with the default options.
    #[inline]
    fn plain(&self) -> Submitter<'_> {
        Submitter::new(self, TaskOptions::default())
    }

    /// Submits `f` and returns the future of its value. With a bounded queue, blocks while it is full.
    /// A panic in `f` resolves the future as [`TaskError::Panicked`](crate::TaskError::Panicked); the
    /// worker goes on. On a backend that runs tasks in other processes a closure cannot travel:
    /// [`Error::NotATask`] (use [`submit_task`](Pool::submit_task)).
    #[inline]
    pub fn submit<F, T>(&self, f: F) -> Result<Future<T>, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.plain().submit(f)
    }

    /// Submits `f` if the queue has room now; otherwise hands `f` back in the error
    /// ([`TrySubmitError::Full`] or [`TrySubmitError::ShutDown`]).
    #[inline]
    pub fn try_submit<F, T>(&self, f: F) -> Result<Future<T>, TrySubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.plain().try_submit(f)
    }

    /// Submits a task that returns `Result`: an `Err` resolves the future as
    /// [`TaskError::Failed`](crate::TaskError::Failed), which [`wait`](crate::wait()) with
    /// [`WaitMode::FirstError`](crate::WaitMode::FirstError) reacts to.
    #[inline]
    pub fn submit_fallible<F, T, E>(&self, f: F) -> Result<Future<T>, Error>
    where
        F: FnOnce() -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        self.plain().submit_fallible(f)
    }

    /// Submits an async task and returns the future of its output. On the event-loop backend tasks
    /// interleave at their `.await` points; on other backends a task holds one worker for its whole
    /// life. Cancellation is cooperative: [`Future::cancel`] or a timeout drops the task at its next
    /// `.await` and resolves it as `Cancelled` or `TimedOut`.
    ///
    /// Write the task as an `async` block: `pool.submit_async(async { tokio::time::sleep(d).await })`.
    /// A tokio future made outside the runtime (`pool.submit_async(tokio::time::sleep(d))` from plain
    /// code) panics where it is made, because tokio binds timers and sockets to a runtime when they
    /// are created.
    ///
    /// ```
    /// use martelli::Pool;
    ///
    /// let pool = Pool::event_loop()?;
    /// let fut = pool.submit_async(async {
    ///     tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    ///     "woke"
    /// })?;
    /// assert_eq!(fut.wait()?, "woke");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submit_async<F>(&self, fut: F) -> Result<Future<F::Output>, Error>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.plain().submit_async(fut)
    }

    /// Runs `fut` on this pool and blocks until it is done: the bridge from blocking code to async
    /// code. Called from a thread that drives a tokio runtime it would block that runtime (a deadlock
    /// when the task needs it), so it refuses with [`Error::WouldBlockRuntime`]; `.await` the future
    /// from [`submit_async`](Pool::submit_async) there instead.
    pub fn block_on<F>(&self, fut: F) -> Result<TaskResult<F::Output>, Error>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.plain().block_on(fut)
    }

    /// Submits a [`#[martelli::task]`](crate::task) function with its arguments (a tuple) and
    /// returns the future of its value. On the processes and cluster backends a worker runs it; on
    /// every other backend it runs in this process, so the same code runs in every tier. Argument
    /// and result types are checked at compile time. With a timeout
    /// ([`with`](Pool::with)) on a process pool, the worker running a task past it is killed with
    /// its process group and replaced.
    ///
    /// ```
    /// #[martelli::task]
    /// fn word_count(text: String) -> usize {
    ///     text.split_whitespace().count()
    /// }
    ///
    /// let pool = martelli::Pool::from_env("threads")?;
    /// let fut = pool.submit_task(word_count, ("one task API".to_owned(),))?;
    /// assert_eq!(fut.wait()?, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submit_task<T: Task>(&self, task: T, args: T::Args) -> Result<Future<T::Output>, Error> {
        self.plain().submit_task(task, args)
    }

    /// Submits a task by its registered name, with arguments and result types given by the caller
    /// (checked when the task runs, not at compile time: prefer [`submit_task`](Pool::submit_task)).
    /// A name no task has resolves the future as
    /// [`TaskError::UnknownTask`](crate::TaskError::UnknownTask); arguments of the wrong types as
    /// [`TaskError::Codec`](crate::TaskError::Codec).
    pub fn submit_named<A, R>(&self, name: &str, args: A) -> Result<Future<R>, Error>
    where
        A: Serialize,
        R: DeserializeOwned + Send + 'static,
    {
        self.plain().submit_named(name, args)
    }

    /// [`submit_task`](Pool::submit_task) with the task's stdout and stderr captured: the future
    /// resolves to a [`Captured`] with the task's outcome and what it wrote — by `print!` and
    /// `eprint!`, raw writes to descriptors 1 and 2, or programs it started — each stream cut at
    /// [`PoolBuilder::max_captured_output`]. A task that crashes, times out or is cancelled while it
    /// runs still resolves to a `Captured`, with what it wrote until then; the future is an `Err`
    /// only when the task never ran (cancelled while queued, arguments that could not be sent).
    ///
    /// Process pools only: on any other backend the tasks share this process's descriptors, and
    /// this returns [`Error::CaptureNeedsProcesses`].
    pub fn submit_task_captured<T: Task>(
        &self,
        task: T,
        args: T::Args,
    ) -> Result<Future<Captured<T::Output>>, Error> {
        self.plain().submit_task_captured(task, args)
    }

    pub(crate) fn daemons(&self) -> &crate::consume::Daemons {
        &self.daemons
    }

    pub(crate) fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// Refuses closures on backends that run tasks in other processes.
    pub(crate) fn closures_allowed(&self) -> Result<(), Error> {
        match self.backend.remote() {
            Some(_) => Err(Error::NotATask {
                backend: self.backend.kind(),
            }),
            None => Ok(()),
        }
    }

    /// Runs task `T` on this pool's remote backend from any thread, for as long as the backend takes
    /// tasks: what daemon consumers on a process pool call for each item. `None` on in-process
    /// backends.
    pub(crate) fn remote_runner<T: Task>(&self) -> Option<RemoteRunner<T>> {
        self.backend.remote()?;
        Some(RemoteRunner::new(
            Arc::clone(&self.backend),
            self.task_timeout,
        ))
    }

    /// Stops taking tasks and finishes the ones taken, as `mode` says; returns when the workers have
    /// exited. Later submissions fail with [`Error::ShutDown`]. Calling it again does nothing more.
    pub fn shutdown(&self, mode: Shutdown) {
        // Daemon consumers (`Pool::consume`) wait on their queues, not on the pool: stop them first.
        self.daemons.stop_all();
        self.backend.shutdown(mode);
        self.watchdog.stop();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown(Shutdown::Wait);
    }
}
