//! The cluster backend: a [`Pool`](crate::Pool) whose tasks run on cluster workers on any number of
//! machines, through a [`cluster::Client`](crate::cluster::Client) and Redis Streams.
//!
//! ```no_run
//! #[martelli::task]
//! fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! // Workers (this program, on other machines) run `martelli::cluster::serve(url, Registered, …)`.
//! let pool = martelli::Pool::cluster("redis://127.0.0.1:6379")?;
//! assert_eq!(pool.submit_task(add, (2, 3))?.wait()?, 5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How the Pool API maps to the cluster
//!
//! - `submit_task`, `submit_named`: one task envelope per call; the arguments travel as the MessagePack
//!   argument array of [`Registered`](crate::cluster::Registered) tasks, so a worker serving
//!   `Registered` (or [`Tasks::registered`](crate::cluster::Tasks::registered)) runs them.
//! - `map_task`: each input is its own task (so the inputs of one chunk spread over the workers); a
//!   chunk's future resolves when all of its inputs have.
//! - Priorities go to the queue's three streams; a timeout ([`TaskOptions::timeout`] or
//!   [`PoolBuilder::task_timeout`](crate::PoolBuilder::task_timeout)) becomes the envelope's
//!   deadline, counted **from submission** (time in the queue included): a worker does not start the
//!   task after it, and the future resolves as `TimedOut` when it passes.
//! - [`Future::cancel`](crate::Future::cancel) resolves the future as `Cancelled` and writes a
//!   tombstone, so that a worker that has not started the task acknowledges it without running it.
//!   A task already running is stopped by its worker within a poll interval: on a worker's process
//!   pool its process is killed; on a thread its [`CancelToken`](crate::CancelToken) fires
//!   ([`is_cancelled`](crate::is_cancelled) turns true), and a task that never checks runs to the
//!   end. Whatever result it still produces is dropped.
//! - A future reads as [`Running`](crate::Status::Running) once a worker has started its task (the
//!   worker sends a `started` note); a chunk's, once one of its inputs has.
//! - A name no worker knows is dead-lettered: its future resolves as `Lost`.
//! - A task that vanished from the broker (a Redis restart without persistence) is queued again,
//!   or its future resolves as `Lost` ([`PoolBuilder::cluster_on_lost`]): the client looks for the
//!   tasks it waits for after a reconnect, when the broker's `run_id` changes, and once a minute
//!   (docs/protocol.md, "Tasks that vanish").
//! - Closures are refused ([`Error::NotATask`]), as on the process backend.
//! - [`Shutdown::Wait`] (and dropping the pool) waits for the result of every task submitted; with no
//!   worker running that is for ever, unless the tasks have timeouts. [`Shutdown::CancelPending`]
//!   cancels every task still waiting for its result.
//!
//! [`TaskOptions::timeout`]: crate::TaskOptions::timeout

use super::{Admission, Backend, Rejected, RemoteBackend, RemoteJob, RemoteRejected, Sink, Wire};
use crate::cluster::{Client, ClusterError, OnLost, SubmitOptions};
use crate::error::{Error, TaskError, TaskResult};
use crate::job::Job;
use crate::options::{Priority, Shutdown};
use crate::pool::PoolBuilder;
use crate::sync::Mutex;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What `map_task` sizes its window by when the pool does not know the cluster's width.
const DEFAULT_WIDTH: usize = 16;

/// The settings of a cluster pool (`PoolBuilder::cluster` and the `cluster_*` setters).
#[derive(Debug, Clone)]
pub(crate) struct ClusterSettings {
    url: String,
    prefix: Option<String>,
    queue: Option<String>,
    max_attempts: Option<u32>,
    max_payload: Option<usize>,
    on_lost: Option<OnLost>,
    width: usize,
}

impl ClusterSettings {
    pub(crate) fn new(url: String) -> ClusterSettings {
        ClusterSettings {
            url,
            prefix: None,
            queue: None,
            max_attempts: None,
            max_payload: None,
            on_lost: None,
            width: DEFAULT_WIDTH,
        }
    }
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings::new(String::new())
    }
}

/// The cluster's settings on the pool builder. Each applies to a pool built with
/// [`PoolBuilder::cluster`].
impl PoolBuilder {
    /// The queue the pool's tasks go to (default `default`); its workers must serve the same queue.
    pub fn cluster_queue(mut self, queue: impl Into<String>) -> Self {
        self.cluster.queue = Some(queue.into());
        self
    }

    /// The prefix of every Redis key (default `martelli`); clients and workers must agree on it.
    pub fn cluster_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.cluster.prefix = Some(prefix.into());
        self
    }

    /// How many deliveries a task gets before it is dead-lettered and its future resolves as
    /// [`TaskError::Lost`] (default 3).
    pub fn cluster_max_attempts(mut self, attempts: u32) -> Self {
        self.cluster.max_attempts = Some(attempts);
        self
    }

    /// The largest task envelope the pool sends (default 8 MiB); a larger task's future resolves as
    /// [`TaskError::Codec`]. Workers have their own limit.
    pub fn cluster_max_payload(mut self, bytes: usize) -> Self {
        self.cluster.max_payload = Some(bytes);
        self
    }

    /// What to do with a task that vanished from the broker (a Redis restart without persistence,
    /// deleted or evicted keys): queue it again ([`OnLost::Resubmit`], the default: tasks run at
    /// least once) or resolve its future as [`TaskError::Lost`] ([`OnLost::Fail`]). See
    /// [`ClientBuilder::on_lost`](crate::cluster::ClientBuilder::on_lost).
    pub fn cluster_on_lost(mut self, on_lost: OnLost) -> Self {
        self.cluster.on_lost = Some(on_lost);
        self
    }

    /// How many tasks the cluster runs at once, as far as this pool knows (default 16): what
    /// [`Pool::workers`](crate::Pool::workers) reports and [`map_task`](crate::Pool::map_task) sizes
    /// its window by. It does not limit the workers.
    pub fn cluster_width(mut self, tasks: usize) -> Self {
        self.cluster.width = tasks.max(1);
        self
    }
}

