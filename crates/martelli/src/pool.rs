//! [`Pool`] and [`PoolBuilder`]: the one face every backend shows.

#[cfg(feature = "cluster")]
use crate::backend::cluster::{Cluster, ClusterSettings};
#[cfg(feature = "async")]
use crate::backend::event_loop::EventLoop;
#[cfg(target_os = "linux")]
use crate::backend::processes::{ProcessConfig, Processes};
use crate::backend::{
    Admission, Backend, BackendConfig, Initializer, Rejected, RemoteJob, RemoteRejected, RunKind,
    Sink, inline::Inline, threads::Threads,
};
use crate::cancel::CancelToken;
use crate::capture::{Captured, CapturedSink};
use crate::cell::{CellJob, CellTimeout, new_task};
use crate::codec;
use crate::error::TaskError;
use crate::error::TaskResult;
use crate::error::{Error, TrySubmitError};
use crate::future::{Future, Promise, promise};
use crate::job::{Body, Fallible, Plain, Timeout};
use crate::local::WorkerInfo;
use crate::spec::Spec;
use crate::task::{Registry, Task};
use crate::task_future::{BlockingReport, Detector, driver};
use crate::watchdog::Watchdog;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The most worker threads one pool may have. Far above what any machine runs well; it catches
/// mistakes like a million threads before the operating system does.
pub const MAX_THREADS: usize = 100_000;

/// The smallest stack a worker may have (64 KiB).
pub const MIN_STACK_SIZE: usize = 64 * 1024;

/// A task's priority: queued tasks start in priority order (FIFO within a level), so a `High`
/// submission — the foreground — overtakes queued `Normal` and `Low` ones. A task that already runs is
/// never preempted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Interactive work: starts before everything queued at lower levels.
    High,
    /// The default.
    #[default]
    Normal,
    /// Background work: starts only when nothing of higher priority waits.
    Low,
}

impl Priority {
    pub(crate) fn level(self) -> usize {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }
}

/// How [`Pool::shutdown`] treats work that has not finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Shutdown {
    /// Run every queued task, then stop (what dropping a pool does).
    #[default]
    Wait,
    /// Cancel queued tasks (their futures resolve as `Cancelled`), fire the tokens of running ones, and
    /// wait for the running ones to return.
    CancelPending,
}

/// Per-task settings for [`Pool::submit_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskOptions {
    priority: Priority,
    timeout: Option<Duration>,
    name: Option<&'static str>,
}

impl TaskOptions {
    /// Normal priority, the pool's default timeout.
    pub fn new() -> Self {
        TaskOptions::default()
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets a timeout for this task, counted from the moment it starts running; it replaces the pool's
    /// default. On threads the task is not killed: its future resolves as `TimedOut` and its
    /// [`CancelToken`](crate::CancelToken) fires. On a process pool the worker running it is killed
    /// with its process group, and replaced. On a cluster pool it is counted from submission (time in
    /// the queue included): a worker does not start the task after it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Names the task in diagnostics (the blocking-call detector's warnings).
    pub fn name(mut self, name: &'static str) -> Self {
        self.name = Some(name);
        self
    }
}

/// The backend a builder will build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Inline,
    Threads(usize),
    /// None: a current-thread runtime; Some(n): a multi-thread runtime with n workers.
    #[cfg(feature = "async")]
    EventLoop(Option<usize>),
    /// n worker processes (0: one per core).
    Processes(usize),
    /// Cluster workers through Redis (the settings are in `PoolBuilder::cluster`).
    #[cfg(feature = "cluster")]
    Cluster,
}

/// Settings of the process backend.
#[derive(Debug, Clone)]
struct ProcessSettings {
    program: Option<PathBuf>,
    args: Vec<OsString>,
    handshake_timeout: Duration,
    max_frame: usize,
    capture_limit: usize,
    max_tasks_per_worker: Option<usize>,
    max_worker_memory: Option<u64>,
    nice: Option<i32>,
    #[cfg(target_os = "linux")]
    rlimits: Vec<(crate::process::Resource, Option<u64>, Option<u64>)>,
}

impl Default for ProcessSettings {
    fn default() -> Self {
        ProcessSettings {
            program: None,
            args: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
            max_frame: codec::DEFAULT_MAX_FRAME,
            capture_limit: crate::capture::DEFAULT_CAPTURE_LIMIT,
            max_tasks_per_worker: None,
            max_worker_memory: None,
            nice: None,
            #[cfg(target_os = "linux")]
            rlimits: Vec::new(),
        }
    }
}

