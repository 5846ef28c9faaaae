//! The cluster worker: takes tasks from a queue's streams, runs them on local threads through a
//! [`TaskRunner`], and stores each result before it acknowledges the task.
//!
//! # Threads
//!
//! - The *fetch* thread owns the consumer: it reads at most as many entries as there are free slots
//!   (a slot is a task held, from fetch to acknowledgement), renews the lease of every held task,
//!   reclaims tasks whose lease expired, moves due delayed tasks to their stream, and writes the
//!   worker's heartbeat.
//! - `concurrency` *executor* threads run tasks.
//! - The *writer* thread stores outcomes in one pipeline per batch: the result on the client's reply
//!   list (with a TTL), then `XACK` and `XDEL` of the entry; or the dead letter; or a handed-back task.
//!
//! # Rules
//!
//! 1. An entry is acknowledged only after its outcome is stored (at-least-once).
//! 2. An entry is held (and its lease renewed) from the moment it is read until it is acknowledged;
//!    the fetch thread never asks for more entries than `slots - held`.
//! 3. An entry that cannot be run (malformed, oversized, unknown task, out of attempts) is moved to the
//!    dead-letter stream with its reason, never retried and never dropped silently.
//! 4. A fetched task whose tombstone exists (`{prefix}:cancel:{id}`: its caller cancelled it) is not
//!    started: it gets a `cancelled` result and is acknowledged, and the tombstone is deleted. The
//!    tombstones of a batch are read in one round trip, only when the queue's `cancels` key says some
//!    may exist (the fetch script reads that key with the entries, so without cancels it costs no
//!    round trip) and always for reclaimed tasks.
//! 5. Every task handed to the executors has a [`CancelToken`]. While the queue's `cancels` key
//!    exists, the fetch thread reads the tombstones of those tasks at least once per poll interval,
//!    inside the promotion script it runs anyway (so never in a round trip of its own), and fires
//!    the token of each task whose tombstone it finds. A task whose token fired before an executor
//!    took it is not started (nor handed back at stop); one running on the process pool is killed
//!    with its process; one running on an executor thread sees the token as its current token
//!    (`martelli::is_cancelled()`), since a thread is never killed. Either way its result is
//!    `cancelled` (a value it still returned stays in the payload), acknowledged and never retried.
//!
//! # Process-pool execution
//!
//! With [`WorkerOptions::processes`], each registered task ([`Registered`](super::Registered)) runs
//! on a local process pool instead of an executor thread: the executor thread waits for it. A task
//! that crashes its process (abort, segfault, `exit`) gives a `worker_died` result with the exit code
//! or signal, one that runs past its deadline is killed with its process group and gives
//! `timed_out`, and one whose token fires (rule 5) is killed the same way and gives `cancelled`;
//! the worker goes on, and the pool replaces the process. The executor thread waits for the
//! process task and for the token at once (both wake it), so a cancel costs no polling. Names the
//! runner knows that are not registered tasks still run on the executor thread (a registered name
//! always runs the registered function, even when the runner maps that name to something else).