/// The cluster backend. See the [module docs](self).
pub(crate) struct Cluster {
    client: Client,
    width: usize,
    max_payload: usize,
    shut_down: AtomicBool,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("client", &self.client)
            .field("width", &self.width)
            .finish()
    }
}

impl Cluster {
    /// Connects to the broker (checking the address, the credentials and its version).
    pub(crate) fn start(settings: ClusterSettings) -> Result<Cluster, Error> {
        let mut builder = Client::builder(settings.url);
        if let Some(prefix) = settings.prefix {
            builder = builder.prefix(prefix);
        }
        if let Some(queue) = settings.queue {
            builder = builder.queue(queue);
        }
        if let Some(attempts) = settings.max_attempts {
            builder = builder.max_attempts(attempts);
        }
        if let Some(on_lost) = settings.on_lost {
            builder = builder.on_lost(on_lost);
        }
        let max_payload = settings
            .max_payload
            .unwrap_or(crate::cluster::DEFAULT_MAX_PAYLOAD);
        let client = builder.max_payload(max_payload).build()?;
        Ok(Cluster {
            client,
            width: settings.width,
            max_payload,
            shut_down: AtomicBool::new(false),
        })
    }
}

/// A pool job's sink as the cluster client holds it: shared with the client's threads, started
/// when a worker starts the task, completed once.
/// The id of the future it resolves is kept apart: the sink is gone once it completes.
struct Remote(Mutex<Option<Box<dyn Sink>>>, Option<crate::future::TaskId>);

impl crate::cluster::Sink for Remote {
    fn start(&self) {
        if let Some(sink) = self.0.lock().as_ref() {
            // A task cancelled while queued has its tombstone; the worker does not run it.
            let _ = sink.start();
        }
    }

    fn future(&self) -> Option<crate::future::TaskId> {
        self.1
    }

    fn complete(&self, result: TaskResult<Vec<u8>>) {
        let Some(sink) = self.0.lock().take() else {
            return;
        };
        match result {
            Ok(bytes) => sink.complete(Ok(&bytes)),
            Err(error) => sink.complete(Err(error)),
        }
    }
}

fn submit_options(priority: Priority, timeout: Option<Duration>) -> SubmitOptions {
    let options = SubmitOptions::new().priority(priority);
    match timeout {
        Some(timeout) => options.timeout(timeout),
        None => options,
    }
}

/// Why the client refused a task: an outcome for its future (`Ok`), or an error for the caller.
fn refused(name: &str, error: ClusterError) -> Result<TaskError, Error> {
    match error {
        ClusterError::PayloadTooLarge { .. } | ClusterError::Encode(_) => Ok(TaskError::Codec(
            format!("task {name:?} could not be sent: {error}"),
        )),
        ClusterError::Closed => Err(Error::ShutDown),
        other => Err(Error::Cluster(other)),
    }
}

impl Backend for Cluster {
    fn kind(&self) -> &'static str {
        "cluster"
    }

    fn workers(&self) -> usize {
        self.width
    }

    /// Closures cannot cross a machine boundary; `Pool` refuses them before they get here.
    fn execute(&self, job: Job, _admission: Admission) -> Result<(), Rejected> {
        Err(Rejected::ShutDown(job))
    }

    /// Tasks submitted whose result has not arrived (queued or running on a worker).
    fn queued(&self) -> usize {
        self.client.pending()
    }

    fn help_one(&self) -> bool {
        false
    }

    fn shutdown(&self, mode: Shutdown) {
        self.shut_down.store(true, Ordering::Release);
        if mode == Shutdown::CancelPending {
            self.client.cancel_pending();
        }
        self.client.flush();
        self.client.wait_idle();
    }

    fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    fn remote(&self) -> Option<&dyn RemoteBackend> {
        Some(self)
    }
}

impl RemoteBackend for Cluster {
    fn max_frame(&self) -> usize {
        self.max_payload
    }

    fn wire(&self) -> Wire {
        Wire::MessagePack
    }

    /// Sends a task whose payload is its MessagePack argument array. A payload over the limit or
    /// one the client cannot encode fails the task with the reason ([`TaskError::Codec`]); a
    /// client that closed, or a broker that refused, is the caller's error.
    fn execute_remote(&self, job: RemoteJob, _admission: Admission) -> Result<(), RemoteRejected> {
        if self.is_shut_down() {
            return Err(RemoteRejected::ShutDown);
        }
        let RemoteJob {
            task, frame, sink, ..
        } = job;
        let options = submit_options(job.priority, sink.timeout());
        let token = sink.token().clone();
        let future = sink.future();
        let shared = Arc::new(Remote(Mutex::new(Some(sink)), future));
        let as_client: crate::cluster::SharedSink = shared.clone();
        match self
            .client
            .submit_encoded(&task, frame, &options, as_client)
        {
            Ok(id) => {
                self.client.cancel_on(&token, vec![id]);
                Ok(())
            }
            Err(error) => match refused(&task, error) {
                Ok(task_error) => {
                    crate::cluster::Sink::complete(&*shared, Err(task_error));
                    Ok(())
                }
                Err(Error::ShutDown) => Err(RemoteRejected::ShutDown),
                Err(error) => Err(RemoteRejected::Failed(error)),
            },
        }
    }
}