/// Configures and builds a [`Pool`].
///
/// ```
/// use martelli::Pool;
/// use std::time::Duration;
///
/// let pool = Pool::builder()
///     .threads(4)
///     .name_prefix("resize")
///     .queue_bound(1_000)
///     .task_timeout(Duration::from_secs(30))
///     .build()?;
/// assert_eq!(pool.workers(), 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct PoolBuilder {
    kind: Kind,
    name_prefix: String,
    stack_size: Option<usize>,
    queue_bound: Option<usize>,
    task_timeout: Option<Duration>,
    initializer: Option<Initializer>,
    detector: Option<Arc<Detector>>,
    processes: ProcessSettings,
    #[cfg(feature = "cluster")]
    pub(crate) cluster: ClusterSettings,
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("kind", &self.kind)
            .field("name_prefix", &self.name_prefix)
            .field("stack_size", &self.stack_size)
            .field("queue_bound", &self.queue_bound)
            .field("task_timeout", &self.task_timeout)
            .field("initializer", &self.initializer.is_some())
            .field("detector", &self.detector)
            .field("processes", &self.processes)
            .finish_non_exhaustive()
    }
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            kind: Kind::Threads(0),
            name_prefix: "martelli".to_owned(),
            stack_size: None,
            queue_bound: None,
            task_timeout: None,
            initializer: None,
            detector: None,
            processes: ProcessSettings::default(),
            #[cfg(feature = "cluster")]
            cluster: ClusterSettings::default(),
        }
    }
}

impl PoolBuilder {
    /// A builder for a thread pool with one worker per core; change the backend with
    /// [`inline`](PoolBuilder::inline) or [`threads`](PoolBuilder::threads).
    pub fn new() -> Self {
        PoolBuilder::default()
    }

    /// Runs each task on the caller's thread, inside `submit` (the 1-core tier).
    pub fn inline(mut self) -> Self {
        self.kind = Kind::Inline;
        self
    }

    /// Runs tasks on `n` worker threads; 0 means one per available core.
    pub fn threads(mut self, n: usize) -> Self {
        self.kind = Kind::Threads(n);
        self
    }

    /// Runs tasks on a tokio event loop: a current-thread runtime on a thread of its own (one thread,
    /// used to the full). Built inside a tokio runtime, the pool uses that runtime instead. Async tasks
    /// are submitted with [`Pool::spawn`]; they switch at `.await` points only.
    #[cfg(feature = "async")]
    pub fn event_loop(mut self) -> Self {
        self.kind = Kind::EventLoop(None);
        self
    }

    /// Runs tasks on a multi-thread tokio runtime with `n` worker threads (0: one per core).
    #[cfg(feature = "async")]
    pub fn event_loop_threads(mut self, n: usize) -> Self {
        self.kind = Kind::EventLoop(Some(n));
        self
    }

    /// Runs tasks on `n` worker processes (0: one per available core): this program, started again,
    /// whose `main` calls [`martelli::init()`](crate::init) first. Workers run
    /// [`#[martelli::task]`](crate::task) functions ([`Pool::submit_task`]), one task at a time each;
    /// a task past its timeout is killed with its worker's process group, and a worker that dies
    /// fails only the task it ran and is replaced. Linux only.
    pub fn processes(mut self, n: usize) -> Self {
        self.kind = Kind::Processes(n);
        self
    }

    /// Runs tasks on cluster workers through the Redis broker at `url` (`redis://[user:password@]host
    /// [:port][/db]`), on any number of machines: the 9+ core tier. Workers are programs that serve
    /// [`cluster::Registered`](crate::cluster::Registered); they run
    /// [`#[martelli::task]`](crate::task) functions submitted with [`Pool::submit_task`] or
    /// [`Pool::map_task`]. See the `cluster_*` setters for the queue and the limits. Feature
    /// `cluster`.
    ///
    /// Timeouts count from submission; [`Future::cancel`] writes a tombstone so that no worker starts
    /// a task still queued (one already running finishes, its result dropped). Dropping the pool waits
    /// for the result of every task submitted, as on every backend: with no worker serving the queue,
    /// bound that wait with timeouts or use [`Pool::shutdown`] with [`Shutdown::CancelPending`].
    #[cfg(feature = "cluster")]
    pub fn cluster(mut self, url: impl Into<String>) -> Self {
        self.kind = Kind::Cluster;
        self.cluster = ClusterSettings::new(url.into());
        self
    }

