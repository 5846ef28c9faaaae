//! The client's settings ([`ClientBuilder`]) and a submission's ([`SubmitOptions`]).

use super::send::Outbox;
use super::{Client, DEFAULT_CANCEL_TTL, Inner, State};
use crate::cluster::conn::Broker;
use crate::cluster::envelope::Retry;
use crate::cluster::error::ClusterError;
use crate::cluster::lost::OnLost;
use crate::cluster::{DEFAULT_MAX_PAYLOAD, DEFAULT_PREFIX, DEFAULT_QUEUE, Keys};
use crate::options::Priority;
use crate::sync::{Condvar, Mutex};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

/// Options of one submission.
///
/// ```
/// use martelli::cluster::SubmitOptions;
/// use martelli::Priority;
/// use std::time::Duration;
///
/// let options = SubmitOptions::new()
///     .priority(Priority::High)
///     .timeout(Duration::from_secs(30))
///     .max_attempts(5);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    pub(super) priority: Priority,
    pub(super) timeout: Option<Duration>,
    pub(super) delay: Option<Duration>,
    pub(super) max_attempts: Option<u32>,
    pub(super) keep: Option<Duration>,
    pub(super) retry: Option<Retry>,
    pub(super) id: Option<String>,
}

impl From<Priority> for SubmitOptions {
    fn from(priority: Priority) -> SubmitOptions {
        SubmitOptions::new().priority(priority)
    }
}

impl SubmitOptions {
    /// The defaults: normal priority, no timeout, no delay, the client's `max_attempts`.
    pub fn new() -> SubmitOptions {
        SubmitOptions::default()
    }

    /// Which stream the task goes to: workers take `High` before `Normal` before `Low`.
    pub fn priority(mut self, priority: Priority) -> SubmitOptions {
        self.priority = priority;
        self
    }

    /// A deadline, counted from submission: a worker does not start the task after it, and the future
    /// resolves as [`TaskError::TimedOut`](crate::TaskError::TimedOut) when it passes without a result. A task already running is
    /// not interrupted (a thread is never killed); its late result is dropped.
    pub fn timeout(mut self, timeout: Duration) -> SubmitOptions {
        self.timeout = Some(timeout);
        self
    }

    /// Runs the task no earlier than `delay` from now. The task waits in Redis (a sorted set), not in
    /// any process's memory.
    pub fn delay(mut self, delay: Duration) -> SubmitOptions {
        self.delay = Some(delay);
        self
    }

    /// How many deliveries the task gets before it goes to the dead-letter stream (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> SubmitOptions {
        self.max_attempts = Some(attempts);
        self
    }

    /// Runs the task no earlier than `at` (an ETA); a time in the past runs it at once. The same
    /// as [`delay`](SubmitOptions::delay) from now until `at`.
    pub fn eta(mut self, at: std::time::SystemTime) -> SubmitOptions {
        self.delay = Some(
            at.duration_since(std::time::SystemTime::now())
                .unwrap_or_default(),
        );
        self
    }

    /// Keeps the task's record, its state and its result, readable by id from any process
    /// ([`Client::status`], [`Client::result`], `martelli result ID`) until `ttl` after it ends
    /// (docs/protocol.md, "Addition 1: task records"). Costs two writes per task in Redis.
    pub fn result_ttl(mut self, ttl: Duration) -> SubmitOptions {
        self.keep = Some(ttl);
        self
    }

    /// Runs the task again, later, when a run ends in an error `retry` names (exponential backoff
    /// with jitter; docs/protocol.md, "Addition 2: retries"). The retries wait in Redis and survive
    /// the death of any worker; the errors of every run are kept, and a task that runs out of
    /// retries is dead-lettered with all of them.
    pub fn retry(mut self, retry: Retry) -> SubmitOptions {
        self.retry = Some(retry);
        self
    }

    /// The task's id (default: a new random id), the name to look it up by with
    /// [`Client::status`]. Ids must be unique within a prefix: a task that reuses the id of a
    /// task whose record still exists shares its record.
    pub fn id(mut self, id: impl Into<String>) -> SubmitOptions {
        self.id = Some(id.into());
        self
    }
}

/// Builds a [`Client`] with settings other than the defaults.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    prefix: String,
    queue: String,
    max_payload: usize,
    max_attempts: u32,
    tls_ca: Option<std::path::PathBuf>,
    cancel_ttl: Duration,
    on_lost: OnLost,
    result_ttl: Option<Duration>,
}

