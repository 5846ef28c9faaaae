//! The cluster tier: tasks on many machines through Redis Streams.
//!
//! A [`Client`] puts tasks on a Redis stream; workers ([`serve`], [`Worker`]) on any number of
//! machines take them through one consumer group, run them and store each result before they
//! acknowledge the task, so a task whose worker dies is reclaimed and run again (at-least-once), while
//! the client drops duplicate results (each result reaches the caller exactly once). The wire protocol
//! is documented in `docs/protocol.md`, so that programs in other languages can produce tasks and read
//! results.
//!
//! On the wire a task is a *name* and a *payload of bytes*; the worker finds the task by name through a
//! [`TaskRunner`]. [`Registered`] runs every [`#[martelli::task]`](crate::task) function of the
//! program, with MessagePack arguments and results, so [`Pool::cluster`](crate::Pool::cluster) gives
//! the same `Pool` API as every other backend. [`Tasks`] is a map from names to functions, raw (bytes in,
//! bytes out) or typed (MessagePack through serde), optionally with the registered tasks too. No code
//! travels as data: a message can only run a task the worker registered.
//!
//! A worker with [`WorkerOptions::processes`] runs registered tasks on a local process pool, so a task
//! that crashes its process or outlives its deadline costs that process, never the worker.
//!
//! ```no_run
//! use martelli::cluster::{Client, Tasks, Worker, WorkerOptions};
//!
//! // On the workers (usually other machines):
//! let tasks = Tasks::new().typed("add", |(a, b): (i64, i64)| Ok::<_, std::io::Error>(a + b));
//! let worker = Worker::start("redis://127.0.0.1:6379", tasks, WorkerOptions::default())?;
//!
//! // On the client:
//! let client = Client::connect("redis://127.0.0.1:6379")?;
//! let sum = client.submit::<_, i64>("add", &(2, 3))?;
//! assert_eq!(sum.wait()?, 5);
//!
//! worker.stop();
//! worker.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Delivery guarantees
//!
//! - A task runs **at least once**: a worker stores the result *before* it acknowledges the task, and
//!   a task whose worker stops renewing its lease is reclaimed by another worker.
//! - The caller sees each result **exactly once**: results carry the task id and the client drops
//!   every result after the first.
//! - A task delivered `max_attempts` times without a result goes to the dead-letter stream with the
//!   reason, and its future resolves as [`TaskError::Lost`](crate::TaskError::Lost).
//! - Without persistence (`appendonly no`), a Redis restart loses what was queued and results not yet
//!   collected. The client notices the tasks it waits for that exist nowhere any more (after it
//!   reconnects, when the broker's `run_id` changes, and once a minute for long waits) and queues
//!   them again, or fails them as [`TaskError::Lost`](crate::TaskError::Lost) with
//!   [`OnLost::Fail`]. With AOF nothing is lost.
//! - A future reads as [`Running`](crate::Status::Running) once a worker has started its task.
//! - [`Future::cancel`](crate::Future::cancel) resolves the future as cancelled (queued or running)
//!   and writes a tombstone. A worker checks it before it starts the task, and watches the tombstones of the
//!   tasks it runs while the queue has any (at least once per poll interval, inside a script it
//!   runs anyway): a running task is killed with its process when the worker runs it on a process
//!   pool ([`WorkerOptions::processes`]), and asked to stop through its
//!   [`CancelToken`](crate::CancelToken) ([`is_cancelled`](crate::is_cancelled)) when it runs on a
//!   thread, which is never killed. Its result is `cancelled`, and the caller has dropped it
//!   already.
//!
//! # Status
//!
//! [`status`] reads a queue's depth per priority, its delayed tasks and dead letters, the workers'
//! heartbeats and the throughput from the broker alone; `martelli status` prints it.
//!
//! # Inspecting and dead letters
//!
//! An [`Inspector`] is what `martelli dashboard` reads through: every queue under a prefix, the
//! workers, a queue's delayed tasks, one task found by id (with a text preview of its payload, a
//! [`Payload`]), and a queue's dead letters ([`DeadLetters`]), which it can requeue or discard.
//!
//! # TLS
//!
//! A `rediss://` URL connects with TLS (feature `tls`, rustls). The broker's certificate is checked
//! against the system's roots, or the CA certificates of a PEM file:
//! [`ClientBuilder::tls_ca`], [`WorkerOptions::tls_ca`], [`StatusOptions::tls_ca`], or the
//! [`TLS_CA_ENV`] (`MARTELLI_TLS_CA`) environment variable.
//!
//! # Results by id, retries and rate limits
//!
//! A task submitted with [`SubmitOptions::result_ttl`] (or queued with [`Client::send`], which
//! returns its id at once) keeps a *record* in Redis: its state, attempts and, once it ended, its
//! outcome, read by id from any process with [`Client::status`] and [`Client::result`] (and
//! `martelli result ID`) until the TTL after it ended. [`SubmitOptions::retry`] runs a task again
//! with exponential backoff and jitter when a run ends in an error its [`Retry`] policy names; the
//! retry waits in Redis (the delayed set), so it survives any worker's death, and every run's
//! error is kept ([`AttemptError`]): in the record, and in the dead letter of a task that ran out
//! of retries. [`Client::set_rate_limit`] limits how often tasks of a name start across every
//! worker ([`RateLimit`]), with start times reserved in Redis. All three are optional keys of the
//! protocol (`docs/protocol.md`, "Additions to version 1"), so producers and workers in other
//! languages can take part.
//!
//! # Periodic tasks
//!
//! A [`Schedule`] queues a task at every tick of a cron expression (UTC) or an interval;
//! [`Schedules`] keeps them in Redis and any number of [`Scheduler`]s fire them, each tick once
//! (the claim of a tick and the queueing of its task are one script on the broker, on the
//! broker's clock). After a pause the missed ticks fire once ([`CatchUp::Latest`]) or not at all
//! ([`CatchUp::Skip`]), never in a burst (`docs/protocol.md`, "Addition 4").
//!
//! # Not built yet
//!
//! Per-task lease lengths and client certificates (mutual TLS); time zones other than UTC for
//! schedules.
//!
//! # Workflows
//!
//! [`Client::chain`], [`Client::group`] and [`Client::chord`] queue [`Step`]s whose results are
//! passed on; completion is counted in Redis by the worker that stores each member's result, and
//! a chord's callback is queued exactly once (see the `workflow` module and `docs/protocol.md`,
//! "Addition 5").