    /// Starts workers from `program` instead of this program (processes backend). It must be a
    /// martelli program built with the same tasks, whose `main` calls `martelli::init()` first.
    pub fn worker_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.processes.program = Some(program.into());
        self
    }

    /// Command-line arguments for each worker process (none by default).
    pub fn worker_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.processes.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// How long a new worker process may take to answer the handshake (default 10 s). One that
    /// does not is killed, and the pool does not start.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.processes.handshake_timeout = timeout;
        self
    }

    /// The largest message between the pool and a worker process, in bytes (default 1 GiB). A task
    /// whose arguments or result encode larger fails with [`TaskError::Codec`]; nothing larger is
    /// ever allocated for a message.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.processes.max_frame = bytes;
        self
    }

    /// The most bytes of stdout, and of stderr, that a task submitted with
    /// [`Pool::submit_task_captured`] returns (default 1 MiB); what it writes beyond is counted, not
    /// kept ([`CapturedStream::is_truncated`](crate::CapturedStream::is_truncated)).
    pub fn max_captured_output(mut self, bytes: usize) -> Self {
        self.processes.capture_limit = bytes;
        self
    }

    /// Replaces each worker process after it has run `n` tasks (default: never), to bound what leaks
    /// in long-lived workers.
    pub fn max_tasks_per_worker(mut self, n: usize) -> Self {
        self.processes.max_tasks_per_worker = Some(n);
        self
    }

    /// Replaces a worker process whose resident memory has grown past `bytes` (checked after each
    /// task, so a task is never interrupted for it; default: never). Bounds what a leak, a cache or a
    /// fragmented heap costs in a long-lived worker. To stop a single task from allocating too much,
    /// use [`worker_rlimit`](PoolBuilder::worker_rlimit) with `Resource::As`.
    pub fn max_worker_memory(mut self, bytes: u64) -> Self {
        self.processes.max_worker_memory = Some(bytes);
        self
    }

    /// Lowers the priority of worker processes by `increment` (as `nice(1)`), so background work
    /// leaves the foreground responsive.
    pub fn worker_nice(mut self, increment: i32) -> Self {
        self.processes.nice = Some(increment);
        self
    }

    /// Sets a resource limit in each worker process (`setrlimit`; `None` is unlimited): for example
    /// `Resource::As` caps its address space, so a runaway allocation fails in the worker (which is
    /// then replaced) instead of pushing the machine into swap, and `Resource::Cpu` caps its CPU
    /// seconds (the kernel then kills it with `SIGXCPU`). The limits hold for a worker's whole life:
    /// combine them with [`max_tasks_per_worker`](PoolBuilder::max_tasks_per_worker).
    #[cfg(target_os = "linux")]
    pub fn worker_rlimit(
        mut self,
        resource: crate::process::Resource,
        soft: Option<u64>,
        hard: Option<u64>,
    ) -> Self {
        self.processes.rlimits.push((resource, soft, hard));
        self
    }

    /// Turns on the blocking-call detector (for development): when a task runs `threshold` or longer
    /// between two `.await` points — the classic "something blocked the loop" bug — a warning naming
    /// the task goes to stderr, or to the callback set with [`on_blocking`](PoolBuilder::on_blocking).
    /// It watches async tasks ([`Pool::spawn`]) on every backend.
    pub fn detect_blocking(mut self, threshold: Duration) -> Self {
        let report = match self.detector.take() {
            Some(d) => d.report.clone(),
            None => Arc::new(|r: &BlockingReport| eprintln!("martelli: warning: {r}")),
        };
        self.detector = Some(Arc::new(Detector { threshold, report }));
        self
    }

    /// Sends the blocking-call detector's reports to `report` instead of stderr (and turns the
    /// detector on, at 100 ms, if [`detect_blocking`](PoolBuilder::detect_blocking) was not called).
    pub fn on_blocking<F>(mut self, report: F) -> Self
    where
        F: Fn(&BlockingReport) + Send + Sync + 'static,
    {
        let threshold = self
            .detector
            .as_ref()
            .map_or(Duration::from_millis(100), |d| d.threshold);
        self.detector = Some(Arc::new(Detector {
            threshold,
            report: Arc::new(report),
        }));
        self
    }

    /// Names workers `{prefix}-{index}` (default `martelli`), as shown by debuggers and `top -H`.
    pub fn name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = prefix.into();
        self
    }

    /// Each worker thread's stack size in bytes (default: the platform's, 2 MiB on Linux).
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Bounds the queue of tasks waiting to start: `submit` then blocks while `bound` tasks wait
    /// (backpressure), and `try_submit` hands the task back. Unbounded by default.
    pub fn queue_bound(mut self, bound: usize) -> Self {
        self.queue_bound = Some(bound);
        self
    }

    /// A default timeout for every task (a task's own [`TaskOptions::timeout`] replaces it).
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = Some(timeout);
        self
    }

    /// Runs `init` on each worker as it starts, before it takes any task (Python's `initializer`).
    /// If it panics on any worker, [`build`](PoolBuilder::build) fails with [`Error::Initializer`].
    /// For state that tasks use, see [`WorkerLocal`](crate::WorkerLocal).
    pub fn initializer<F>(mut self, init: F) -> Self
    where
        F: Fn(&WorkerInfo) + Send + Sync + 'static,
    {
        self.initializer = Some(Arc::new(init));
        self
    }

    /// Checks the settings and starts the pool.
    pub fn build(self) -> Result<Pool, Error> {
        if let Some(bound) = self.queue_bound {
            if bound == 0 {
                return Err(Error::InvalidConfig(
                    "queue_bound(0) would block every submit forever; use a bound of at least 1, or no \
                     bound"
                        .into(),
                ));
            }
        }
        if let Some(size) = self.stack_size {
            if size < MIN_STACK_SIZE {
                return Err(Error::InvalidConfig(format!(
                    "stack_size({size}) is below the minimum of {MIN_STACK_SIZE} bytes"
                )));
            }
        }
        if self.task_timeout == Some(Duration::ZERO) {
            return Err(Error::InvalidConfig(
                "task_timeout(0) would time out every task at once; use a positive duration".into(),
            ));
        }
        if self.name_prefix.contains('\0') {
            return Err(Error::InvalidConfig(
                "name_prefix contains a NUL byte, which thread names cannot hold".into(),
            ));
        }
        let backend: Arc<dyn Backend> = match self.kind {
            Kind::Inline => Arc::new(Inline::default()),
            #[cfg(feature = "cluster")]
            Kind::Cluster => Arc::new(Cluster::start(self.cluster)?),
            #[cfg(target_os = "linux")]
            Kind::Processes(n) => {
                let workers = if n == 0 { available_cores() } else { n };
                if self.processes.max_tasks_per_worker == Some(0) {
                    return Err(Error::InvalidConfig(
                        "max_tasks_per_worker(0) would retire every worker before its first task; \
                         use at least 1"
                            .into(),
                    ));
                }
                if self.processes.max_frame < 64 {
                    return Err(Error::InvalidConfig(format!(
                        "max_frame_size({}) is too small to hold a message header; use at least 64",
                        self.processes.max_frame
                    )));
                }
                let p = self.processes;
                Arc::new(Processes::start(ProcessConfig {
                    workers,
                    name_prefix: self.name_prefix,
                    program: p.program,
                    args: p.args,
                    handshake_timeout: p.handshake_timeout,
                    max_frame: p.max_frame,
                    capture_limit: p.capture_limit,
                    max_tasks_per_worker: p.max_tasks_per_worker,
                    max_worker_memory: p.max_worker_memory,
                    nice: p.nice,
                    rlimits: p.rlimits,
                    queue_bound: self.queue_bound,
                })?)
            }
            #[cfg(not(target_os = "linux"))]
            Kind::Processes(_) => {
                return Err(Error::InvalidConfig(
                    "the processes backend runs on Linux only".into(),
                ));
            }
            Kind::Threads(n) => {
                let workers = if n == 0 { available_cores() } else { n };
                if workers > MAX_THREADS {
                    return Err(Error::InvalidConfig(format!(
                        "threads({workers}) is more than the {MAX_THREADS} threads a pool may have; \
                         for many concurrent waits use the async backend"
                    )));
                }
                let config = BackendConfig {
                    workers,
                    name_prefix: self.name_prefix,
                    stack_size: self.stack_size,
                    queue_bound: self.queue_bound,
                    initializer: self.initializer.clone(),
                };
                Arc::new(Threads::start(&config)?)
            }
            #[cfg(feature = "async")]
            Kind::EventLoop(threads) => {
                let threads = threads.map(|n| if n == 0 { available_cores() } else { n });
                if let Some(n) = threads.filter(|&n| n > MAX_THREADS) {
                    return Err(Error::InvalidConfig(format!(
                        "event_loop_threads({n}) is more than the {MAX_THREADS} threads a pool may have"
                    )));
                }
                Arc::new(EventLoop::start(
                    threads,
                    &self.name_prefix,
                    self.queue_bound,
                )?)
            }
        };
        if let (Kind::Inline, Some(init)) = (self.kind, &self.initializer) {
            init(&WorkerInfo::current());
        }
        Ok(Pool {
            backend,
            daemons: Default::default(),
            watchdog: Arc::new(Watchdog::default()),
            task_timeout: self.task_timeout,
            detector: self.detector,
        })
    }
}