impl ClientBuilder {
    /// A builder for the broker at `url` (`redis://[user:password@]host[:port][/db]`).
    pub fn new(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            queue: DEFAULT_QUEUE.to_owned(),
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_attempts: crate::cluster::envelope::DEFAULT_MAX_ATTEMPTS,
            tls_ca: None,
            cancel_ttl: DEFAULT_CANCEL_TTL,
            on_lost: OnLost::default(),
            result_ttl: None,
        }
    }

    /// Keeps a record of every task this client submits, readable by id until `ttl` after the
    /// task ends ([`SubmitOptions::result_ttl`] for one task; default: no record, except for
    /// [`Client::send`], which keeps one for an hour).
    pub fn result_ttl(mut self, ttl: Duration) -> ClientBuilder {
        self.result_ttl = Some(ttl);
        self
    }

    /// The prefix of every key (default `martelli`); clients and workers must agree on it.
    pub fn prefix(mut self, prefix: impl Into<String>) -> ClientBuilder {
        self.prefix = prefix.into();
        self
    }

    /// The queue tasks go to (default `default`).
    pub fn queue(mut self, queue: impl Into<String>) -> ClientBuilder {
        self.queue = queue.into();
        self
    }

    /// The largest envelope this client sends (default 8 MiB); larger tasks are refused at submit.
    pub fn max_payload(mut self, bytes: usize) -> ClientBuilder {
        self.max_payload = bytes;
        self
    }

    /// Deliveries a task gets before it is dead-lettered, unless its options say otherwise (default 3).
    pub fn max_attempts(mut self, attempts: u32) -> ClientBuilder {
        self.max_attempts = attempts;
        self
    }

    /// For a `rediss://` broker: trust the CA certificate(s) in the PEM file at `path` instead of the
    /// system's roots (for a broker whose certificate a private CA signed). Without it, the file named
    /// by the `MARTELLI_TLS_CA` environment variable, if set, is used.
    pub fn tls_ca(mut self, path: impl Into<std::path::PathBuf>) -> ClientBuilder {
        self.tls_ca = Some(path.into());
        self
    }

    /// How long the tombstone of a cancelled task stays in Redis (default 24 hours). A cancelled task
    /// that is still queued when its tombstone expires runs after all (its result is dropped).
    pub fn cancel_ttl(mut self, ttl: Duration) -> ClientBuilder {
        self.cancel_ttl = ttl;
        self
    }

    /// What to do with a task that vanished from the broker (a Redis restart without persistence,
    /// deleted or evicted keys): queue it again (the default; tasks run at least once) or fail its
    /// future as [`TaskError::Lost`](crate::TaskError::Lost). The client finds such tasks after a reconnect, when the
    /// broker's `run_id` changes, and once a minute for tasks that have waited longer; see
    /// `docs/protocol.md`, "Tasks that vanish". To resubmit, the client keeps each task's envelope
    /// until its result arrives.
    pub fn on_lost(mut self, on_lost: OnLost) -> ClientBuilder {
        self.on_lost = on_lost;
        self
    }

    /// Connects (checking the address, the credentials and the server's version) and starts the
    /// client's threads.
    pub fn build(self) -> Result<Client, ClusterError> {
        if self.cancel_ttl < Duration::from_millis(1) {
            return Err(ClusterError::InvalidOption(
                "the cancel TTL must be at least 1 ms".to_owned(),
            ));
        }
        if self.max_attempts == 0 {
            return Err(ClusterError::InvalidOption(
                "max_attempts must be at least 1".to_owned(),
            ));
        }
        if self.prefix.is_empty() || self.queue.is_empty() {
            return Err(ClusterError::InvalidOption(
                "the key prefix and the queue name must not be empty".to_owned(),
            ));
        }
        let broker = Broker::new(&self.url, self.tls_ca.as_deref())?;
        let (send_conn, collect_conn) = broker.setup("client", || {
            Ok((broker.connect_checked()?, broker.connect()?))
        })?;
        let keys = Keys::new(&self.prefix, &self.queue);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let reply = keys.reply(&id);
        let inner = Arc::new(Inner {
            broker,
            keys,
            reply,
            max_payload: self.max_payload,
            max_attempts: self.max_attempts,
            cancel_ttl_ms: u64::try_from(self.cancel_ttl.as_millis()).unwrap_or(u64::MAX),
            on_lost: self.on_lost,
            keep: self.result_ttl,
            query: Mutex::new(None),
            state: Mutex::new(State::default()),
            idle: Condvar::new(),
            outbox: Mutex::new(Outbox::default()),
            outbox_ready: Condvar::new(),
            sent: Condvar::new(),
            collector_stop: AtomicBool::new(false),
            never: AtomicBool::new(false),
            sender_reconnected: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            resubmitted: AtomicU64::new(0),
        });
        let sender = inner.clone();
        std::thread::Builder::new()
            .name("martelli-cluster-send".into())
            .spawn(move || sender.send_loop(send_conn))
            .map_err(|source| ClusterError::Setup {
                what: "sender thread",
                source,
            })?;
        let collector = inner.clone();
        let spawned = std::thread::Builder::new()
            .name("martelli-cluster-collect".into())
            .spawn(move || collector.collect_loop(collect_conn));
        if let Err(source) = spawned {
            inner.close();
            return Err(ClusterError::Setup {
                what: "collector thread",
                source,
            });
        }
        Ok(Client { inner })
    }
}