mod client;
mod conn;
mod deadletters;
mod env;
mod envelope;
mod error;
mod inspect;
mod lost;
mod platform;
mod preview;
mod ratelimit;
mod reclaim;
mod record;
mod registered;
mod runner;
mod schedule;
mod sink;
mod status;
mod worker;
mod workflow;

/// Entry points for the fuzz targets in `fuzz/` (built only with `--cfg fuzzing`, as cargo-fuzz does).
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    use super::envelope::{ResultEnvelope, TaskEnvelope};

    /// Decodes `bytes` as a task envelope; a decoded envelope must encode and decode to itself.
    pub fn task_envelope(bytes: &[u8]) {
        if let Ok(envelope) = TaskEnvelope::decode(bytes) {
            let again = envelope.encode().expect("a decoded envelope encodes");
            let back = TaskEnvelope::decode(&again).expect("an encoded envelope decodes");
            assert_eq!(back.id, envelope.id);
            assert_eq!(back.task, envelope.task);
            assert_eq!(back.payload, envelope.payload);
        }
    }

    /// Decodes `bytes` as a result envelope.
    pub fn result_envelope(bytes: &[u8]) {
        if let Ok(envelope) = ResultEnvelope::decode(bytes) {
            let back =
                ResultEnvelope::decode(&envelope.encode()).expect("an encoded result decodes");
            assert_eq!(back.id, envelope.id);
            assert_eq!(back.payload, envelope.payload);
        }
    }
}

pub use client::{Client, ClientBuilder, SubmitOptions, Submitter};
pub use deadletters::{
    Bulk, DeadLetter, DeadLetterError, DeadLetterPage, DeadLetters, MAX_PAGE, PageStart,
};
pub use env::WORKER_ENV;
pub(crate) use env::init_from_env;
pub use envelope::{AttemptError, Retry, RetryOn};
pub use error::ClusterError;
pub use inspect::{
    DelayedPage, DelayedTask, EnvelopeView, Inspector, InspectorOptions, QueueReading, Reading,
    ResultView, SEARCH_LIMIT, TaskState, TaskView,
};
pub use lost::OnLost;
pub use platform::{
    FLOW_SCAN, FlowKind, FlowView, PlatformView, RETRY_SCAN, RateLimitView, RetryView,
};
pub use preview::{DECODE_LIMIT, PREVIEW_CHARS, Payload};
pub use ratelimit::{RateLimit, RateLimitError};
pub use record::{RecordState, TaskRecord};
pub use registered::Registered;
pub use runner::{RunError, TaskRunner, Tasks};
pub use schedule::{
    CatchUp, CronExpr, Schedule, ScheduleError, ScheduleInfo, Scheduler, SchedulerOptions,
    SchedulerReport, Schedules, Timing, parse_interval, task_id,
};
pub(crate) use sink::{SharedSink, Sink, decode_result};
pub use status::{
    ClusterStatus, QueueStatus, StatusOptions, StreamStatus, Throughput, WorkerStatus, status,
};
pub use worker::{StopHandle, Worker, WorkerOptions, WorkerReport, serve};
pub use workflow::{Chain, Chord, FlowOptions, Group, OnMemberFailure, Step};