/// The number of cores this process may use (its CPU affinity, and the cgroup quota where the standard
/// library reads it); at least 1.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A pool of workers that run tasks: the one API over every backend.
///
/// Pick a backend by constructor ([`Pool::inline`], [`Pool::threads`]), by builder
/// ([`Pool::builder`]) or by name at run time ([`Pool::from_spec`], [`Pool::from_env`]). Then hand work
/// over with [`submit`](Pool::submit) (one task, one [`Future`]), [`map`](Pool::map) (a lazy parallel
/// map) or [`scope`](Pool::scope) (tasks that borrow, joined at a barrier).
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
    /// A builder with the default settings.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::new()
    }

    /// A pool that runs each task on the caller's thread inside `submit`: the 1-core tier.
    pub fn inline() -> Pool {
        Pool {
            backend: Arc::new(Inline::default()),
            daemons: Default::default(),
            watchdog: Arc::new(Watchdog::default()),
            task_timeout: None,
            detector: None,
        }
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

    /// Submits a [`#[martelli::task]`](crate::task) function with its arguments (a tuple) and
    /// returns the future of its value. On the processes backend a worker process runs it; on every
    /// other backend it runs in this process, so the same code runs in every tier. Argument and
    /// result types are checked at compile time.
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
        self.submit_task_with(TaskOptions::default(), task, args)
    }

    /// [`submit_task`](Pool::submit_task) with per-task options (priority, timeout). On the
    /// processes backend a timeout is hard: the worker running the task is killed with its process
    /// group and replaced.
    pub fn submit_task_with<T: Task>(
        &self,
        options: TaskOptions,
        _task: T,
        args: T::Args,
    ) -> Result<Future<T::Output>, Error> {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.backend.cluster() {
            let timeout = options.timeout.or(self.task_timeout);
            return cluster.submit(options.priority, timeout, T::NAME, &args);
        }
        match self.backend.remote() {
            Some(_) => self.submit_remote::<T::Args, T::Output>(options, T::NAME, &args),
            None => self
                .submit_body(options, TaskBody::<T>(args), Admission::Wait)
                .map_err(|_| Error::ShutDown),
        }
    }

    /// Submits a task by its registered name, with arguments and result types given by the caller
    /// (checked when the task runs, not at compile time: prefer [`submit_task`](Pool::submit_task)).
    /// A name no task has resolves the future as [`TaskError::UnknownTask`]; arguments of the wrong
    /// types as [`TaskError::Codec`].
    pub fn submit_named<A, R>(&self, name: &str, args: A) -> Result<Future<R>, Error>
    where
        A: Serialize,
        R: DeserializeOwned + Send + 'static,
    {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.backend.cluster() {
            return cluster.submit(Priority::Normal, self.task_timeout, name, &args);
        }
        if self.backend.remote().is_some() {
            return self.submit_remote::<A, R>(TaskOptions::default(), name, &args);
        }
        let encoded = postcard::to_stdvec(&args)
            .map_err(|e| Error::InvalidConfig(format!("the arguments do not encode: {e}")))?;
        let body = NamedBody {
            name: name.to_owned(),
            args: encoded,
        };
        self.submit_body(TaskOptions::default(), body, Admission::Wait)
            .map_err(|_| Error::ShutDown)
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
        self.submit_task_captured_with(TaskOptions::default(), task, args)
    }

    /// [`submit_task_captured`](Pool::submit_task_captured) with per-task options.
    pub fn submit_task_captured_with<T: Task>(
        &self,
        options: TaskOptions,
        _task: T,
        args: T::Args,
    ) -> Result<Future<Captured<T::Output>>, Error> {
        if self.backend.remote().is_none() || self.backend.kind() != "processes" {
            return Err(Error::CaptureNeedsProcesses {
                backend: self.backend.kind(),
            });
        }
        let call = RemoteCall {
            options,
            name: T::NAME,
            kind: RunKind::Captured,
        };
        send_remote(
            &*self.backend,
            self.task_timeout,
            call,
            &args,
            |promise, timeout| {
                Box::new(CapturedSink::new(
                    promise,
                    timeout,
                    decode_value::<T::Output>,
                ))
            },
        )
    }

    fn submit_remote<A, R>(
        &self,
        options: TaskOptions,
        name: &str,
        args: &A,
    ) -> Result<Future<R>, Error>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let call = RemoteCall {
            options,
            name,
            kind: RunKind::One,
        };
        send_remote(
            &*self.backend,
            self.task_timeout,
            call,
            args,
            plain(decode_value::<R>),
        )
    }

    /// Sends a chunk of a task map: every item runs on one worker, one round trip.
    pub(crate) fn submit_chunk<T: Task>(
        &self,
        options: TaskOptions,
        chunk: Vec<T::Args>,
    ) -> Result<Future<Vec<TaskResult<T::Output>>>, Error> {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.backend.cluster() {
            let timeout = options.timeout.or(self.task_timeout);
            return cluster.submit_chunk(options.priority, timeout, T::NAME, &chunk);
        }
        if self.backend.remote().is_some() {
            let call = RemoteCall {
                options,
                name: T::NAME,
                kind: RunKind::Batch,
            };
            return send_remote(
                &*self.backend,
                self.task_timeout,
                call,
                &chunk,
                plain(decode_chunk::<T::Output>),
            );
        }
        self.submit_body(options, ChunkBody::<T>(chunk), Admission::Wait)
            .map_err(|_| Error::ShutDown)
    }

    /// Runs task `T` on this pool's remote backend from any thread, for as long as the backend takes
    /// tasks: what daemon consumers on a process pool call for each item. `None` on in-process
    /// backends.
    pub(crate) fn remote_runner<T: Task>(&self) -> Option<RemoteRunner<T>> {
        self.backend.remote()?;
        Some(RemoteRunner {
            backend: Arc::clone(&self.backend),
            task_timeout: self.task_timeout,
            task: std::marker::PhantomData,
        })
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

    /// A pool that runs async tasks on a tokio event loop (one thread); see
    /// [`PoolBuilder::event_loop`].
    #[cfg(feature = "async")]
    pub fn event_loop() -> Result<Pool, Error> {
        PoolBuilder::new().event_loop().build()
    }

    /// Submits an async task and returns the future of its output. On the event-loop backend tasks
    /// interleave at their `.await` points; on other backends a task holds one worker for its whole
    /// life. Cancellation is cooperative: [`Future::cancel`] or a timeout drops the task at its next
    /// `.await` and resolves it as `Cancelled` or `TimedOut`.
    ///
    /// Write the task as an `async` block: `pool.spawn(async { tokio::time::sleep(d).await })`. A
    /// tokio future made outside the runtime (`pool.spawn(tokio::time::sleep(d))` from plain code)
    /// panics where it is made, because tokio binds timers and sockets to a runtime when they are
    /// created.
    ///
    /// ```
    /// use martelli::Pool;
    ///
    /// let pool = Pool::event_loop()?;
    /// let fut = pool.spawn(async {
    ///     tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    ///     "woke"
    /// })?;
    /// assert_eq!(fut.wait()?, "woke");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn<F>(&self, fut: F) -> Result<Future<F::Output>, Error>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_with(TaskOptions::default(), fut)
    }

    /// [`spawn`](Pool::spawn) with per-task options (timeout, name, priority where the backend has a
    /// queue).
    pub fn spawn_with<F>(&self, options: TaskOptions, fut: F) -> Result<Future<F::Output>, Error>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.closures_allowed()?;
        let (promise, future) = promise::<F::Output>();
        let token = promise.token().clone();
        let timeout = self.timeout_for(options, Promise::<F::Output>::expirer);
        let task = driver(fut, promise, timeout, self.detector.clone(), options.name);
        self.backend
            .spawn_task(task, token, options.priority)
            .map(|()| future)
    }

    /// Runs `fut` on this pool and blocks until it is done: the bridge from blocking code to async
    /// code. Called from a thread that drives a tokio runtime it would block that runtime (a deadlock
    /// when the task needs it), so it refuses with [`Error::WouldBlockRuntime`]; `.await` the future
    /// from [`spawn`](Pool::spawn) there instead.
    pub fn block_on<F>(&self, fut: F) -> Result<TaskResult<F::Output>, Error>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        #[cfg(feature = "async")]
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::WouldBlockRuntime);
        }
        Ok(self.spawn(fut)?.wait())
    }

    /// A pool described by a spec string: `"inline"`, `"threads"` (one per core) or `"threads:N"`,
    /// `"processes[:N]"`, `"async[:N]"`, or a broker URL (`"redis://host:6379"`, `"rediss://…"`) for a
    /// cluster pool (feature `cluster`). An unknown spec is an error that lists the valid forms.
    pub fn from_spec(spec: &str) -> Result<Pool, Error> {
        Spec::parse(spec)?.builder().build()
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

    /// The backend's name: `"inline"` or `"threads"`.
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

    /// Submits `f` and returns the future of its value. With a bounded queue, blocks while it is full.
    /// A panic in `f` resolves the future as [`TaskError::Panicked`](crate::TaskError::Panicked); the
    /// worker goes on.
    pub fn submit<F, T>(&self, f: F) -> Result<Future<T>, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.closures_allowed()?;
        self.submit_body(TaskOptions::default(), Plain(f), Admission::Wait)
            .map_err(|_| Error::ShutDown)
    }

    /// Submits `f` with per-task options (priority, timeout).
    pub fn submit_with<F, T>(&self, options: TaskOptions, f: F) -> Result<Future<T>, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.closures_allowed()?;
        self.submit_body(options, Plain(f), Admission::Wait)
            .map_err(|_| Error::ShutDown)
    }

    /// Submits a task that returns `Result`: an `Err` resolves the future as
    /// [`TaskError::Failed`](crate::TaskError::Failed), which [`wait`](crate::wait()) with
    /// [`WaitMode::FirstError`](crate::WaitMode::FirstError) reacts to.
    pub fn submit_fallible<F, T, E>(&self, f: F) -> Result<Future<T>, Error>
    where
        F: FnOnce() -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        self.closures_allowed()?;
        self.submit_body(TaskOptions::default(), Fallible(f), Admission::Wait)
            .map_err(|_| Error::ShutDown)
    }

    /// Submits `f` if the queue has room now; otherwise hands `f` back in the error
    /// ([`TrySubmitError::Full`] or [`TrySubmitError::ShutDown`]).
    pub fn try_submit<F, T>(&self, f: F) -> Result<Future<T>, TrySubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.try_submit_with(TaskOptions::default(), f)
    }

    /// [`try_submit`](Pool::try_submit) with per-task options.
    pub fn try_submit_with<F, T>(
        &self,
        options: TaskOptions,
        f: F,
    ) -> Result<Future<T>, TrySubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if self.closures_allowed().is_err() {
            return Err(TrySubmitError::NotATask(f));
        }
        match self.submit_body(options, Plain(f), Admission::Try) {
            Ok(future) => Ok(future),
            Err(rejected) => {
                let (job, full) = match rejected {
                    Rejected::Full(job) => (job, true),
                    Rejected::ShutDown(job) => (job, false),
                };
                match job.into_body::<Plain<F>, T>() {
                    Some(Plain(f)) if full => Err(TrySubmitError::Full(f)),
                    Some(Plain(f)) => Err(TrySubmitError::ShutDown(f)),
                    None => unreachable!("the job built above holds a Plain<F> that has not run"),
                }
            }
        }
    }

    /// Puts `body` into a task cell (one allocation: the closure, the future's state and the token)
    /// and hands its job to the backend.
    fn submit_body<B, T>(
        &self,
        options: TaskOptions,
        body: B,
        admission: Admission,
    ) -> Result<Future<T>, Rejected<CellJob>>
    where
        B: Body<T> + 'static,
        T: Send + 'static,
    {
        let timeout = options
            .timeout
            .or(self.task_timeout)
            .map(|after| CellTimeout {
                after,
                watchdog: Arc::clone(&self.watchdog),
            });
        let (job, future) = new_task(body, timeout);
        self.backend
            .execute_cell(job, options.priority, admission)
            .map(|()| future)
    }

    pub(crate) fn timeout_for<T>(
        &self,
        options: TaskOptions,
        expirer: fn(&Promise<T>) -> crate::future::Expirer,
    ) -> Option<Timeout<T>> {
        options.timeout.or(self.task_timeout).map(|after| Timeout {
            after,
            watchdog: Arc::clone(&self.watchdog),
            expirer,
        })
    }

    pub(crate) fn daemons(&self) -> &crate::consume::Daemons {
        &self.daemons
    }

    pub(crate) fn backend(&self) -> &dyn Backend {
        &*self.backend
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

/// What a remote call sends besides its arguments.
struct RemoteCall<'a> {
    options: TaskOptions,
    name: &'a str,
    /// One task, a chunk of a task map, or one task with its output captured.
    kind: RunKind,
}