use super::conn::{self, Broker, Entry};
use super::envelope::{ENTRY_FIELD, ResultEnvelope, ResultStatus, TaskEnvelope};
use super::error::ClusterError;
use super::reclaim;
use super::runner::{RunError, TaskRunner};
use super::{
    DEFAULT_MAX_PAYLOAD, DEFAULT_PREFIX, DEFAULT_QUEUE, GROUP, Keys, PROTOCOL_VERSION, unix_ms,
};
use crate::cancel::{CancelToken, CurrentTokenGuard};
use crate::sync::{Condvar, Mutex};
use redis::{Connection, RedisResult, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How many bytes of an oversized or malformed entry the dead letter keeps.
const DEAD_LETTER_SAMPLE: usize = 1024;
/// The most outcomes the writer stores in one pipeline.
const WRITE_BATCH: usize = 1024;
/// The most delayed tasks moved to their stream per pass.
const PROMOTE_BATCH: usize = 512;
/// How long the writer holds `started` notes for an outcome to join them (see `next_writes`).
const NOTE_HOLD: Duration = Duration::from_millis(2);

/// Reads up to ARGV[3] entries across the streams KEYS[1..3], highest priority first, without
/// blocking: the worker never takes more entries than it has free slots. Returns whether the queue's
/// `cancels` key (KEYS[4]) exists, then the entries.
const FETCH_SCRIPT: &str = r"
local want = tonumber(ARGV[3])
local out = {}
for i = 1, 3 do
  if want <= 0 then break end
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', want, 'STREAMS', KEYS[i], '>')
  if r then
    for _, e in ipairs(r[1][2]) do
      out[#out + 1] = {i - 1, e[1], e[2]}
      want = want - 1
    end
  end
end
return {redis.call('EXISTS', KEYS[4]), out}
";

/// Moves due members of the delayed set (KEYS[1]) to their stream (KEYS[2..4]); a member is one
/// priority digit followed by the envelope. Atomic, so a delayed task is queued exactly once.
///
/// Also watches running tasks for cancellation (rule 5): returns whether the queue's `cancels` key
/// (KEYS[5]) exists and, only when it does, the 1-based positions among KEYS[6..] of the tombstones
/// that exist. Returns `{moved, cancels, {positions}}`.
const PROMOTE_SCRIPT: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  local key = KEYS[2 + (tonumber(string.sub(m, 1, 1)) or 1)] or KEYS[3]
  redis.call('XADD', key, '*', ARGV[3], string.sub(m, 2))
  redis.call('ZREM', KEYS[1], m)
end
local cancels = redis.call('EXISTS', KEYS[5])
local found = {}
if cancels == 1 then
  for i = 6, #KEYS do
    if redis.call('EXISTS', KEYS[i]) == 1 then
      found[#found + 1] = i - 5
    end
  end
end
return {#due, cancels, found}
";

/// A worker's settings.
///
/// ```
/// use martelli::cluster::WorkerOptions;
/// use std::time::Duration;
///
/// let options = WorkerOptions::new()
///     .queue("images")
///     .concurrency(8)
///     .lease(Duration::from_secs(60));
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    prefix: String,
    queue: String,
    concurrency: usize,
    lease: Duration,
    poll: Duration,
    result_ttl: Duration,
    max_payload: usize,
    dead_letter_max: usize,
    name: Option<String>,
    tls_ca: Option<std::path::PathBuf>,
    processes: Option<usize>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            prefix: DEFAULT_PREFIX.to_owned(),
            queue: DEFAULT_QUEUE.to_owned(),
            concurrency: crate::available_cores(),
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(500),
            result_ttl: Duration::from_secs(3600),
            max_payload: DEFAULT_MAX_PAYLOAD,
            dead_letter_max: 100_000,
            name: None,
            tls_ca: None,
            processes: None,
        }
    }
}

impl WorkerOptions {
    /// The defaults: queue `default`, one thread per core, 30 s leases, results kept 1 hour.
    pub fn new() -> WorkerOptions {
        WorkerOptions::default()
    }

    /// The key prefix (default `martelli`); clients and workers must agree on it.
    pub fn prefix(mut self, prefix: impl Into<String>) -> WorkerOptions {
        self.prefix = prefix.into();
        self
    }

    /// The queue to take tasks from (default `default`).
    pub fn queue(mut self, queue: impl Into<String>) -> WorkerOptions {
        self.queue = queue.into();
        self
    }

    /// How many tasks run at once, each on its own thread; also the most tasks the worker holds.
    pub fn concurrency(mut self, threads: usize) -> WorkerOptions {
        self.concurrency = threads;
        self
    }

    /// How long a task stays with this worker without a renewal. The worker renews the lease of every
    /// task it holds three times per lease, however long the task runs; a task whose worker died is
    /// reclaimed by another worker once its lease has expired.
    pub fn lease(mut self, lease: Duration) -> WorkerOptions {
        self.lease = lease;
        self
    }

    /// The longest the worker blocks waiting for tasks before it looks at its stop flag (default
    /// 500 ms). Bounds how long a graceful stop waits for an idle worker, and how long a running
    /// task's cancellation goes unseen (the worker reads the tombstones of its running tasks at
    /// least once per poll interval while the queue has cancellations).
    pub fn poll(mut self, poll: Duration) -> WorkerOptions {
        self.poll = poll;
        self
    }

    /// How long a result stays in Redis when nobody collects it (default 1 hour).
    pub fn result_ttl(mut self, ttl: Duration) -> WorkerOptions {
        self.result_ttl = ttl;
        self
    }

    /// The largest task entry the worker runs (default 8 MiB); larger ones are dead-lettered.
    pub fn max_payload(mut self, bytes: usize) -> WorkerOptions {
        self.max_payload = bytes;
        self
    }

    /// Roughly how many entries the dead-letter stream keeps (default 100,000; older ones are trimmed).
    pub fn dead_letter_max(mut self, entries: usize) -> WorkerOptions {
        self.dead_letter_max = entries;
        self
    }

    /// The consumer name's stem; the worker appends its process id and a random suffix, so that every
    /// run is a new consumer (default: the host name).
    pub fn name(mut self, name: impl Into<String>) -> WorkerOptions {
        self.name = Some(name.into());
        self
    }

    /// For a `rediss://` broker: trust the CA certificate(s) in the PEM file at `path` instead of the
    /// system's roots. Without it, the file named by the `MARTELLI_TLS_CA` environment variable, if
    /// set, is used.
    pub fn tls_ca(mut self, path: impl Into<std::path::PathBuf>) -> WorkerOptions {
        self.tls_ca = Some(path.into());
        self
    }

    /// Runs registered tasks ([`Registered`](super::Registered)) on `n` local worker processes (0:
    /// one per core) instead of executor threads, so a task that crashes its process or runs past its
    /// deadline is contained as on a [process pool](crate::PoolBuilder::processes): the caller gets
    /// [`TaskError::WorkerDied`](crate::TaskError::WorkerDied) or
    /// [`TaskError::TimedOut`](crate::TaskError::TimedOut), and the worker goes on. A task whose
    /// caller cancels it while it runs is killed with its process. Also sets the
    /// concurrency to `n`, so the worker holds no more tasks than it has processes (a later
    /// [`concurrency`](WorkerOptions::concurrency) changes that). The program's `main` must call
    /// [`martelli::init()`](crate::init) first. Linux only.
    pub fn processes(mut self, n: usize) -> WorkerOptions {
        let n = if n == 0 { crate::available_cores() } else { n };
        self.processes = Some(n);
        self.concurrency = n;
        self
    }

    fn validate(&self) -> Result<(), ClusterError> {
        let invalid = |m: &str| Err(ClusterError::InvalidOption(m.to_owned()));
        if self.concurrency == 0 {
            return invalid("concurrency must be at least 1");
        }
        if self.lease < Duration::from_millis(100) {
            return invalid("the lease must be at least 100 ms");
        }
        if self.poll.is_zero() {
            return invalid("the poll interval must be more than zero");
        }
        if self.result_ttl < Duration::from_millis(1) {
            return invalid("the result TTL must be at least 1 ms");
        }
        if self.prefix.is_empty() || self.queue.is_empty() {
            return invalid("the key prefix and the queue name must not be empty");
        }
        Ok(())
    }
}

/// What a worker did, returned when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Tasks that returned a value.
    pub succeeded: u64,
    /// Tasks that returned an error, panicked, or were past their deadline.
    pub failed: u64,
    /// Entries moved to the dead-letter stream.
    pub dead_lettered: u64,
    /// Tasks taken over from a worker whose lease expired.
    pub reclaimed: u64,
    /// Tasks put back on their stream unstarted at stop.
    pub handed_back: u64,
    /// Tasks whose caller cancelled them (a tombstone): not started, or stopped while they ran.
    pub cancelled: u64,
}

#[derive(Default)]
struct Counters {
    succeeded: AtomicU64,
    failed: AtomicU64,
    dead_lettered: AtomicU64,
    reclaimed: AtomicU64,
    handed_back: AtomicU64,
    cancelled: AtomicU64,
}

/// One entry held by this worker: its stream (by priority index) and id.
type Held = (usize, String);

/// What the fetch thread needs to cancel a task handed to the executors: its task id (the
/// tombstone's name) and its token (rule 5).
type Watch = (String, CancelToken);

struct Job {
    stream: usize,
    entry: String,
    envelope: TaskEnvelope,
    attempt: u32,
    /// Fired by the fetch thread when the task's tombstone appears (rule 5).
    token: CancelToken,
}

/// An outcome to store.
enum Write {
    /// A result for the caller; then the entry is acknowledged.
    Result {
        held: Held,
        reply: Option<String>,
        result: ResultEnvelope,
    },
    /// A dead letter (and a `lost` result when the entry named a reply list); then the entry is
    /// acknowledged.
    Dead {
        held: Held,
        letter: Vec<(&'static str, Vec<u8>)>,
        reply: Option<(String, ResultEnvelope)>,
    },
    /// An unstarted task put back on its stream; then the held entry is acknowledged.
    HandBack { held: Held, envelope: Vec<u8> },
    /// A `started` note for a caller that asked for one (the envelope's `started`); nothing is
    /// acknowledged.
    Started { reply: String, note: ResultEnvelope },
}

impl Write {
    /// The entry acknowledged once this is stored; none for a note.
    fn held(&self) -> Option<&Held> {
        match self {
            Write::Result { held, .. }
            | Write::Dead { held, .. }
            | Write::HandBack { held, .. } => Some(held),
            Write::Started { .. } => None,
        }
    }
}

/// How a task ended, before it becomes a result.
struct Ended {
    status: ResultStatus,
    payload: Option<Vec<u8>>,
    error: Option<String>,
    /// With `worker_died`: the exit code and the signal of the process that ran the task.
    death: Option<(Option<i32>, Option<i32>)>,
}

impl Ended {
    fn new(status: ResultStatus, payload: Option<Vec<u8>>, error: Option<String>) -> Ended {
        Ended {
            status,
            payload,
            error,
            death: None,
        }
    }