use crate::options::Priority;

/// The protocol version this build speaks (the `v` field of every envelope).
pub const PROTOCOL_VERSION: u32 = 1;

/// The default key prefix: every key martelli uses starts with `martelli:`.
pub const DEFAULT_PREFIX: &str = "martelli";

/// The default queue name.
pub const DEFAULT_QUEUE: &str = "default";

/// The consumer group every worker of a queue joins.
pub const GROUP: &str = "martelli";

/// The environment variable naming a PEM file of CA certificates to trust for a `rediss://` broker
/// when the program gives none (`ClientBuilder::tls_ca`, `WorkerOptions::tls_ca`).
pub const TLS_CA_ENV: &str = "MARTELLI_TLS_CA";

/// The default largest envelope a client sends or a worker runs: 8 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 8 << 20;

/// The Redis keys of one queue (see `docs/protocol.md`, "Keys").
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) prefix: String,
    /// The task streams, highest priority first: `{prefix}:q:{queue}:{high|normal|low}`.
    pub(crate) streams: [String; 3],
    /// Delayed tasks: `{prefix}:q:{queue}:delayed`.
    pub(crate) delayed: String,
    /// Dead letters: `{prefix}:q:{queue}:dead`.
    pub(crate) dead: String,
    /// `{prefix}:q:{queue}`.
    base: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str, queue: &str) -> Keys {
        let base = format!("{prefix}:q:{queue}");
        Keys {
            prefix: prefix.to_owned(),
            streams: [
                format!("{base}:high"),
                format!("{base}:normal"),
                format!("{base}:low"),
            ],
            delayed: format!("{base}:delayed"),
            dead: format!("{base}:dead"),
            base,
        }
    }

    /// The stream of a priority level.
    pub(crate) fn stream_index(priority: Priority) -> usize {
        match priority {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }

    /// A client's reply list: `{prefix}:reply:{client id}`.
    pub(crate) fn reply(&self, client_id: &str) -> String {
        format!("{}:reply:{client_id}", self.prefix)
    }

    /// The tombstone of a cancelled task: `{prefix}:cancel:{task id}`.
    pub(crate) fn tombstone(&self, task_id: &str) -> String {
        format!("{}:cancel:{task_id}", self.prefix)
    }

    /// Set while tombstones may exist for this queue's tasks: `{prefix}:q:{queue}:cancels`.
    pub(crate) fn cancels(&self) -> String {
        format!("{}:cancels", self.base)
    }

    /// The record of a task (docs/protocol.md, "Addition 1"): `{prefix}:task:{task id}`.
    pub(crate) fn record(&self, task_id: &str) -> String {
        format!("{}:task:{task_id}", self.prefix)
    }

    /// The rate limits per task name (docs/protocol.md, "Addition 3"): `{prefix}:ratelimits`.
    pub(crate) fn rate_limits(&self) -> String {
        format!("{}:ratelimits", self.prefix)
    }

    /// The rate-limit state of a task name: `{prefix}:rate:{task}`.
    pub(crate) fn rate(&self, task: &str) -> String {
        format!("{}:rate:{task}", self.prefix)
    }

    /// A workflow's hash (Addition 5): `{prefix}:flow:{id}`.
    pub(crate) fn flow(&self, flow_id: &str) -> String {
        format!("{}:flow:{flow_id}", self.prefix)
    }

    /// The index of workflows (Addition 5, optional): `{prefix}:flows`, a sorted set of workflow
    /// ids scored by when their hash expires (Unix ms).
    pub(crate) fn flows(&self) -> String {
        format!("{}:flows", self.prefix)
    }

    /// A worker's heartbeat hash: `{prefix}:worker:{consumer}`.
    pub(crate) fn heartbeat(&self, consumer: &str) -> String {
        format!("{}:worker:{consumer}", self.prefix)
    }
}

/// Milliseconds since the Unix epoch, the clock of deadlines and delays on the wire.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