/// The sink of a task whose outcome bytes `decode` turns into its value.
fn plain<V: Send + 'static>(
    decode: fn(&[u8]) -> TaskResult<V>,
) -> impl FnOnce(Promise<V>, Option<Duration>) -> Box<dyn Sink> {
    move |promise, timeout| {
        Box::new(RemoteSink {
            promise,
            timeout,
            decode,
        })
    }
}

/// Encodes a task's run frame (as `call.kind` says) and hands it to a remote backend; `sink` makes
/// the typed end that resolves its future.
fn send_remote<A, V>(
    backend: &dyn Backend,
    task_timeout: Option<Duration>,
    call: RemoteCall<'_>,
    args: &A,
    sink: impl FnOnce(Promise<V>, Option<Duration>) -> Box<dyn Sink>,
) -> Result<Future<V>, Error>
where
    A: Serialize + ?Sized,
    V: Send + 'static,
{
    let RemoteCall {
        options,
        name,
        kind,
    } = call;
    let Some(remote) = backend.remote() else {
        return Err(Error::ShutDown);
    };
    let (promise, future) = promise::<V>();
    let id = promise.id().as_u64();
    let header = kind.header(id, name);
    // Room for the header and small arguments: no reallocation on the common path.
    let mut frame = Vec::with_capacity(128);
    let built = codec::begin(&mut frame, &header)
        .map_err(|e| e.to_string())
        .and_then(|()| codec::push_body(&mut frame, args))
        .and_then(|()| codec::finish(&mut frame, remote.max_frame()).map_err(|e| e.to_string()));
    if let Err(message) = built {
        promise.complete(Err(TaskError::Codec(format!(
            "the arguments of task {name:?} could not be sent: {message}"
        ))));
        return Ok(future);
    }
    let job = RemoteJob {
        id,
        priority: options.priority,
        frame,
        sink: sink(promise, options.timeout.or(task_timeout)),
    };
    match remote.execute_remote(job, Admission::Wait) {
        Ok(()) => Ok(future),
        Err(RemoteRejected::ShutDown | RemoteRejected::Full) => Err(Error::ShutDown),
    }
}