    /// How a task run on the process pool ended. `Err` holds the reason for the dead letter of a
    /// task the pool's processes do not register.
    fn isolated(
        ran: super::registered::Isolated,
        consumer: &str,
        task: &str,
    ) -> Result<Ended, String> {
        use super::registered::Isolated;
        Ok(match ran {
            Isolated::Value(bytes) => Ended::new(ResultStatus::Ok, Some(bytes), None),
            Isolated::Failed(message) => Ended::new(ResultStatus::Failed, None, Some(message)),
            Isolated::Panicked(message) => Ended::new(ResultStatus::Panicked, None, Some(message)),
            Isolated::TimedOut => Ended::new(
                ResultStatus::TimedOut,
                None,
                Some(
                    "the task ran past its deadline; its process was killed with its group"
                        .to_owned(),
                ),
            ),
            Isolated::Cancelled => Ended::new(
                ResultStatus::Cancelled,
                None,
                Some(
                    "the task was cancelled while it ran; its process was killed with its group"
                        .to_owned(),
                ),
            ),
            Isolated::Died(how) => Ended {
                status: ResultStatus::WorkerDied,
                payload: None,
                error: Some(format!("the process running the task died: {how}")),
                death: Some((how.exit_code, how.signal)),
            },
            Isolated::Unknown => {
                return Err(format!(
                    "unknown task {task:?}: the worker processes of worker {consumer} do not \
                     register it (they must be the same program as the worker)"
                ));
            }
        })
    }

    /// The outcome of a task whose token fired while it ran (rule 5): `cancelled`, whatever it
    /// returned; a value it still returned stays in the payload, and the error says how it ended.
    fn into_cancelled(self) -> Ended {
        if self.status == ResultStatus::Cancelled {
            return self;
        }
        let how = match (self.status, &self.error) {
            (ResultStatus::Ok, _) => "it then returned a value".to_owned(),
            (status, Some(error)) => format!("it then ended as {}: {error}", status.as_str()),
            (status, None) => format!("it then ended as {}", status.as_str()),
        };
        Ended {
            status: ResultStatus::Cancelled,
            payload: self.payload,
            error: Some(format!(
                "the task was cancelled while it ran (its cancel token fired); {how}"
            )),
            death: None,
        }
    }
}

struct Queue<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            items: VecDeque::new(),
            closed: false,
        }
    }
}

struct Shared {
    broker: Broker,
    keys: Keys,
    consumer: String,
    options: WorkerOptions,
    runner: Box<dyn TaskRunner>,
    stop: Arc<AtomicBool>,
    /// Never set: the writer waits for the broker as long as it takes, since results must be stored.
    never: AtomicBool,
    /// Every entry held, with the watch of those handed to the executors (rule 2, rule 5).
    held: Mutex<HashMap<Held, Option<Watch>>>,
    slot_freed: Condvar,
    jobs: Mutex<Queue<Job>>,
    jobs_ready: Condvar,
    writes: Mutex<Queue<Write>>,
    writes_ready: Condvar,
    counters: Counters,
    /// The local process pool registered tasks run on (`WorkerOptions::processes`).
    #[cfg(target_os = "linux")]
    processes: Option<crate::Pool>,
}

/// Stops a worker gracefully from anywhere (another thread, a signal handler's watcher).
#[derive(Clone)]
pub struct StopHandle {
    shared: Arc<Shared>,
}

impl StopHandle {
    /// Asks the worker to stop: it takes no more tasks, puts back those it holds but has not started,
    /// and finishes (and stores the results of) those it runs. Storing waits for the broker: a worker
    /// stopped while the broker is down finishes when the broker is back.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        let _held = self.shared.held.lock();
        self.shared.slot_freed.notify_all();
    }
}

impl fmt::Debug for StopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopHandle")
            .field("consumer", &self.shared.consumer)
            .finish()
    }
}

/// A running worker. [`stop`](Worker::stop) it, then [`join`](Worker::join) it for its report.
pub struct Worker {
    shared: Arc<Shared>,
    fetch: JoinHandle<()>,
    executors: Vec<JoinHandle<()>>,
    writer: JoinHandle<()>,
}

impl Worker {
    /// Connects to the broker at `url`, creates the queue's consumer group if it is missing, and
    /// starts taking tasks.
    pub fn start<R: TaskRunner>(
        url: &str,
        runner: R,
        options: WorkerOptions,
    ) -> Result<Worker, ClusterError> {
        options.validate()?;
        let broker = Broker::new(url, options.tls_ca.as_deref())?;
        let keys = Keys::new(&options.prefix, &options.queue);
        let (fetch_conn, write_conn) = broker.setup("worker", || {
            let mut fetch_conn = broker.connect_checked()?;
            ensure_groups(&mut fetch_conn, &keys).map_err(|source| ClusterError::Broker {
                action: "create the consumer group",
                source,
            })?;
            Ok((fetch_conn, broker.connect()?))
        })?;
        let consumer = consumer_name(options.name.as_deref());
        #[cfg(target_os = "linux")]
        let processes = match options.processes {
            Some(n) => Some(
                crate::Pool::builder()
                    .processes(n)
                    .name_prefix("martelli-cluster-proc")
                    .build()
                    .map_err(|e| ClusterError::ProcessPool(Box::new(e)))?,
            ),
            None => None,
        };
        #[cfg(not(target_os = "linux"))]
        if options.processes.is_some() {
            return Err(ClusterError::InvalidOption(
                "running tasks on processes (WorkerOptions::processes) needs Linux".to_owned(),
            ));
        }
        let shared = Arc::new(Shared {
            broker,
            keys,
            consumer,
            runner: Box::new(runner),
            stop: Arc::new(AtomicBool::new(false)),
            never: AtomicBool::new(false),
            held: Mutex::new(HashMap::new()),
            slot_freed: Condvar::new(),
            jobs: Mutex::new(Queue::default()),
            jobs_ready: Condvar::new(),
            writes: Mutex::new(Queue::default()),
            writes_ready: Condvar::new(),
            counters: Counters::default(),
            #[cfg(target_os = "linux")]
            processes,
            options,
        });
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .map_err(|source| ClusterError::Setup {
                    what: "worker thread",
                    source,
                })
        };
        let mut executors = Vec::with_capacity(shared.options.concurrency);
        for i in 0..shared.options.concurrency {
            let s = shared.clone();
            match spawn(
                format!("martelli-cluster-{i}"),
                Box::new(move || s.execute_loop()),
            ) {
                Ok(handle) => executors.push(handle),
                Err(error) => {
                    shared.close_jobs();
                    return Err(error);
                }
            }
        }
        let s = shared.clone();
        let writer = match spawn(
            "martelli-cluster-write".into(),
            Box::new(move || s.write_loop(write_conn)),
        ) {
            Ok(handle) => handle,
            Err(error) => {
                shared.close_jobs();
                return Err(error);
            }
        };
        let s = shared.clone();
        let fetch = std::thread::Builder::new()
            .name("martelli-cluster-fetch".into())
            .spawn(move || s.run(fetch_conn))
            .map_err(|source| {
                shared.close_jobs();
                shared.close_writes();
                ClusterError::Setup {
                    what: "fetch thread",
                    source,
                }
            })?;
        Ok(Worker {
            shared,
            fetch,
            executors,
            writer,
        })
    }

    /// This run's consumer name in the group (unique per run).
    pub fn consumer(&self) -> &str {
        &self.shared.consumer
    }

    /// Asks the worker to stop gracefully; see [`StopHandle::stop`].
    pub fn stop(&self) {
        self.stop_handle().stop();
    }

    /// A handle that stops this worker from elsewhere.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            shared: self.shared.clone(),
        }
    }

    /// Waits until the worker has stopped (after [`stop`](Worker::stop), a signal given to
    /// [`serve`], or a fatal error) and returns what it did.
    pub fn join(self) -> Result<WorkerReport, ClusterError> {
        let fetched = self.fetch.join();
        // The fetch thread closes the job queue on its way out; make sure of it even after a panic.
        self.shared.close_jobs();
        for handle in self.executors {
            let _ = handle.join();
        }
        self.shared.close_writes();
        let _ = self.writer.join();
        self.shared.leave();
        if fetched.is_err() {
            return Err(ClusterError::Setup {
                what: "fetch thread",
                source: std::io::Error::other(
                    "the fetch thread panicked; tasks it held are reclaimed by other workers after \
                     one lease",
                ),
            });
        }
        let c = &self.shared.counters;
        Ok(WorkerReport {
            succeeded: c.succeeded.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
            reclaimed: c.reclaimed.load(Ordering::Relaxed),
            handed_back: c.handed_back.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
        })
    }
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("consumer", &self.shared.consumer)
            .field("broker", &self.shared.broker.shown())
            .field("queue", &self.shared.options.queue)
            .field("concurrency", &self.shared.options.concurrency)
            .finish()
    }
}

