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

use super::{Admission, Backend, Rejected, RemoteBackend, RemoteJob, RemoteRejected};
use crate::cluster::{Client, ClusterError, OnLost, SubmitOptions};
use crate::error::{Error, TaskError, TaskResult};
use crate::future::{Future, Promise, promise};
use crate::job::Job;
use crate::options::{Priority, Shutdown};
use crate::pool::PoolBuilder;
use crate::sync::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
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

    /// Submits the task `name` with MessagePack arguments; its future decodes a MessagePack value.
    pub(crate) fn submit<A, R>(
        &self,
        priority: Priority,
        timeout: Option<Duration>,
        name: &str,
        args: &A,
    ) -> Result<Future<R>, Error>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        if self.is_shut_down() {
            return Err(Error::ShutDown);
        }
        let (promise, future) = promise::<R>();
        let payload = match encode(name, args) {
            Ok(payload) => payload,
            Err(error) => {
                promise.complete(Err(error));
                return Ok(future);
            }
        };
        let options = submit_options(priority, timeout);
        let sink = crate::cluster::decode_into(name, promise);
        match self.client.submit_encoded(name, payload, &options, sink) {
            Ok(id) => {
                self.client.cancel_on(future.token(), vec![id]);
                Ok(future)
            }
            // The sink was dropped with its promise: the future is cancelled; report why.
            Err(error) => match refused(name, error) {
                Ok(task_error) => {
                    let (failed, future) = crate::future::promise::<R>();
                    failed.complete(Err(task_error));
                    Ok(future)
                }
                Err(error) => Err(error),
            },
        }
    }

    /// Submits every input of a chunk as its own task; the future resolves, in input order, when
    /// each has.
    pub(crate) fn submit_chunk<A, R>(
        &self,
        priority: Priority,
        timeout: Option<Duration>,
        name: &str,
        chunk: &[A],
    ) -> Result<Future<Vec<TaskResult<R>>>, Error>
    where
        A: Serialize,
        R: DeserializeOwned + Send + 'static,
    {
        if self.is_shut_down() {
            return Err(Error::ShutDown);
        }
        let (promise, future) = promise::<Vec<TaskResult<R>>>();
        // One extra count, dropped after the loop, so the chunk cannot complete while it is sent.
        let gather = Arc::new(Mutex::new(Gather {
            results: (0..chunk.len()).map(|_| None).collect(),
            left: chunk.len() + 1,
            promise: Some(promise),
        }));
        let options = submit_options(priority, timeout);
        let mut ids = Vec::with_capacity(chunk.len());
        for (index, args) in chunk.iter().enumerate() {
            let payload = match encode(name, args) {
                Ok(payload) => payload,
                Err(error) => {
                    Gather::set(&gather, index, Err(error));
                    continue;
                }
            };
            let sink = Arc::new(Input {
                task: name.to_owned(),
                index,
                gather: Arc::clone(&gather),
            });
            match self.client.submit_encoded(name, payload, &options, sink) {
                Ok(id) => ids.push(id),
                Err(error) => match refused(name, error) {
                    Ok(task_error) => Gather::set(&gather, index, Err(task_error)),
                    Err(error) => {
                        // The inputs already sent run; nobody waits for them.
                        self.client.cancel_on(future.token(), ids);
                        future.cancel();
                        return Err(error);
                    }
                },
            }
        }
        Gather::done(&gather);
        self.client.cancel_on(future.token(), ids);
        Ok(future)
    }
}

/// The sink of one input of a chunk: its outcome goes to its place in the chunk, and its start
/// marks the chunk's future running.
struct Input<R> {
    task: String,
    index: usize,
    gather: Arc<Mutex<Gather<R>>>,
}

impl<R: DeserializeOwned + Send + 'static> crate::cluster::Sink for Input<R> {
    fn start(&self) {
        if let Some(promise) = self.gather.lock().promise.as_ref() {
            promise.start();
        }
    }

    fn complete(&self, result: TaskResult<Vec<u8>>) {
        let decoded =
            result.and_then(|bytes| crate::cluster::decode_result::<R>(&self.task, &bytes));
        Gather::set(&self.gather, self.index, decoded);
    }
}

/// The outcomes of a chunk's inputs as they arrive.
struct Gather<R> {
    results: Vec<Option<TaskResult<R>>>,
    left: usize,
    promise: Option<Promise<Vec<TaskResult<R>>>>,
}

impl<R> Gather<R> {
    fn set(gather: &Mutex<Gather<R>>, index: usize, result: TaskResult<R>) {
        let mut g = gather.lock();
        if let Some(slot) = g.results.get_mut(index) {
            *slot = Some(result);
        }
        Gather::count_down(g);
    }

    fn done(gather: &Mutex<Gather<R>>) {
        Gather::count_down(gather.lock());
    }

    fn count_down(mut g: crate::sync::MutexGuard<'_, Gather<R>>) {
        g.left -= 1;
        if g.left > 0 {
            return;
        }
        let promise = g.promise.take();
        let results = std::mem::take(&mut g.results)
            .into_iter()
            .map(|r| r.unwrap_or(Err(TaskError::Cancelled)))
            .collect();
        drop(g);
        if let Some(promise) = promise {
            promise.complete(Ok(results));
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

/// A registered task's arguments as MessagePack (see `cluster::Registered`).
fn encode<A: Serialize + ?Sized>(name: &str, args: &A) -> TaskResult<Vec<u8>> {
    rmp_serde::to_vec_named(args).map_err(|e| {
        TaskError::Codec(format!(
            "the arguments of task {name:?} could not be encoded as MessagePack: {e}"
        ))
    })
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

    fn cluster(&self) -> Option<&Cluster> {
        Some(self)
    }
}

impl RemoteBackend for Cluster {
    fn max_frame(&self) -> usize {
        self.max_payload
    }

    /// `Pool` sends cluster tasks through [`Cluster::submit`] (MessagePack), never as process-pool
    /// frames; a frame that gets here anyway fails its task with the reason instead of being sent in
    /// an encoding workers do not read.
    fn execute_remote(&self, job: RemoteJob, _admission: Admission) -> Result<(), RemoteRejected> {
        if self.is_shut_down() {
            return Err(RemoteRejected::ShutDown);
        }
        job.sink.complete(Err(TaskError::Codec(
            "this task was encoded for a process pool, which a cluster worker cannot read; submit it \
             with Pool::submit_task, submit_named or map_task"
                .to_owned(),
        )));
        Ok(())
    }
}