/// Runs one task type on a remote backend and waits for each outcome; holds the backend, not the
/// pool, so a daemon consumer's thread can own it.
pub(crate) struct RemoteRunner<T> {
    backend: Arc<dyn Backend>,
    task_timeout: Option<Duration>,
    task: std::marker::PhantomData<fn() -> T>,
}

impl<T: Task> RemoteRunner<T> {
    /// Sends `args` to a worker and waits for the outcome. A pool that shut down meanwhile gives
    /// [`TaskError::Cancelled`]: the task never ran. The arguments are only encoded, so the caller
    /// keeps them (a daemon consumer hands a failed item back with its error).
    pub(crate) fn run(&self, args: &T::Args) -> TaskResult<T::Output> {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.backend.cluster() {
            return cluster
                .submit(Priority::Normal, self.task_timeout, T::NAME, args)
                .map_or(Err(TaskError::Cancelled), Future::wait);
        }
        let call = RemoteCall {
            options: TaskOptions::default(),
            name: T::NAME,
            kind: RunKind::One,
        };
        send_remote(
            &*self.backend,
            self.task_timeout,
            call,
            args,
            plain(decode_value::<T::Output>),
        )
        .map_or(Err(TaskError::Cancelled), Future::wait)
    }
}

/// A task run in this process (the in-process backends' `submit_task`).
struct TaskBody<T: Task>(T::Args);

