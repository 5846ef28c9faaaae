//! [`PoolBuilder`]: the settings of a pool, checked at [`build`](PoolBuilder::build).

#[cfg(feature = "cluster")]
use crate::backend::cluster::{Cluster, ClusterSettings};
#[cfg(feature = "async")]
use crate::backend::event_loop::EventLoop;
#[cfg(target_os = "linux")]
use crate::backend::processes::{ProcessConfig, Processes};
use crate::backend::{Backend, BackendConfig, Initializer, inline::Inline, threads::Threads};
use crate::codec;
use crate::error::Error;
use crate::local::WorkerInfo;
use crate::pool::Pool;
use crate::spec::Spec;
use crate::task_future::{BlockingReport, Detector};
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

/// Settings of the process backend.
#[derive(Debug, Clone)]
struct ProcessSettings {
    program: Option<PathBuf>,
    args: Vec<OsString>,
    handshake_timeout: Duration,
    max_frame: usize,
    capture_limit: usize,
    max_tasks_per_worker: Option<usize>,
    #[cfg(target_os = "linux")]
    pipeline_window: Duration,
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
            #[cfg(target_os = "linux")]
            pipeline_window: crate::backend::processes::PIPELINE_WINDOW,
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
    kind: Spec,
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
            kind: Spec::Threads(0),
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
        self.kind = Spec::Inline;
        self
    }

    /// Runs tasks on `n` worker threads; 0 means one per available core.
    pub fn threads(mut self, n: usize) -> Self {
        self.kind = Spec::Threads(n);
        self
    }

    /// Runs tasks on a tokio event loop: a current-thread runtime on a thread of its own (one thread,
    /// used to the full). Built inside a tokio runtime, the pool uses that runtime instead. Async tasks
    /// are submitted with [`Pool::submit_async`]; they switch at `.await` points only.
    #[cfg(feature = "async")]
    pub fn event_loop(mut self) -> Self {
        self.kind = Spec::EventLoop(None);
        self
    }

    /// Runs tasks on a multi-thread tokio runtime with `n` worker threads (0: one per core).
    #[cfg(feature = "async")]
    pub fn event_loop_threads(mut self, n: usize) -> Self {
        self.kind = Spec::EventLoop(Some(n));
        self
    }

    /// Runs tasks on `n` worker processes (0: one per available core): this program, started again,
    /// whose `main` calls [`martelli::init()`](crate::init) first. Workers run
    /// [`#[martelli::task]`](crate::task) functions ([`Pool::submit_task`]), one task at a time each;
    /// a task past its timeout is killed with its worker's process group, and a worker that dies
    /// fails only the task it ran and is replaced. Linux only.
    pub fn processes(mut self, n: usize) -> Self {
        self.kind = Spec::Processes(n);
        self
    }

    /// Runs tasks on cluster workers through the Redis broker at `url` (`redis://[user:password@]host
    /// [:port][/db]`), on any number of machines: the 9+ core tier. Workers are programs that serve
    /// [`cluster::Registered`](crate::cluster::Registered); they run
    /// [`#[martelli::task]`](crate::task) functions submitted with [`Pool::submit_task`] or
    /// [`Pool::map_task`]. See the `cluster_*` setters for the queue and the limits. Feature
    /// `cluster`.
    ///
    /// Timeouts count from submission; [`Future::cancel`](crate::Future::cancel) writes a tombstone so that no worker starts
    /// a task still queued (one already running finishes, its result dropped). Dropping the pool waits
    /// for the result of every task submitted, as on every backend: with no worker serving the queue,
    /// bound that wait with timeouts or use [`Pool::shutdown`] with [`Shutdown::CancelPending`](crate::Shutdown::CancelPending).
    #[cfg(feature = "cluster")]
    pub fn cluster(mut self, url: impl Into<String>) -> Self {
        let url = url.into();
        self.cluster = ClusterSettings::new(url.clone());
        self.kind = Spec::Cluster(url);
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
    /// whose arguments or result encode larger fails with [`TaskError::Codec`](crate::TaskError::Codec); nothing larger is
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

    /// How much work a process pool's slot writes behind the task its worker is running, by the
    /// times it has measured for each task name (default 2 ms): short tasks are sent in a batch of
    /// about this much work, so the worker goes from one to the next without waiting for the
    /// parent; a task measured longer than this, or not measured yet, is never written behind
    /// another. `Duration::ZERO` turns pipelining off (one task in flight per worker: every task
    /// waits in the pool's queue, where `Future::cancel` always removes it, until a worker is
    /// free). A wider window helps tiny tasks on a loaded machine, where their measured times grow;
    /// a task pipelined behind a long one waits for it, even if another worker is free meanwhile.
    #[cfg(target_os = "linux")]
    pub fn pipeline_window(mut self, window: Duration) -> Self {
        self.processes.pipeline_window = window;
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
    /// It watches async tasks ([`Pool::submit_async`]) on every backend.
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

    /// A default timeout for every task (a task's own [`TaskOptions::timeout`](crate::TaskOptions::timeout) replaces it).
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

    /// Refuses settings that the chosen backend would not read, rather than ignore them silently:
    /// worker processes, cluster workers and tokio's threads run no initializer of this pool and
    /// take no stack size from it.
    fn check_backend_reads(&self) -> Result<(), Error> {
        let backend = match &self.kind {
            Spec::Inline | Spec::Threads(_) => return Ok(()),
            #[cfg(feature = "async")]
            Spec::EventLoop(_) => "async",
            Spec::Processes(_) => "processes",
            #[cfg(feature = "cluster")]
            Spec::Cluster(_) => "cluster",
        };
        let unread = if self.initializer.is_some() {
            "initializer"
        } else if self.stack_size.is_some() {
            "stack_size"
        } else {
            return Ok(());
        };
        Err(Error::InvalidConfig(format!(
            "{unread} is not read by the {backend} backend (its tasks do not run on threads this \
             pool starts); remove it, or use the threads or inline backend"
        )))
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
        self.check_backend_reads()?;
        let inline = self.kind == Spec::Inline;
        let backend: Arc<dyn Backend> = match self.kind {
            Spec::Inline => Arc::new(Inline::default()),
            #[cfg(feature = "cluster")]
            Spec::Cluster(_) => Arc::new(Cluster::start(self.cluster)?),
            #[cfg(target_os = "linux")]
            Spec::Processes(n) => {
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
                    pipeline_window: p.pipeline_window,
                    max_worker_memory: p.max_worker_memory,
                    nice: p.nice,
                    rlimits: p.rlimits,
                    queue_bound: self.queue_bound,
                })?)
            }
            #[cfg(not(target_os = "linux"))]
            Spec::Processes(_) => {
                return Err(Error::InvalidConfig(
                    "the processes backend runs on Linux only".into(),
                ));
            }
            Spec::Threads(n) => {
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
            Spec::EventLoop(threads) => {
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
        if let (true, Some(init)) = (inline, &self.initializer) {
            init(&WorkerInfo::current());
        }
        Ok(Pool::from_parts(backend, self.task_timeout, self.detector))
    }
}

/// The number of cores this process may use (its CPU affinity, and the cgroup quota where the standard
/// library reads it); at least 1.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