/// Runs a worker until SIGTERM or SIGINT, then stops it gracefully and returns its report. A second
/// signal during the stop exits the process at once (status 1).
///
/// This is the `main` of a worker binary:
///
/// ```no_run
/// use martelli::cluster::{serve, Tasks, WorkerOptions};
///
/// let tasks = Tasks::new().typed("square", |x: u64| Ok::<_, std::io::Error>(x * x));
/// let report = serve("redis://127.0.0.1:6379", tasks, WorkerOptions::default())?;
/// eprintln!("{report:?}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn serve<R: TaskRunner>(
    url: &str,
    runner: R,
    options: WorkerOptions,
) -> Result<WorkerReport, ClusterError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let worker = Worker::start(url, runner, options)?;
    let flag = worker.shared.stop.clone();
    let mut handlers = Vec::new();
    for signal in [SIGTERM, SIGINT] {
        // The shutdown action goes first: it exits only when the flag is already set (a second signal).
        let registered = signal_hook::flag::register_conditional_shutdown(signal, 1, flag.clone())
            .and_then(|first| {
                handlers.push(first);
                signal_hook::flag::register(signal, flag.clone())
            });
        match registered {
            Ok(id) => handlers.push(id),
            Err(source) => {
                worker.stop();
                let _ = worker.join();
                unregister(handlers);
                return Err(ClusterError::Setup {
                    what: "signal handler",
                    source,
                });
            }
        }
    }
    let report = worker.join();
    unregister(handlers);
    report
}

/// Removes `serve`'s signal handlers, so that a process that goes on after its worker stopped gets
/// its usual signal behaviour back.
fn unregister(handlers: Vec<signal_hook::SigId>) {
    for id in handlers {
        signal_hook::low_level::unregister(id);
    }
}

fn consumer_name(stem: Option<&str>) -> String {
    let stem = match stem {
        Some(stem) => stem.to_owned(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "worker".to_owned()),
    };
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{stem}-{}-{}", std::process::id(), &suffix[..8])
}