impl<T: Task> Body<T::Output> for TaskBody<T> {
    fn call(self) -> TaskResult<T::Output> {
        T::run(self.0).map_err(TaskError::Failed)
    }
}

/// A chunk of a task map run in this process.
struct ChunkBody<T: Task>(Vec<T::Args>);

impl<T: Task> Body<Vec<TaskResult<T::Output>>> for ChunkBody<T> {
    fn call(self) -> TaskResult<Vec<TaskResult<T::Output>>> {
        Ok(self
            .0
            .into_iter()
            .map(|args| crate::task::run_item::<T>(args).into_result())
            .collect())
    }
}

/// A task by name run in this process (the in-process backends' `submit_named`).
struct NamedBody {
    name: String,
    args: Vec<u8>,
}

impl<R: DeserializeOwned> Body<R> for NamedBody {
    fn call(self) -> TaskResult<R> {
        run_named(&self.name, &self.args)
    }
}

/// Runs a task by name in this process, as a worker would.
fn run_named<R: DeserializeOwned>(name: &str, args: &[u8]) -> TaskResult<R> {
    let registry = Registry::get().map_err(|e| TaskError::Codec(e.to_string()))?;
    let mut out = Vec::new();
    match registry.run(name, args, &mut out) {
        None => Err(TaskError::UnknownTask {
            name: name.to_owned(),
        }),
        Some(Ok(())) => postcard::from_bytes(&out).map_err(|e| {
            TaskError::Codec(format!(
                "the result of task {name:?} does not decode as {}: {e}",
                std::any::type_name::<R>()
            ))
        }),
        Some(Err(e)) => Err(crate::task::run_error_to_task_error(e)),
    }
}

