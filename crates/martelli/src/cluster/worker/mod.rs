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
//! 6. A run that ends in an error its envelope's retry policy names is not answered: the task goes
//!    to the delayed set with the run's error in its envelope, in the pipeline that acknowledges
//!    its entry (rule 1 holds: the retry is stored first); with no retry left it is dead-lettered
//!    with every run's error, and its caller gets the last run's outcome (`retry.rs`).
//! 7. A task whose name has a rate limit starts at the time it reserved in Redis: before it is
//!    handed to an executor, the fetch thread reserves start times for the batch in one script,
//!    and puts the tasks whose time has not come in the delayed set, acknowledged as in rule 6,
//!    with the reservation in their envelope, so they do not reserve again (`ratelimit.rs`).
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

//!
//! # Files
//!
//! - `fetch.rs`: the fetch thread (reads, leases, reclaims, delayed tasks, watching tombstones).
//! - `execute.rs`: the executor threads (running a task on a thread or on the process pool).
//! - `write.rs`: the writer thread and the outcomes it stores (results, dead letters, notes).
//! - `retry.rs`: retries with backoff (docs/protocol.md, "Addition 2").
//! - `scripts.rs`: the fetch thread's Lua scripts.
//!
//! Jobs go from the fetch thread to the executors, and outcomes from the fetch thread and the
//! executors to the writer, through crossbeam channels. Each channel closes when the threads that
//! send on it are gone: the fetch thread owns the only job sender, so the executors end once it has
//! stopped and the jobs it sent are taken; the fetch thread and every executor own a sender of
//! outcomes, so the writer ends once all of them have ended and it has stored what they sent.

mod execute;
mod fetch;
mod options;
mod retry;
mod scripts;
mod write;

pub use options::WorkerOptions;

use super::conn::Broker;
use super::envelope::TaskEnvelope;
use super::error::ClusterError;
use super::runner::TaskRunner;
use super::{GROUP, Keys};
use crate::cancel::CancelToken;
use crate::sync::{Condvar, Mutex};
use crossbeam_channel::Receiver;
use redis::{Connection, RedisResult};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use write::Write;

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
    /// Runs that ended in an error their task's retry policy names, the task queued again for
    /// later (docs/protocol.md, "Addition 2").
    pub retried: u64,
    /// Tasks whose name's rate limit gave them a later start: put in the delayed set until then
    /// (docs/protocol.md, "Addition 3").
    pub rate_limited: u64,
}

#[derive(Default)]
struct Counters {
    succeeded: AtomicU64,
    failed: AtomicU64,
    dead_lettered: AtomicU64,
    reclaimed: AtomicU64,
    handed_back: AtomicU64,
    cancelled: AtomicU64,
    retried: AtomicU64,
    rate_limited: AtomicU64,
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

struct Shared {
    broker: Broker,
    keys: Keys,
    consumer: String,
    options: WorkerOptions,
    runner: Box<dyn TaskRunner>,
    stop: Arc<AtomicBool>,
    /// Never set: the writer waits for the broker as long as it takes, since results must be stored.
    never: AtomicBool,
    /// The rate limits per task name, as emission intervals in µs, read with every promotion.
    limits: Mutex<HashMap<String, u64>>,
    /// Unreadable rate limits already reported (`name=value`), so each is said once.
    bad_limits: Mutex<std::collections::HashSet<String>>,
    /// Every entry held, with the watch of those handed to the executors (rule 2, rule 5).
    held: Mutex<HashMap<Held, Option<Watch>>>,
    slot_freed: Condvar,
    /// The jobs the fetch thread sent that no executor has taken yet: the executors take from it,
    /// and the fetch thread drains it at stop to hand those jobs back.
    jobs: Receiver<Job>,
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

/// Writes the rate limits the program's tasks declare (`#[martelli::task(rate_limit = …)]`) unless
/// a limit is set already for the name (`HSETNX`): an operator's `martelli ratelimit` wins.
fn declare_rate_limits(conn: &mut redis::Connection, keys: &Keys) -> Result<(), ClusterError> {
    let Ok(registry) = crate::task::Registry::get() else {
        return Ok(());
    };
    for (name, options) in registry.declared() {
        let Some(text) = options.rate_limit() else {
            continue;
        };
        let limit: crate::cluster::RateLimit = text.parse().map_err(|e| {
            ClusterError::InvalidOption(format!("the rate limit task {name} declares: {e}"))
        })?;
        redis::cmd("HSETNX")
            .arg(keys.rate_limits())
            .arg(name)
            .arg(limit.to_wire())
            .query::<()>(conn)
            .map_err(|source| ClusterError::Broker {
                action: "write a declared rate limit",
                source,
            })?;
    }
    Ok(())
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
            declare_rate_limits(&mut fetch_conn, &keys)?;
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
        // The fetch thread owns the only job sender; the fetch thread and each executor own an
        // outcome sender. A thread that fails to start drops its sender, so the threads already
        // started end (see the module docs).
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded::<Job>();
        let (writes_tx, writes_rx) = crossbeam_channel::unbounded::<Write>();
        let shared = Arc::new(Shared {
            broker,
            keys,
            consumer,
            runner: Box::new(runner),
            stop: Arc::new(AtomicBool::new(false)),
            never: AtomicBool::new(false),
            held: Mutex::new(HashMap::new()),
            limits: Mutex::new(HashMap::new()),
            bad_limits: Mutex::new(std::collections::HashSet::new()),
            slot_freed: Condvar::new(),
            jobs: jobs_rx,
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
            let out = writes_tx.clone();
            executors.push(spawn(
                format!("martelli-cluster-{i}"),
                Box::new(move || s.execute_loop(&out)),
            )?);
        }
        let s = shared.clone();
        let writer = spawn(
            "martelli-cluster-write".into(),
            Box::new(move || s.write_loop(write_conn, &writes_rx)),
        )?;
        let s = shared.clone();
        let fetch = std::thread::Builder::new()
            .name("martelli-cluster-fetch".into())
            .spawn(move || s.run(fetch_conn, jobs_tx, &writes_tx))
            .map_err(|source| ClusterError::Setup {
                what: "fetch thread",
                source,
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
        // The fetch thread's job sender is dropped when it ends, even by a panic: then the
        // executors end, and with them the last outcome senders, and then the writer.
        let fetched = self.fetch.join();
        for handle in self.executors {
            let _ = handle.join();
        }
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
            retried: c.retried.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
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

impl Shared {
    fn slots(&self) -> usize {
        self.options.concurrency
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
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