/// Creates the group on every stream of the queue (and the streams), unless it exists. New groups
/// start at the beginning of the stream, so tasks added before the first worker (or after a Redis
/// restart, before the group was recreated) are not skipped.
fn ensure_groups(conn: &mut Connection, keys: &Keys) -> RedisResult<()> {
    for stream in &keys.streams {
        let created: RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query(conn);
        match created {
            Ok(()) => {}
            Err(error) if error.code() == Some("BUSYGROUP") => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// When the fetch thread next has maintenance to do, and how often.
struct Schedule {
    renew_at: Instant,
    reclaim_at: Instant,
    /// When idle consumers without a heartbeat are next swept from the group (once per lease).
    sweep_at: Instant,
    promote_at: Instant,
    /// When the tombstones of the tasks handed to the executors are next read (rule 5), with the
    /// next promotion at or after it.
    watch_at: Instant,
    renew_every: Duration,
    reclaim_every: Duration,
    promote_every: Duration,
    watch_every: Duration,
    /// Whether the queue's `cancels` key existed at the last look (fetch or promotion): only then
    /// are the tombstones of running tasks read.
    cancels: bool,
}

/// The fetch thread's Lua scripts (sent once, then run by their SHA1).
struct Scripts {
    fetch: redis::Script,
    promote: redis::Script,
    reclaim: redis::Script,
}

impl Shared {
    fn slots(&self) -> usize {
        self.options.concurrency
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// The fetch thread: takes tasks until stopped, then hands back what it has not started.
    fn run(self: &Arc<Self>, mut conn: Connection) {
        let scripts = Scripts {
            fetch: redis::Script::new(FETCH_SCRIPT),
            promote: redis::Script::new(PROMOTE_SCRIPT),
            reclaim: reclaim::script(),
        };
        let now = Instant::now();
        let promote_every = self.options.poll.min(Duration::from_millis(100));
        let mut schedule = Schedule {
            renew_at: now,
            reclaim_at: now,
            sweep_at: now + self.options.lease,
            promote_at: now,
            watch_at: now,
            renew_every: self.options.lease / 3,
            reclaim_every: (self.options.lease / 2).min(self.options.poll),
            promote_every,
            // Watching happens at a promotion, at most `promote_every` after `watch_at`: so the
            // tombstones of running tasks are read at least once per poll interval.
            watch_every: self
                .options
                .poll
                .saturating_sub(promote_every)
                .max(promote_every),
            cancels: false,
        };
        while !self.stopping() {
            if let Err(error) = self.step(&mut conn, &scripts, &mut schedule) {
                // After a reconnect or a lost group (the broker may have restarted without
                // persistence), the heartbeat and the list of held tasks in it are written again
                // at once, so that clients looking for their tasks find them (see `lost.rs`).
                schedule.renew_at = Instant::now();
                if conn::is_nogroup(&error) {
                    // Redis restarted without persistence (or someone deleted the group): recreate it
                    // and go on, rather than failing on every read.
                    if let Err(error) = ensure_groups(&mut conn, &self.keys) {
                        eprintln!(
                            "martelli cluster worker {}: could not recreate the consumer group: {error}",
                            self.consumer
                        );
                        std::thread::sleep(self.options.poll);
                    }
                } else if conn::is_connection_error(&error) {
                    match self.broker.reconnect(&self.stop, "worker") {
                        Some(fresh) => conn = fresh,
                        None => break,
                    }
                } else {
                    eprintln!("martelli cluster worker {}: {error}", self.consumer);
                    std::thread::sleep(self.options.poll);
                }
            }
        }
        self.hand_back();
    }

    /// One round of the fetch thread: maintenance that is due, then one fetch (or a wait for a slot).
    fn step(
        self: &Arc<Self>,
        conn: &mut Connection,
        scripts: &Scripts,
        timers: &mut Schedule,
    ) -> RedisResult<()> {
        let now = Instant::now();
        if now >= timers.renew_at {
            self.renew(conn)?;
            timers.renew_at = now + timers.renew_every;
        }
        if now >= timers.promote_at {
            self.promote(conn, scripts, timers, now)?;
        }
        let free = self.free();
        if free > 0 && now >= timers.reclaim_at {
            let sweep = now >= timers.sweep_at;
            self.reclaim(conn, &scripts.reclaim, free, sweep)?;
            timers.reclaim_at = now + timers.reclaim_every;
            if sweep {
                timers.sweep_at = now + self.options.lease;
            }
        }
        let next = timers
            .renew_at
            .min(timers.promote_at)
            .min(timers.reclaim_at);
        let free = self.free();
        if free == 0 {
            // Reclaiming waits for a free slot, and a freed slot wakes this wait: only renewals and
            // delayed tasks bound it.
            let until = timers.renew_at.min(timers.promote_at);
            let held = self.held.lock();
            if held.len() >= self.slots() && !self.stopping() {
                let wait = until.saturating_duration_since(Instant::now());
                let _held = self.slot_freed.wait_for(held, wait);
            }
            return Ok(());
        }
        let value: Value = scripts
            .fetch
            .key(&self.keys.streams[0])
            .key(&self.keys.streams[1])
            .key(&self.keys.streams[2])
            .key(self.keys.cancels())
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(free)
            .invoke(conn)?;
        let reply = conn::array(&value);
        let tombstones = reply.first().and_then(conn::int).unwrap_or(1) != 0;
        timers.cancels = tombstones;
        let mut got = Vec::new();
        for item in reply.get(1).map_or(&[][..], conn::array) {
            if let Some((index, entry, _)) = Entry::parse_indexed(item) {
                got.push((index, entry, 1));
            }
        }
        if got.is_empty() {
            // A task that arrives during the blocking read was added after the script ran: its
            // tombstone, if any, comes after its XADD and is checked only when the script saw the
            // `cancels` key (a tombstone written after the fetch is not seen anyway; rule 4).
            // Nothing waiting: block until a task arrives, maintenance is due, or the poll ends.
            let block = next
                .saturating_duration_since(Instant::now())
                .min(self.options.poll)
                .max(Duration::from_millis(1));
            let value: Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX))
                .arg("STREAMS")
                .arg(&self.keys.streams[..])
                .arg(&[">", ">", ">"][..])
                .query(conn)?;
            for stream in conn::array(&value) {
                let parts = conn::array(stream);
                let (Some(key), Some(entries)) = (parts.first(), parts.get(1)) else {
                    continue;
                };
                let key = conn::string(key).unwrap_or_default();
                let index = self
                    .keys
                    .streams
                    .iter()
                    .position(|s| *s == key)
                    .unwrap_or(1);
                for raw in conn::array(entries) {
                    if let Some(entry) = Entry::parse(raw) {
                        got.push((index, entry, 1));
                    }
                }
            }
        }
        self.dispatch(conn, got, tombstones)
    }

    fn free(&self) -> usize {
        self.slots().saturating_sub(self.held.lock().len())
    }

    /// Moves due delayed tasks to their stream; in the same script, learns whether the queue has
    /// cancellations and, when it had at the last look and a watch is due, reads the tombstones of
    /// the tasks handed to the executors and fires the tokens of those found (rule 5).
    fn promote(
        &self,
        conn: &mut Connection,
        scripts: &Scripts,
        timers: &mut Schedule,
        now: Instant,
    ) -> RedisResult<()> {
        let watched = if timers.cancels && now >= timers.watch_at {
            timers.watch_at = now + timers.watch_every;
            self.watched()
        } else {
            Vec::new()
        };
        let mut invocation = scripts.promote.key(&self.keys.delayed);
        invocation
            .key(&self.keys.streams[0])
            .key(&self.keys.streams[1])
            .key(&self.keys.streams[2])
            .key(self.keys.cancels());
        for (id, _) in &watched {
            invocation.key(self.keys.tombstone(id));
        }
        let value: Value = invocation
            .arg(unix_ms())
            .arg(PROMOTE_BATCH)
            .arg(ENTRY_FIELD)
            .invoke(conn)?;
        timers.promote_at = now + timers.promote_every;
        let reply = conn::array(&value);
        timers.cancels = reply.get(1).and_then(conn::int).unwrap_or(0) != 0;
        let found = reply.get(2).map_or(&[][..], conn::array);
        for position in found.iter().filter_map(conn::int) {
            let index = usize::try_from(position - 1).ok();
            if let Some((_, token)) = index.and_then(|i| watched.get(i)) {
                token.cancel();
            }
        }
        Ok(())
    }

    /// The task ids and tokens of the tasks handed to the executors whose tokens have not fired.
    fn watched(&self) -> Vec<Watch> {
        self.held
            .lock()
            .values()
            .flatten()
            .filter(|(_, token)| !token.is_cancelled())
            .cloned()
            .collect()
    }

    /// Checks fetched entries and hands them to the executors or, when they cannot run, to the
    /// dead-letter stream; with `tombstones`, cancelled tasks get a `cancelled` result instead
    /// (rule 4). `deliveries` is Redis's delivery count of the entry. Every entry is dispatched even
    /// when reading the tombstones fails (the tasks then run); that error is returned after.
    fn dispatch(
        &self,
        conn: &mut Connection,
        entries: Vec<(usize, Entry, u32)>,
        tombstones: bool,
    ) -> RedisResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut jobs = Vec::new();
        let mut dead = Vec::new();
        {
            let mut held = self.held.lock();
            for (stream, entry, deliveries) in entries {
                match self.check(stream, &entry, deliveries) {
                    Ok(job) => {
                        let watch = (job.envelope.id.clone(), job.token.clone());
                        held.insert((stream, entry.id), Some(watch));
                        jobs.push(job);
                    }
                    Err(write) => {
                        held.insert((stream, entry.id), None);
                        dead.push(*write);
                    }
                }
            }
        }
        let mut outcome = Ok(());
        if tombstones && !jobs.is_empty() {
            match self.cancelled(conn, &jobs) {
                Ok(cancelled) => {
                    let mut kept = Vec::with_capacity(jobs.len());
                    for (job, cancelled) in jobs.into_iter().zip(cancelled) {
                        if cancelled {
                            dead.push(self.cancelled_result(job));
                        } else {
                            kept.push(job);
                        }
                    }
                    jobs = kept;
                }
                Err(error) => outcome = Err(error),
            }
        }
        if !jobs.is_empty() {
            let mut queue = self.jobs.lock();
            queue.items.extend(jobs);
            self.jobs_ready.notify_all();
        }
        for write in dead {
            self.push_write(write);
        }
        outcome
    }

    /// Whether each job's tombstone exists, in one round trip.
    fn cancelled(&self, conn: &mut Connection, jobs: &[Job]) -> RedisResult<Vec<bool>> {
        let mut pipe = redis::pipe();
        for job in jobs {
            pipe.cmd("EXISTS")
                .arg(self.keys.tombstone(&job.envelope.id));
        }
        let found: Vec<i64> = pipe.query(conn)?;
        Ok(found.into_iter().map(|n| n != 0).collect())
    }

    /// The outcome of a task cancelled before it started (rules 4 and 5).
    fn cancelled_result(&self, job: Job) -> Write {
        Write::Result {
            held: (job.stream, job.entry),
            reply: job.envelope.reply,
            result: ResultEnvelope {
                v: PROTOCOL_VERSION,
                id: job.envelope.id,
                status: ResultStatus::Cancelled,
                payload: None,
                error: Some("the task was cancelled before a worker started it".to_owned()),
                attempts: job.attempt,
                worker: self.consumer.clone(),
                exit_code: None,
                signal: None,
            },
        }
    }

    fn check(&self, stream: usize, entry: &Entry, deliveries: u32) -> Result<Job, Box<Write>> {
        let held = (stream, entry.id.clone());
        let size = entry.size();
        let Some(raw) = entry.field(ENTRY_FIELD) else {
            return Err(Box::new(self.dead_letter(
                held,
                entry,
                None,
                deliveries,
                format!("malformed entry: it has no {ENTRY_FIELD:?} field holding a task envelope"),
            )));
        };
        // A refused envelope that names its task and reply list still gets its `lost` result.
        let envelope = TaskEnvelope::decode(raw).map_err(|e| (e, TaskEnvelope::addressed(raw)));
        if size > self.options.max_payload {
            let reason = format!(
                "oversized entry: {size} bytes, over this worker's limit of {} bytes (send a \
                 reference to the data instead, or raise max_payload)",
                self.options.max_payload
            );
            let about = match &envelope {
                Ok(envelope) => Some(envelope),
                Err((_, addressed)) => addressed.as_ref(),
            };
            return Err(Box::new(
                self.dead_letter(held, entry, about, deliveries, reason),
            ));
        }
        let envelope = match envelope {
            Ok(envelope) => envelope,
            Err((reason, addressed)) => {
                return Err(Box::new(self.dead_letter(
                    held,
                    entry,
                    addressed.as_ref(),
                    deliveries,
                    format!("malformed entry: {reason}"),
                )));
            }
        };
        let attempt = envelope.attempts.saturating_add(deliveries);
        if attempt > envelope.max_attempts {
            let reason = give_up_reason(&envelope, deliveries);
            let attempts = attempt - 1;
            return Err(Box::new(self.dead_letter(
                held,
                entry,
                Some(&envelope),
                attempts,
                reason,
            )));
        }
        Ok(Job {
            stream,
            entry: entry.id.clone(),
            envelope,
            attempt,
            token: CancelToken::new(),
        })
    }

    /// A dead letter for `entry`, and a `lost` result for its caller when the envelope is readable.
    fn dead_letter(
        &self,
        held: Held,
        entry: &Entry,
        envelope: Option<&TaskEnvelope>,
        attempts: u32,
        reason: String,
    ) -> Write {
        let mut letter: Vec<(&'static str, Vec<u8>)> = vec![
            ("reason", reason.clone().into_bytes()),
            ("stream", self.keys.streams[held.0].clone().into_bytes()),
            ("entry", held.1.clone().into_bytes()),
            ("attempts", attempts.to_string().into_bytes()),
            ("worker", self.consumer.clone().into_bytes()),
            ("at", unix_ms().to_string().into_bytes()),
        ];
        if let Some(envelope) = envelope {
            letter.push(("id", envelope.id.clone().into_bytes()));
            letter.push(("task", envelope.task.clone().into_bytes()));
        }
        // The entry itself, so the task can be inspected and re-queued; only a sample when oversized.
        let raw = entry
            .field(ENTRY_FIELD)
            .map(<[u8]>::to_vec)
            .unwrap_or_else(|| {
                let mut flat = Vec::new();
                for (k, v) in &entry.fields {
                    flat.extend_from_slice(k);
                    flat.push(b'=');
                    flat.extend_from_slice(v);
                    flat.push(b'\n');
                }
                flat
            });
        if raw.len() > self.options.max_payload {
            letter.push(("sample", raw[..DEAD_LETTER_SAMPLE.min(raw.len())].to_vec()));
            letter.push(("truncated", b"1".to_vec()));
        } else {
            letter.push((ENTRY_FIELD, raw));
        }
        let reply = envelope.and_then(|e| {
            e.reply.clone().map(|reply| {
                (
                    reply,
                    ResultEnvelope {
                        v: PROTOCOL_VERSION,
                        id: e.id.clone(),
                        status: ResultStatus::Lost,
                        payload: None,
                        error: Some(reason),
                        attempts,
                        worker: self.consumer.clone(),
                        exit_code: None,
                        signal: None,
                    },
                )
            })
        });
        Write::Dead {
            held,
            letter,
            reply,
        }
    }

    /// Resets the idle time of every held entry (its lease) and refreshes the heartbeat, with the
    /// ids of the tasks held (`tasks`: clients looking for a task whose entry vanished find it there;
    /// see `lost.rs`).
    fn renew(&self, conn: &mut Connection) -> RedisResult<()> {
        let (held, tasks) = {
            let held = self.held.lock();
            let tasks: Vec<&str> = held.values().flatten().map(|(id, _)| id.as_str()).collect();
            (held.keys().cloned().collect::<Vec<Held>>(), tasks.join(","))
        };
        let mut pipe = redis::pipe();
        for (index, stream) in self.keys.streams.iter().enumerate() {
            let ids: Vec<&str> = held
                .iter()
                .filter(|(s, _)| *s == index)
                .map(|(_, id)| id.as_str())
                .collect();
            if !ids.is_empty() {
                pipe.cmd("XCLAIM")
                    .arg(stream)
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg(0)
                    .arg(&ids)
                    .arg("JUSTID")
                    .ignore();
            }
        }
        let heartbeat = self.keys.heartbeat(&self.consumer);
        let c = &self.counters;
        pipe.cmd("HSET")
            .arg(&heartbeat)
            .arg("queue")
            .arg(&self.options.queue)
            .arg("pid")
            .arg(std::process::id())
            .arg("concurrency")
            .arg(self.options.concurrency)
            .arg("held")
            .arg(held.len())
            .arg("succeeded")
            .arg(c.succeeded.load(Ordering::Relaxed))
            .arg("failed")
            .arg(c.failed.load(Ordering::Relaxed))
            .arg("dead_lettered")
            .arg(c.dead_lettered.load(Ordering::Relaxed))
            .arg("last_seen")
            .arg(unix_ms())
            .arg("lease_ms")
            .arg(u64::try_from(self.options.lease.as_millis()).unwrap_or(u64::MAX))
            .arg("tasks")
            .arg(tasks)
            .ignore();
        pipe.cmd("PEXPIRE")
            .arg(&heartbeat)
            .arg(u64::try_from(self.options.lease.as_millis()).unwrap_or(u64::MAX))
            .ignore();
        pipe.exec(conn)
    }

    /// Takes over entries whose lease expired (their worker stopped renewing), up to `free`, and
    /// clears away the workers reclaimed from (see `reclaim.rs`); with `sweep`, also the idle
    /// consumers of workers that died holding nothing.
    fn reclaim(
        &self,
        conn: &mut Connection,
        script: &redis::Script,
        free: usize,
        sweep: bool,
    ) -> RedisResult<()> {
        let heartbeat_prefix = self.keys.heartbeat("");
        let pass = reclaim::Pass {
            streams: &self.keys.streams,
            heartbeat_prefix: &heartbeat_prefix,
            consumer: &self.consumer,
            lease_ms: u64::try_from(self.options.lease.as_millis()).unwrap_or(u64::MAX),
            free,
            sweep,
        };
        let reclaimed = reclaim::reclaim(conn, script, &pass)?;
        if reclaimed.entries.is_empty() {
            return Ok(());
        }
        self.counters
            .reclaimed
            .fetch_add(reclaimed.entries.len() as u64, Ordering::Relaxed);
        self.dispatch(conn, reclaimed.entries, true)
    }

    /// At stop: closes the job queue and puts every task not yet started back on its stream.
    fn hand_back(&self) {
        let unstarted: Vec<Job> = {
            let mut queue = self.jobs.lock();
            queue.closed = true;
            self.jobs_ready.notify_all();
            queue.items.drain(..).collect()
        };
        for job in unstarted {
            if job.token.is_cancelled() {
                // Its tombstone was found while it waited: it is not handed back (rule 5).
                let write = self.cancelled_result(job);
                self.push_write(write);
                continue;
            }
            let mut envelope = job.envelope;
            // This delivery did not run the task: it does not count as an attempt.
            envelope.attempts = job.attempt.saturating_sub(1);
            match envelope.encode() {
                Ok(bytes) => self.push_write(Write::HandBack {
                    held: (job.stream, job.entry),
                    envelope: bytes,
                }),
                // Unreachable for an envelope that decoded; leaving the entry un-acknowledged lets its
                // lease expire and another worker reclaim it.
                Err(error) => eprintln!(
                    "martelli cluster worker {}: could not re-encode task {}: {error}",
                    self.consumer, envelope.id
                ),
            }
        }
    }

    fn close_jobs(&self) {
        let mut queue = self.jobs.lock();
        queue.closed = true;
        self.jobs_ready.notify_all();
    }

    fn close_writes(&self) {
        let mut queue = self.writes.lock();
        queue.closed = true;
        self.writes_ready.notify_all();
    }

    fn push_write(&self, write: Write) {
        let mut queue = self.writes.lock();
        queue.items.push_back(write);
        if queue.items.len() == 1 {
            self.writes_ready.notify_one();
        }
    }

    /// An executor thread: runs jobs until the queue is closed and empty.
    fn execute_loop(&self) {
        loop {
            let job = {
                let mut queue = self.jobs.lock();
                loop {
                    if let Some(job) = queue.items.pop_front() {
                        break job;
                    }
                    if queue.closed {
                        return;
                    }
                    queue = self.jobs_ready.wait(queue);
                }
            };
            let write = self.execute(job);
            self.push_write(write);
        }
    }

    fn execute(&self, job: Job) -> Write {
        crate::chaos::point();
        if job.token.is_cancelled() {
            // Its tombstone was found after it was fetched, before an executor took it (rule 5).
            return self.cancelled_result(job);
        }
        let Job {
            stream,
            entry,
            envelope,
            attempt,
            token,
        } = job;
        let held = (stream, entry);
        let ran = if envelope.deadline.is_some_and(|d| unix_ms() > d) {
            Ok(Ended::new(
                ResultStatus::TimedOut,
                None,
                Some("the task's deadline passed before a worker could start it".to_owned()),
            ))
        } else {
            self.announce_start(&envelope, attempt);
            match self.run_on_processes(&envelope, &token) {
                Some(isolated) => Ended::isolated(isolated, &self.consumer, &envelope.task),
                None => self.run_on_thread(&envelope, &token),
            }
        };
        let ended = match ran {
            Ok(ended) if token.is_cancelled() => ended.into_cancelled(),
            Ok(ended) => ended,
            Err(reason) => return self.dead_letter_unknown(held, &envelope, attempt, reason),
        };
        Write::Result {
            held,
            reply: envelope.reply,
            result: ResultEnvelope {
                v: PROTOCOL_VERSION,
                id: envelope.id,
                status: ended.status,
                payload: ended.payload,
                error: ended.error,
                attempts: attempt,
                worker: self.consumer.clone(),
                exit_code: ended.death.and_then(|(code, _)| code),
                signal: ended.death.and_then(|(_, signal)| signal),
            },
        }
    }

    /// Queues a `started` note for the caller when its envelope asks for one: the writer stores it
    /// with the next batch, before the task's result.
    fn announce_start(&self, envelope: &TaskEnvelope, attempt: u32) {
        let Some(reply) = envelope.reply.as_ref().filter(|_| envelope.started) else {
            return;
        };
        self.push_write(Write::Started {
            reply: reply.clone(),
            note: ResultEnvelope {
                v: PROTOCOL_VERSION,
                id: envelope.id.clone(),
                status: ResultStatus::Started,
                payload: None,
                error: None,
                attempts: attempt,
                worker: self.consumer.clone(),
                exit_code: None,
                signal: None,
            },
        });
    }

    /// Runs a task on this executor thread, with its token as the thread's current token so that
    /// `martelli::is_cancelled()` inside it sees a cancellation (rule 5). `Err` holds the reason
    /// for the dead letter of a task nobody registered.
    fn run_on_thread(&self, envelope: &TaskEnvelope, token: &CancelToken) -> Result<Ended, String> {
        let ran = {
            let _current = CurrentTokenGuard::enter(token);
            catch_unwind(AssertUnwindSafe(|| {
                self.runner.run(&envelope.task, &envelope.payload)
            }))
        };
        Ok(match ran {
            Ok(Ok(bytes)) => Ended::new(ResultStatus::Ok, Some(bytes), None),
            Ok(Err(RunError::Failed(failure))) => Ended::new(
                ResultStatus::Failed,
                None,
                Some(failure.message().to_owned()),
            ),
            Ok(Err(RunError::UnknownTask)) => {
                return Err(format!(
                    "unknown task {:?}: no task of that name is registered on worker {} \
                     (register it, or check the name the producer sends)",
                    envelope.task, self.consumer
                ));
            }
            Err(panic) => Ended::new(
                ResultStatus::Panicked,
                None,
                Some(crate::error::panic_message(panic.as_ref())),
            ),
        })
    }

    fn dead_letter_unknown(
        &self,
        held: Held,
        envelope: &TaskEnvelope,
        attempt: u32,
        reason: String,
    ) -> Write {
        let raw = Entry {
            id: held.1.clone(),
            fields: match envelope.encode() {
                Ok(bytes) => vec![(ENTRY_FIELD.as_bytes().to_vec(), bytes)],
                Err(_) => Vec::new(),
            },
        };
        self.dead_letter(held, &raw, Some(envelope), attempt, reason)
    }

    /// Runs a registered task on the worker's process pool, when it has one, killing its process
    /// when `token` fires; `None` otherwise.
    #[cfg(target_os = "linux")]
    fn run_on_processes(
        &self,
        envelope: &TaskEnvelope,
        token: &CancelToken,
    ) -> Option<super::registered::Isolated> {
        let pool = self.processes.as_ref()?;
        let registry = crate::task::Registry::get().ok()?;
        if envelope.task == super::registered::RUN_REGISTERED || !registry.contains(&envelope.task)
        {
            return None;
        }
        Some(super::registered::run_isolated(
            pool,
            &envelope.task,
            &envelope.payload,
            envelope.deadline,
            token,
        ))
    }

    #[cfg(not(target_os = "linux"))]
    fn run_on_processes(
        &self,
        _envelope: &TaskEnvelope,
        _token: &CancelToken,
    ) -> Option<super::registered::Isolated> {
        None
    }

    /// The writer thread: stores outcomes in batches until the queue is closed and empty.
    fn write_loop(&self, mut conn: Connection) {
        let ttl_ms = u64::try_from(self.options.result_ttl.as_millis()).unwrap_or(u64::MAX);
        let dead_max = self.options.dead_letter_max;
        loop {
            let Some(batch) = self.next_writes() else {
                return;
            };
            let pipe = build_writes(&batch, &self.keys, ttl_ms, dead_max);
            loop {
                match pipe.exec(&mut conn) {
                    Ok(()) => break,
                    Err(error) if conn::is_connection_error(&error) => {
                        match self.broker.reconnect(&self.never, "worker") {
                            Some(fresh) => conn = fresh,
                            None => return,
                        }
                    }
                    // The group vanished with a Redis restart: the results, written before the
                    // acknowledgements in the pipeline, are stored; the entries are gone.
                    Err(error) if conn::is_nogroup(&error) => break,
                    Err(error) => {
                        // The batch's entries stay pending; once this worker stops renewing them
                        // (below), their lease expires and they are delivered again.
                        eprintln!(
                            "martelli cluster worker {}: storing {} outcome(s) failed: {error}",
                            self.consumer,
                            batch.len()
                        );
                        break;
                    }
                }
            }
            let c = &self.counters;
            let mut held = self.held.lock();
            for write in &batch {
                let Some(entry) = write.held() else {
                    continue;
                };
                held.remove(entry);
                let counter = match write {
                    Write::Result { result, .. } if result.status == ResultStatus::Ok => {
                        &c.succeeded
                    }
                    Write::Result { result, .. } if result.status == ResultStatus::Cancelled => {
                        &c.cancelled
                    }
                    Write::Result { .. } => &c.failed,
                    Write::Dead { .. } => &c.dead_lettered,
                    Write::HandBack { .. } => &c.handed_back,
                    Write::Started { .. } => continue,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            self.slot_freed.notify_all();
        }
    }

    /// The next batch of outcomes to store; `None` once the queue is closed and empty. A batch of
    /// `started` notes alone is held up to [`NOTE_HOLD`] for an outcome to join it: a short task's
    /// note and result then cost one pipeline (and the note is left out, see [`build_writes`]),
    /// not two round trips in a row.
    fn next_writes(&self) -> Option<Vec<Write>> {
        let is_note = |w: &Write| matches!(w, Write::Started { .. });
        let mut queue = self.writes.lock();
        let mut batch: Vec<Write> = loop {
            if !queue.items.is_empty() {
                let n = queue.items.len().min(WRITE_BATCH);
                break queue.items.drain(..n).collect();
            }
            if queue.closed {
                return None;
            }
            queue = self.writes_ready.wait(queue);
        };
        let until = Instant::now() + NOTE_HOLD;
        while batch.iter().all(is_note) && !queue.closed && batch.len() < WRITE_BATCH {
            // The queue is empty here, so the next write wakes this wait.
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            queue = self.writes_ready.wait_for(queue, left).0;
            let n = queue.items.len().min(WRITE_BATCH - batch.len());
            batch.extend(queue.items.drain(..n));
        }
        Some(batch)
    }

    /// Leaves the group after a stop: removes the heartbeat and, when nothing is held, the consumer.
    fn leave(&self) {
        let Ok(mut conn) = self.broker.connect() else {
            return;
        };
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(self.keys.heartbeat(&self.consumer))
            .ignore();
        if self.held.lock().is_empty() {
            for stream in &self.keys.streams {
                pipe.cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(stream)
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .ignore();
            }
        }
        let _ = pipe.exec(&mut conn);
    }
}

/// Why a task out of attempts is dead-lettered, saying where its attempts went: those spent before
/// its entry was written (the envelope's `attempts`, set by whoever queued it) and the earlier
/// deliveries of this entry, each of which ended with its worker no longer renewing the lease.
fn give_up_reason(envelope: &TaskEnvelope, deliveries: u32) -> String {
    let before = envelope.attempts;
    let lapsed = deliveries.saturating_sub(1);
    let mut spent = Vec::new();
    if before > 0 {
        spent.push(format!(
            "{before} spent before this entry was queued (its envelope's attempts field)"
        ));
    }
    if lapsed > 0 {
        spent.push(format!(
            "{lapsed} delivery(ies) of this entry whose worker stopped renewing its lease (it died, \
             hung, or lost the broker)"
        ));
    }
    format!(
        "gave up after {} attempt(s) (max_attempts = {}): {}",
        before.saturating_add(lapsed),
        envelope.max_attempts,
        spent.join(" and ")
    )
}

/// One pipeline for a batch of outcomes. Within it, each outcome is stored before its entry is
/// acknowledged (rule 1): the results and dead letters come first, then one `XACK` and one `XDEL` per
/// stream.
fn build_writes(batch: &[Write], keys: &Keys, ttl_ms: u64, dead_max: usize) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    let mut replies: HashSet<&str> = HashSet::new();
    let mut acks: HashMap<usize, Vec<&str>> = HashMap::new();
    // A note is pointless beside its task's result.
    let answered: HashSet<&str> = batch
        .iter()
        .filter_map(|w| match w {
            Write::Result { result, .. } => Some(result.id.as_str()),
            _ => None,
        })
        .collect();
    for write in batch {
        match write {
            Write::Result { reply, result, .. } => {
                if let Some(reply) = reply {
                    pipe.cmd("LPUSH").arg(reply).arg(result.encode()).ignore();
                    replies.insert(reply);
                }
                if result.status == ResultStatus::Cancelled {
                    pipe.cmd("DEL").arg(keys.tombstone(&result.id)).ignore();
                }
            }
            Write::Dead { letter, reply, .. } => {
                let mut cmd = redis::cmd("XADD");
                cmd.arg(&keys.dead)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(dead_max)
                    .arg("*");
                for (field, value) in letter {
                    cmd.arg(*field).arg(value);
                }
                pipe.add_command(cmd).ignore();
                if let Some((reply, result)) = reply {
                    pipe.cmd("LPUSH").arg(reply).arg(result.encode()).ignore();
                    replies.insert(reply);
                }
            }
            Write::HandBack { held, envelope } => {
                pipe.cmd("XADD")
                    .arg(&keys.streams[held.0])
                    .arg("*")
                    .arg(ENTRY_FIELD)
                    .arg(envelope)
                    .ignore();
            }
            Write::Started { reply, note } => {
                if !answered.contains(note.id.as_str()) {
                    pipe.cmd("LPUSH").arg(reply).arg(note.encode()).ignore();
                    replies.insert(reply);
                }
            }
        }
        if let Some((stream, id)) = write.held() {
            acks.entry(*stream).or_default().push(id);
        }
    }
    for reply in replies {
        pipe.cmd("PEXPIRE").arg(reply).arg(ttl_ms).ignore();
    }
    for (stream, ids) in acks {
        let key = &keys.streams[stream];
        pipe.cmd("XACK").arg(key).arg(GROUP).arg(&ids).ignore();
        pipe.cmd("XDEL").arg(key).arg(&ids).ignore();
    }
    pipe
}