/// The typed end of a task or chunk sent to a worker process: its promise, its timeout, and how its
/// result bytes decode.
struct RemoteSink<T> {
    promise: Promise<T>,
    timeout: Option<Duration>,
    decode: fn(&[u8]) -> TaskResult<T>,
}

impl<T: Send + 'static> Sink for RemoteSink<T> {
    fn start(&self) -> bool {
        self.promise.start()
    }

    fn token(&self) -> &CancelToken {
        self.promise.token()
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    fn complete(self: Box<Self>, outcome: Result<&[u8], TaskError>) {
        let result = outcome.and_then(self.decode);
        self.promise.complete(result);
    }
}

/// A task's result.
fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> TaskResult<T> {
    postcard::from_bytes::<T>(bytes).map_err(|e| {
        TaskError::Codec(format!(
            "the result does not decode as {}: {e}",
            std::any::type_name::<T>()
        ))
    })
}

/// A chunk's results, one outcome per item.
fn decode_chunk<T: DeserializeOwned>(bytes: &[u8]) -> TaskResult<Vec<TaskResult<T>>> {
    postcard::from_bytes::<Vec<crate::task::ItemOutcome<T>>>(bytes)
        .map(|items| items.into_iter().map(|i| i.into_result()).collect())
        .map_err(|e| {
            TaskError::Codec(format!(
                "the results do not decode as {}: {e}",
                std::any::type_name::<T>()
            ))
        })
}
