//! A worker's settings.

use crate::cluster::error::ClusterError;
use crate::cluster::{DEFAULT_MAX_PAYLOAD, DEFAULT_PREFIX, DEFAULT_QUEUE};
use std::time::Duration;

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
    pub(super) prefix: String,
    pub(super) queue: String,
    pub(super) concurrency: usize,
    pub(super) lease: Duration,
    pub(super) poll: Duration,
    pub(super) result_ttl: Duration,
    pub(super) max_payload: usize,
    pub(super) dead_letter_max: usize,
    pub(super) name: Option<String>,
    pub(super) tls_ca: Option<std::path::PathBuf>,
    pub(super) processes: Option<usize>,
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

    /// Runs registered tasks ([`Registered`](crate::cluster::Registered)) on `n` local worker processes (0:
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

    pub(super) fn validate(&self) -> Result<(), ClusterError> {
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
