//! The cluster [`Client`]: submits tasks to a queue and collects their results.
//!
//! # Threads
//!
//! A client runs two threads, each with its own connection:
//!
//! - the *sender* takes envelopes from an in-memory outbox and writes everything waiting in one
//!   pipeline (`XADD` per task), so a burst of submissions costs one round trip per burst, not per
//!   task, while a lone submission is written at once;
//! - the *collector* pops results from the client's reply list in batches (`BLMPOP … COUNT`), completes
//!   each task's future once, drops every later result for the same task id (a task that ran twice),
//!   marks a future running when a worker's `started` note for it arrives, resolves futures whose
//!   deadline passed as timed out, and looks for tasks that vanished from the broker (`lost.rs`).
//!
//! Both reconnect with backoff when the broker goes away and carry on where they were: the sender
//! re-sends the batch it could not confirm (a task may then be queued twice; it runs at least once and
//! its caller sees one result). The sender records where each task went (the entry id `XADD`
//! returned), so that the collector can tell a task that vanished (a Redis restart without
//! persistence) and queue it again or fail it ([`OnLost`]).
//!
//! # Cancelling
//!
//! [`Future::cancel`] on a task of this client fires the future's token; the client watches it,
//! resolves the future as [`TaskError::Cancelled`] (at once when it was queued; within moments on
//! the sender's thread when a worker had started it) and has the sender write a *tombstone* for
//! the task id (`{prefix}:cancel:{id}`, with a TTL) after the task's own `XADD`. A worker checks the tombstones of
//! the tasks it fetched before it starts them, and acknowledges a tombstoned task without running
//! it; it also watches the tombstones of the tasks it runs, and stops one whose tombstone appears (its
//! process is killed on a worker's process pool; on a thread its cancel token fires). Whatever
//! result such a task still produces is dropped here.

use super::conn::{self, Broker};
use super::envelope::{ENTRY_FIELD, ResultEnvelope, ResultStatus, TaskEnvelope};
use super::error::ClusterError;
use super::lost::{self, Looks, OnLost, Placed, Probe, Scope};
use super::sink::{self, SharedSink};
use super::{DEFAULT_MAX_PAYLOAD, DEFAULT_PREFIX, DEFAULT_QUEUE, Keys, PROTOCOL_VERSION, unix_ms};
use crate::cancel::CancelToken;
use crate::error::{TaskError, TaskFailure, TaskResult};
use crate::future::{Future, promise};
use crate::options::Priority;
use crate::sync::{Condvar, Mutex};
use redis::Connection;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The most envelopes the sender writes in one pipeline.
const SEND_BATCH: usize = 1024;
/// The most results the collector pops at once.
const COLLECT_BATCH: usize = 1024;
/// The longest the collector blocks on the reply list before it looks at deadlines and at `close`.
const COLLECT_POLL: Duration = Duration::from_millis(250);
/// How long a tombstone stays by default: a task cancelled while queued that is still queued after
/// this long runs after all.
pub(crate) const DEFAULT_CANCEL_TTL: Duration = Duration::from_secs(24 * 3600);

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
    priority: Priority,
    timeout: Option<Duration>,
    delay: Option<Duration>,
    max_attempts: Option<u32>,
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
    /// resolves as [`TaskError::TimedOut`] when it passes without a result. A task already running is
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
}

impl ClientBuilder {
    /// A builder for the broker at `url` (`redis://[user:password@]host[:port][/db]`).
    pub fn new(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            queue: DEFAULT_QUEUE.to_owned(),
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_attempts: super::envelope::DEFAULT_MAX_ATTEMPTS,
            tls_ca: None,
            cancel_ttl: DEFAULT_CANCEL_TTL,
            on_lost: OnLost::default(),
        }
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
    /// future as [`TaskError::Lost`]. The client finds such tasks after a reconnect, when the
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

/// Submits tasks to the workers of one queue and hands back a [`Future`] per task.
///
/// Every method takes `&self`: share one client between threads by reference or in an `Arc`. Dropping
/// the client stops new submissions; tasks already submitted are still sent and their futures still
/// resolve (the client's threads stay until then).
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Connects to the broker at `url` with the default settings.
    pub fn connect(url: &str) -> Result<Client, ClusterError> {
        ClientBuilder::new(url).build()
    }

    /// A builder for other settings.
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url)
    }

    /// Submits the task `task` with serde arguments (encoded as MessagePack) and a serde result.
    pub fn submit<A, R>(&self, task: &str, args: &A) -> Result<Future<R>, ClusterError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        self.submit_with(task, args, &SubmitOptions::default())
    }

    /// [`submit`](Client::submit) with options.
    pub fn submit_with<A, R>(
        &self,
        task: &str,
        args: &A,
        options: &SubmitOptions,
    ) -> Result<Future<R>, ClusterError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let payload = rmp_serde::to_vec_named(args)?;
        let (promise, future) = promise::<R>();
        let id = self
            .inner
            .enqueue(task, payload, options, sink::decode_into(task, promise))?;
        self.inner.watch_cancel(future.token(), vec![id]);
        Ok(future)
    }

    /// Submits an encoded task whose news go to `sink`; returns the task id. The caller arranges
    /// for cancellation with [`cancel_on`](Client::cancel_on).
    pub(crate) fn submit_encoded(
        &self,
        task: &str,
        payload: Vec<u8>,
        options: &SubmitOptions,
        sink: SharedSink,
    ) -> Result<String, ClusterError> {
        self.inner.enqueue(task, payload, options, sink)
    }

    /// Cancels the tasks `ids` (their tombstones written, their futures resolved as cancelled)
    /// when `token` fires: when their future is cancelled, queued or running.
    pub(crate) fn cancel_on(&self, token: &CancelToken, ids: Vec<String>) {
        self.inner.watch_cancel(token, ids);
    }

    /// Cancels every task whose result has not arrived: writes their tombstones and resolves their
    /// futures as cancelled. Returns how many there were.
    pub(crate) fn cancel_pending(&self) -> usize {
        self.inner.cancel_pending()
    }

    /// Blocks until no task of this client waits for its result.
    pub(crate) fn wait_idle(&self) {
        let mut state = self.inner.state.lock();
        while !state.idle() {
            state = self.inner.idle.wait_for(state, COLLECT_POLL).0;
        }
    }

    /// Submits the task `task` with a payload of bytes; the future resolves with the result's bytes.
    pub fn submit_raw(
        &self,
        task: &str,
        payload: impl Into<Vec<u8>>,
    ) -> Result<Future<Vec<u8>>, ClusterError> {
        self.submit_raw_with(task, payload, &SubmitOptions::default())
    }

    /// [`submit_raw`](Client::submit_raw) with options.
    pub fn submit_raw_with(
        &self,
        task: &str,
        payload: impl Into<Vec<u8>>,
        options: &SubmitOptions,
    ) -> Result<Future<Vec<u8>>, ClusterError> {
        let (promise, future) = promise::<Vec<u8>>();
        let id = self
            .inner
            .enqueue(task, payload.into(), options, sink::raw(promise))?;
        self.inner.watch_cancel(future.token(), vec![id]);
        Ok(future)
    }

    /// Blocks until every task submitted so far has been written to the broker (or refused by it).
    /// Submissions are written in the background; this is the barrier for a caller that must know
    /// they are in Redis, such as a program about to exit.
    pub fn flush(&self) {
        let mut outbox = self.inner.outbox.lock();
        while !outbox.items.is_empty() || outbox.in_flight > 0 {
            outbox = self.inner.sent.wait(outbox);
        }
    }

    /// [`flush`](Client::flush), waiting at most `timeout`: returns whether everything submitted
    /// (and every tombstone of a cancelled task) was written by then. A caller about to exit after
    /// cancelling tasks uses it, so that a broker that went away does not hold it up for ever.
    pub fn flush_timeout(&self, timeout: Duration) -> bool {
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            self.flush();
            return true;
        };
        let mut outbox = self.inner.outbox.lock();
        while !outbox.items.is_empty() || outbox.in_flight > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            outbox = self.inner.sent.wait_for(outbox, left).0;
        }
        true
    }

    /// Tasks submitted whose result has not arrived yet.
    pub fn pending(&self) -> usize {
        self.inner.state.lock().pending.len()
    }

    /// Results dropped because their task's future was already resolved: a task that ran more than
    /// once (at-least-once delivery), or a result that came after the task's deadline.
    pub fn dropped_results(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Tasks queued again because they vanished from the broker ([`OnLost::Resubmit`]).
    pub fn resubmitted(&self) -> u64 {
        self.inner.resubmitted.load(Ordering::Relaxed)
    }

    /// The Redis list this client's results arrive on.
    pub fn reply_key(&self) -> &str {
        &self.inner.reply
    }

    /// Whether a worker holds the task of `future` (a future this client's `submit*` returned),
    /// as the broker sees it: `Some(idle)` while the task's entry is delivered to a worker of the
    /// queue and not yet acknowledged, `idle` being the time since its delivery or since the
    /// worker last renewed its lease on it (a worker that was stopped, `SIGSTOP`, renews nothing:
    /// its `idle` grows from when it took the task). `None` when no worker holds it: still waiting
    /// in its stream or the delayed set, finished (its result is on its way, or came), queued
    /// again under a new entry that this client has not seen yet, or not a task of this client.
    ///
    /// A worker's `started` note ([`Future::is_running`]) is the usual news that a task began; a
    /// worker stopped or frozen between taking a task and sending that note sends no news at all,
    /// and this asks the broker instead. It costs a look through the tasks this client waits for
    /// and a connection of its own to the broker (with the `XPENDING` command): it is meant for an
    /// occasional check, not a loop.
    pub fn held_for<T>(&self, future: &Future<T>) -> Result<Option<Duration>, ClusterError> {
        let wanted = future.id();
        let placed = {
            let state = self.inner.state.lock();
            state
                .pending
                .values()
                .find(|p| p.sink.future() == Some(wanted))
                .map(|p| p.placed.clone())
        };
        let Some(Placed::Stream { index, entry }) = placed else {
            return Ok(None);
        };
        let mut conn = self.inner.broker.connect()?;
        // XPENDING key group start end count: [[entry id, consumer, idle ms, deliveries]].
        let value: redis::Value = match redis::cmd("XPENDING")
            .arg(&self.inner.keys.streams[index])
            .arg(super::GROUP)
            .arg(&entry)
            .arg(&entry)
            .arg(1)
            .query(&mut conn)
        {
            Ok(value) => value,
            // No group yet: no worker ever read the queue.
            Err(source) if conn::is_nogroup(&source) => return Ok(None),
            Err(source) => {
                return Err(ClusterError::Broker {
                    action: "tell whether a worker holds a task (XPENDING)",
                    source,
                });
            }
        };
        let idle = conn::array(&value).first().and_then(|held| {
            let fields = conn::array(held);
            let id = fields.first().and_then(conn::string)?;
            let idle = fields.get(2).and_then(conn::int)?;
            (id == entry).then(|| Duration::from_millis(u64::try_from(idle).unwrap_or(0)))
        });
        Ok(idle)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.inner.close();
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("broker", &self.inner.broker.shown())
            .field("queue", &self.inner.keys.streams[1])
            .field("reply", &self.inner.reply)
            .field("pending", &self.pending())
            .finish()
    }
}

struct Pending {
    sink: SharedSink,
    timeout: Option<Duration>,
    /// Where the task was put, once the broker confirmed it.
    placed: Placed,
    /// The envelope as written, kept to queue the task again should it vanish
    /// ([`OnLost::Resubmit`]); where it went, for the same.
    resubmit: Option<(Arc<Vec<u8>>, Target)>,
    /// The attempt number of the latest start a worker reported (0: none reported).
    started: u32,
    /// When the task was submitted (or queued again).
    submitted: Instant,
    /// When a look for lost tasks first found it nowhere (see `lost.rs`).
    missing_since: Option<Instant>,
}

#[derive(Default)]
struct State {
    pending: HashMap<String, Pending>,
    /// Tasks taken out of `pending` whose sinks have not returned yet: the client is idle only
    /// when both are zero, so `wait_idle` never returns before a future is resolved.
    completing: usize,
    /// Cancelled tasks whose tombstones are not written yet (their futures are resolved): the
    /// client is not idle until they are.
    cancelling: HashSet<String>,
    /// Deadlines of pending tasks, earliest first.
    deadlines: BinaryHeap<Reverse<(Instant, String)>>,
}

impl State {
    fn idle(&self) -> bool {
        self.pending.is_empty() && self.completing == 0 && self.cancelling.is_empty()
    }
}

/// Where an envelope goes.
#[derive(Debug, Clone, Copy)]
enum Target {
    Stream(usize),
    /// The delayed set, with the due time in Unix milliseconds.
    Delayed(u64, usize),
    /// No envelope: the tombstone of the cancelled task `id`.
    Tombstone,
}

struct Outgoing {
    id: String,
    target: Target,
    bytes: Arc<Vec<u8>>,
}

#[derive(Default)]
struct Outbox {
    items: Vec<Outgoing>,
    /// Envelopes taken by the sender and not yet confirmed by the broker.
    in_flight: usize,
    closed: bool,
}

/// Fires when a task's future is cancelled (its token), queued or running: has the sender resolve
/// the futures of `ids` as cancelled and write their tombstones. Registered as the waker of the
/// token's `cancelled()` future, so that it costs nothing until the token fires.
struct OnCancel {
    inner: std::sync::Weak<Inner>,
    ids: Mutex<Option<Vec<String>>>,
}

impl std::task::Wake for OnCancel {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let ids = self.ids.lock().take();
        if let (Some(ids), Some(inner)) = (ids, self.inner.upgrade()) {
            // This may run under the future's lock (`Future::cancel` fires the token of a queued
            // task with it held): the sender resolves the futures, on its own thread.
            inner.queue_tombstones(ids);
        }
    }
}

/// The client's shared state. Lock order: `outbox` before `state`; no other lock is held with them
/// (a task's sink is called with neither held).
struct Inner {
    broker: Broker,
    keys: Keys,
    reply: String,
    max_payload: usize,
    max_attempts: u32,
    cancel_ttl_ms: u64,
    on_lost: OnLost,
    state: Mutex<State>,
    /// Signalled (with `state`) when the last pending task resolves.
    idle: Condvar,
    outbox: Mutex<Outbox>,
    outbox_ready: Condvar,
    /// Signalled when the sender has written a batch.
    sent: Condvar,
    /// Set once the client is closed and nothing is pending: the collector exits.
    collector_stop: AtomicBool,
    /// Never set: the sender retries until the broker is back.
    never: AtomicBool,
    /// Set by the sender when it reconnected: the collector looks for lost tasks.
    sender_reconnected: AtomicBool,
    dropped: AtomicU64,
    resubmitted: AtomicU64,
}

impl Inner {
    fn enqueue(
        &self,
        task: &str,
        payload: Vec<u8>,
        options: &SubmitOptions,
        sink: SharedSink,
    ) -> Result<String, ClusterError> {
        crate::chaos::point();
        let max_attempts = options.max_attempts.unwrap_or(self.max_attempts);
        if max_attempts == 0 {
            return Err(ClusterError::InvalidOption(
                "max_attempts must be at least 1".to_owned(),
            ));
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let now = Instant::now();
        let deadline = options.timeout.and_then(|t| now.checked_add(t));
        let envelope = TaskEnvelope {
            v: PROTOCOL_VERSION,
            id: id.clone(),
            task: task.to_owned(),
            payload,
            reply: Some(self.reply.clone()),
            deadline: options.timeout.map(|t| {
                unix_ms().saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
            }),
            max_attempts,
            attempts: 0,
            started: true,
        };
        let bytes = Arc::new(envelope.encode()?);
        if bytes.len() > self.max_payload {
            return Err(ClusterError::PayloadTooLarge {
                size: bytes.len(),
                limit: self.max_payload,
            });
        }
        let stream = Keys::stream_index(options.priority);
        let target = match options.delay {
            Some(delay) if !delay.is_zero() => Target::Delayed(
                unix_ms().saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
                stream,
            ),
            _ => Target::Stream(stream),
        };
        let resubmit = (self.on_lost == OnLost::Resubmit).then(|| (bytes.clone(), target));
        // Registered before it is sent, so that the fastest result finds its future.
        {
            let mut outbox = self.outbox.lock();
            if outbox.closed {
                return Err(ClusterError::Closed);
            }
            let mut state = self.state.lock();
            state.pending.insert(
                id.clone(),
                Pending {
                    sink,
                    timeout: options.timeout,
                    placed: Placed::Unsent,
                    resubmit,
                    started: 0,
                    submitted: now,
                    missing_since: None,
                },
            );
            if let Some(deadline) = deadline {
                state.deadlines.push(Reverse((deadline, id.clone())));
            }
            drop(state);
            outbox.items.push(Outgoing {
                id: id.clone(),
                target,
                bytes,
            });
            if outbox.items.len() == 1 {
                self.outbox_ready.notify_one();
            }
        }
        Ok(id)
    }

    /// Cancels the tasks `ids` when `token` fires (see [`OnCancel`]).
    fn watch_cancel(self: &Arc<Self>, token: &CancelToken, ids: Vec<String>) {
        let on_cancel = Arc::new(OnCancel {
            inner: Arc::downgrade(self),
            ids: Mutex::new(Some(ids)),
        });
        let waker = std::task::Waker::from(on_cancel);
        let mut cx = std::task::Context::from_waker(&waker);
        let cancelled = std::pin::pin!(token.cancelled());
        if std::future::Future::poll(cancelled, &mut cx).is_ready() {
            waker.wake_by_ref();
        }
    }

    fn queue_tombstones(&self, ids: Vec<String>) {
        let mut outbox = self.outbox.lock();
        let was_empty = outbox.items.is_empty();
        outbox.items.extend(ids.into_iter().map(|id| Outgoing {
            id,
            target: Target::Tombstone,
            bytes: Arc::default(),
        }));
        if was_empty {
            self.outbox_ready.notify_one();
        }
    }

    /// Resolves the futures of the cancelled tasks `ids` still pending as cancelled; they stay
    /// counted (`cancelling`) until [`forget`](Inner::forget) says their tombstones are written.
    fn resolve_cancelled(&self, ids: &[&str]) {
        let taken: Vec<SharedSink> = {
            let mut state = self.state.lock();
            let mut taken = Vec::new();
            for id in ids {
                if let Some(pending) = state.pending.remove(*id) {
                    taken.push(pending.sink);
                }
                state.cancelling.insert((*id).to_owned());
            }
            state.completing += taken.len();
            taken
        };
        let n = taken.len();
        for sink in taken {
            sink.complete(Err(TaskError::Cancelled));
        }
        self.completed(n);
    }

    fn cancel_pending(&self) -> usize {
        let ids: Vec<String> = {
            let mut state = self.state.lock();
            state.deadlines.clear();
            state.pending.keys().cloned().collect()
        };
        let n = ids.len();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.resolve_cancelled(&refs);
        self.queue_tombstones(ids);
        n
    }

    /// Forgets cancelled tasks whose tombstones are written.
    fn forget(&self, ids: &[&str]) {
        let mut state = self.state.lock();
        for id in ids {
            state.cancelling.remove(*id);
        }
        if state.idle() {
            self.idle.notify_all();
        }
    }

    fn close(&self) {
        let mut outbox = self.outbox.lock();
        outbox.closed = true;
        self.outbox_ready.notify_one();
    }

    /// Writes queued envelopes until the client is closed and the outbox is empty.
    fn send_loop(self: Arc<Self>, mut conn: Connection) {
        loop {
            let batch: Vec<Outgoing> = {
                let mut outbox = self.outbox.lock();
                while outbox.items.is_empty() && !outbox.closed {
                    outbox = self.outbox_ready.wait(outbox);
                }
                if outbox.items.is_empty() {
                    break;
                }
                let n = outbox.items.len().min(SEND_BATCH);
                outbox.in_flight = n;
                if n == outbox.items.len() {
                    std::mem::take(&mut outbox.items)
                } else {
                    outbox.items.drain(..n).collect()
                }
            };
            let tombstones: Vec<&str> = batch
                .iter()
                .filter(|item| matches!(item.target, Target::Tombstone))
                .map(|item| item.id.as_str())
                .collect();
            if !tombstones.is_empty() {
                self.resolve_cancelled(&tombstones);
            }
            let pipe = self.writes(&batch, !tombstones.is_empty());
            let replies = loop {
                match pipe.query::<Vec<redis::Value>>(&mut conn) {
                    Ok(replies) => break Some(replies),
                    Err(error) if conn::is_connection_error(&error) => {
                        match self.broker.reconnect(&self.never, "client") {
                            Some(fresh) => {
                                conn = fresh;
                                self.sender_reconnected.store(true, Ordering::Release);
                            }
                            None => return,
                        }
                    }
                    Err(error) => {
                        let reason = format!("the broker refused the task: {error}");
                        self.fail(batch.iter().map(|item| item.id.as_str()), &reason);
                        break None;
                    }
                }
            };
            if let Some(replies) = replies {
                self.placed(&batch, &replies);
            }
            if !tombstones.is_empty() {
                self.forget(&tombstones);
            }
            self.outbox.lock().in_flight = 0;
            self.sent.notify_all();
        }
        self.collector_stop_if_idle();
    }

    /// The pipeline that writes a batch: `XADD` (its reply, the entry id, is kept), `ZADD`, or the
    /// `SET` of a tombstone per item, then the queue's `cancels` flag when there were tombstones.
    fn writes(&self, batch: &[Outgoing], tombstones: bool) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        for item in batch {
            match item.target {
                Target::Tombstone => {
                    pipe.cmd("SET")
                        .arg(self.keys.tombstone(&item.id))
                        .arg(1)
                        .arg("PX")
                        .arg(self.cancel_ttl_ms)
                        .ignore();
                }
                Target::Stream(index) => {
                    pipe.cmd("XADD")
                        .arg(&self.keys.streams[index])
                        .arg("*")
                        .arg(ENTRY_FIELD)
                        .arg(item.bytes.as_slice());
                }
                Target::Delayed(due, index) => {
                    let mut member = Vec::with_capacity(item.bytes.len() + 1);
                    member.push(b'0' + index as u8);
                    member.extend_from_slice(&item.bytes);
                    pipe.cmd("ZADD")
                        .arg(&self.keys.delayed)
                        .arg(due)
                        .arg(member)
                        .ignore();
                }
            }
        }
        if tombstones {
            // Tells workers that tombstones exist, so they look for them (see the worker's fetch).
            pipe.cmd("SET")
                .arg(self.keys.cancels())
                .arg(1)
                .arg("PX")
                .arg(self.cancel_ttl_ms)
                .ignore();
        }
        pipe
    }

    /// Records where the broker put each task of a written batch (`replies`: one entry id per
    /// `XADD`, in order).
    fn placed(&self, batch: &[Outgoing], replies: &[redis::Value]) {
        let mut entries = replies.iter();
        let mut state = self.state.lock();
        for item in batch {
            let placed = match item.target {
                Target::Tombstone => continue,
                Target::Stream(index) => match entries.next().and_then(conn::string) {
                    Some(entry) => Placed::Stream { index, entry },
                    None => continue,
                },
                Target::Delayed(due_ms, _) => Placed::Delayed { due_ms },
            };
            if let Some(pending) = state.pending.get_mut(&item.id) {
                pending.placed = placed;
            }
        }
    }

    /// Resolves tasks that could not be queued.
    fn fail<'a>(&self, ids: impl Iterator<Item = &'a str>, reason: &str) {
        let mut done = Vec::new();
        {
            let mut state = self.state.lock();
            for id in ids {
                if let Some(pending) = state.pending.remove(id) {
                    done.push(pending);
                }
            }
            state.completing += done.len();
        }
        let n = done.len();
        for pending in done {
            pending.sink.complete(Err(TaskError::Lost {
                attempts: 0,
                reason: reason.to_owned(),
            }));
        }
        self.completed(n);
    }

    /// Counts `n` sinks as returned, and wakes `wait_idle` when nothing is left.
    fn completed(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut state = self.state.lock();
        state.completing -= n;
        if state.idle() {
            self.idle.notify_all();
        }
    }

    fn collector_stop_if_idle(&self) {
        if self.outbox.lock().closed && self.state.lock().pending.is_empty() {
            self.collector_stop.store(true, Ordering::Release);
        }
    }

    /// Pops results until the client is closed and nothing is pending.
    fn collect_loop(self: Arc<Self>, mut conn: Connection) {
        let mut looks = Looks::new(Instant::now());
        loop {
            let wait = {
                // Lock order: outbox before state (as in `enqueue`). Once closed, nothing new becomes
                // pending, so an empty map seen after this read means the collector is done.
                let closed = self.outbox.lock().closed;
                let state = self.state.lock();
                if closed && state.pending.is_empty() {
                    return;
                }
                match state.deadlines.peek() {
                    Some(Reverse((at, _))) => at
                        .saturating_duration_since(Instant::now())
                        .min(COLLECT_POLL),
                    None => COLLECT_POLL,
                }
            };
            let done = match self.pop(&mut conn, wait) {
                Ok(_) => self
                    .look_for_lost(&mut conn, &mut looks)
                    .map_err(|e| (e, "looking for tasks that vanished from the broker")),
                Err(error) => Err((error, "reading results")),
            };
            match done {
                Ok(()) => {}
                Err((error, _)) if conn::is_connection_error(&error) => {
                    match self.broker.reconnect(&self.collector_stop, "client") {
                        Some(fresh) => {
                            conn = fresh;
                            looks.reconnected();
                        }
                        None => return,
                    }
                }
                Err((error, what)) => {
                    eprintln!(
                        "martelli cluster client ({}): {what} failed: {error}",
                        self.reply
                    );
                    std::thread::sleep(COLLECT_POLL);
                }
            }
            self.expire_deadlines();
        }
    }

    /// Pops and delivers one batch of results, waiting at most `wait` for one; returns how many
    /// items it popped.
    fn pop(&self, conn: &mut Connection, wait: Duration) -> redis::RedisResult<usize> {
        // BLMPOP's timeout is in seconds; 0 would block for ever.
        let seconds = wait.as_secs_f64().max(0.001);
        let value: redis::Value = redis::cmd("BLMPOP")
            .arg(seconds)
            .arg(1)
            .arg(&self.reply)
            .arg("RIGHT")
            .arg("COUNT")
            .arg(COLLECT_BATCH)
            .query(conn)?;
        Ok(self.deliver(&value))
    }

    /// Completes the futures of the results in a `BLMPOP` reply: `[key, [result, …]]` or nil, and
    /// marks running those whose `started` note it holds. Returns how many items it held.
    fn deliver(&self, value: &redis::Value) -> usize {
        crate::chaos::point();
        let parts = conn::array(value);
        let Some(results) = parts.get(1) else {
            return 0;
        };
        let results = conn::array(results);
        let mut done = Vec::new();
        let mut started = Vec::new();
        {
            let mut state = self.state.lock();
            for raw in results {
                let Some(bytes) = conn::bytes(raw) else {
                    continue;
                };
                let result = match ResultEnvelope::decode(bytes) {
                    Ok(result) => result,
                    Err(error) => {
                        eprintln!(
                            "martelli cluster client: dropped a malformed result on {}: {error}",
                            self.reply
                        );
                        continue;
                    }
                };
                if result.status == ResultStatus::Started {
                    if let Some(pending) = state.pending.get_mut(&result.id) {
                        pending.started = pending.started.max(result.attempts);
                        started.push(pending.sink.clone());
                    }
                    continue;
                }
                match state.pending.remove(&result.id) {
                    Some(pending) => done.push((pending, result)),
                    None => {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            state.completing += done.len();
        }
        for sink in started {
            sink.start();
        }
        let n = done.len();
        for (pending, result) in done {
            let outcome = outcome(result, pending.timeout);
            pending.sink.complete(outcome);
        }
        self.completed(n);
        results.len()
    }

    /// Resolves tasks whose deadline passed as timed out.
    fn expire_deadlines(&self) {
        let now = Instant::now();
        let mut done = Vec::new();
        {
            let mut state = self.state.lock();
            while let Some(Reverse((at, _))) = state.deadlines.peek() {
                if *at > now {
                    break;
                }
                let Some(Reverse((_, id))) = state.deadlines.pop() else {
                    break;
                };
                if let Some(pending) = state.pending.remove(&id) {
                    done.push(pending);
                }
            }
            state.completing += done.len();
        }
        let n = done.len();
        for pending in done {
            let after = pending.timeout.unwrap_or_default();
            pending.sink.complete(Err(TaskError::TimedOut { after }));
        }
        self.completed(n);
    }

    /// Looks for tasks that vanished from the broker when a look is due, and queues them again or
    /// fails them (see `lost.rs` for the rule).
    fn look_for_lost(&self, conn: &mut Connection, looks: &mut Looks) -> redis::RedisResult<()> {
        if self.sender_reconnected.swap(false, Ordering::AcqRel) {
            looks.reconnected();
        }
        let now = Instant::now();
        let waiting = !self.state.lock().pending.is_empty();
        let Some(scope) = looks.due(conn, now, waiting)? else {
            return Ok(());
        };
        let probes: Vec<Probe> = {
            let state = self.state.lock();
            state
                .pending
                .iter()
                .filter(|(_, p)| match scope {
                    Scope::All => true,
                    Scope::Older(age) => {
                        p.missing_since.is_some() || now.duration_since(p.submitted) >= age
                    }
                })
                .filter(|(_, p)| !matches!(p.placed, Placed::Unsent))
                .map(|(id, p)| Probe {
                    id: id.clone(),
                    placed: p.placed.clone(),
                })
                .collect()
        };
        let absent = looks.absent(conn, &self.keys, &probes)?;
        let mut absent_ids: HashSet<String> =
            absent.into_iter().map(|at| probes[at].id.clone()).collect();
        {
            let mut state = self.state.lock();
            for probe in probes.iter().filter(|p| !absent_ids.contains(&p.id)) {
                if let Some(pending) = state.pending.get_mut(&probe.id) {
                    pending.missing_since = None;
                }
            }
        }
        if absent_ids.is_empty() {
            return Ok(());
        }
        // A worker stores a result before it deletes the task's entry: what the reply list holds
        // now settles the tasks whose entries are gone because they are done.
        while self.pop(conn, Duration::ZERO)? == COLLECT_BATCH {}
        {
            let state = self.state.lock();
            absent_ids.retain(|id| state.pending.contains_key(id));
        }
        let found = lost::search(conn, &self.keys, &absent_ids)?;
        let mut vanished = Vec::new();
        {
            let mut state = self.state.lock();
            for id in &absent_ids {
                let Some(pending) = state.pending.get_mut(id) else {
                    continue;
                };
                if let Some((index, entry)) = found.moved.get(id) {
                    pending.placed = Placed::Stream {
                        index: *index,
                        entry: entry.clone(),
                    };
                    pending.missing_since = None;
                } else if found.held.contains(id) {
                    pending.missing_since = None;
                } else {
                    match pending.missing_since {
                        Some(since) if now.duration_since(since) >= lost::CONFIRM => {
                            vanished.push(id.clone());
                        }
                        Some(_) => {}
                        None => pending.missing_since = Some(now),
                    }
                }
            }
            if state.pending.values().any(|p| p.missing_since.is_some()) {
                looks.confirm_later(now);
            }
        }
        self.vanished(&vanished);
        Ok(())
    }

    /// Queues again, or fails, the tasks `ids` found nowhere at two looks.
    fn vanished(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let mut again = Vec::new();
        let mut lost = Vec::new();
        {
            let mut state = self.state.lock();
            for id in ids {
                let Some(pending) = state.pending.get_mut(id) else {
                    continue;
                };
                match again_envelope(pending) {
                    Ok(item) => {
                        pending.placed = Placed::Unsent;
                        pending.missing_since = None;
                        pending.submitted = Instant::now();
                        again.push(Outgoing {
                            id: id.clone(),
                            target: item.1,
                            bytes: item.0,
                        });
                    }
                    Err(reason) => {
                        if let Some(pending) = state.pending.remove(id) {
                            lost.push((pending, reason));
                        }
                    }
                }
            }
            state.completing += lost.len();
        }
        eprintln!(
            "martelli cluster client: {} task(s) vanished from the broker at {} (a restart without \
             persistence, or deleted keys?): {} queued again, {} failed as lost",
            ids.len(),
            self.broker.shown(),
            again.len(),
            lost.len()
        );
        self.resubmitted
            .fetch_add(again.len() as u64, Ordering::Relaxed);
        if !again.is_empty() {
            let mut outbox = self.outbox.lock();
            let was_empty = outbox.items.is_empty();
            outbox.items.extend(again);
            if was_empty {
                self.outbox_ready.notify_one();
            }
        }
        let n = lost.len();
        for (pending, reason) in lost {
            pending.sink.complete(Err(TaskError::Lost {
                attempts: pending.started,
                reason,
            }));
        }
        self.completed(n);
    }
}

/// The envelope and target that queue a vanished task again, with the attempts it has used; or
/// why it is lost instead.
fn again_envelope(pending: &Pending) -> Result<(Arc<Vec<u8>>, Target), String> {
    const VANISHED: &str = "the task vanished from the broker: it is in no stream, not held by a \
                            live worker, not delayed, and has no result (the broker restarted \
                            without persistence, or its keys were deleted or evicted)";
    let Some((bytes, target)) = &pending.resubmit else {
        return Err(VANISHED.to_owned());
    };
    let mut envelope = TaskEnvelope::decode(bytes).map_err(|e| format!("{VANISHED}; {e}"))?;
    envelope.attempts = envelope.attempts.max(pending.started);
    if envelope.attempts >= envelope.max_attempts {
        return Err(format!(
            "{VANISHED}, after its last attempt ({} of max_attempts = {})",
            envelope.attempts, envelope.max_attempts
        ));
    }
    let bytes = envelope
        .encode()
        .map_err(|e| format!("{VANISHED}; it could not be encoded again: {e}"))?;
    let target = match *target {
        Target::Delayed(due, index) if due <= unix_ms() => Target::Stream(index),
        other => other,
    };
    Ok((Arc::new(bytes), target))
}

/// A result on the wire as the caller's outcome.
fn outcome(result: ResultEnvelope, timeout: Option<Duration>) -> TaskResult<Vec<u8>> {
    let message = || result.error.clone().unwrap_or_default();
    match result.status {
        ResultStatus::Ok => Ok(result.payload.unwrap_or_default()),
        ResultStatus::Failed => Err(TaskError::Failed(TaskFailure::from_message(message()))),
        ResultStatus::Panicked => Err(TaskError::Panicked { message: message() }),
        ResultStatus::TimedOut => Err(TaskError::TimedOut {
            after: timeout.unwrap_or_default(),
        }),
        ResultStatus::Lost => Err(TaskError::Lost {
            attempts: result.attempts,
            reason: message(),
        }),
        ResultStatus::Cancelled => Err(TaskError::Cancelled),
        // Notes never get here (`deliver` takes them); a reader treats an unexpected one as an
        // unknown status.
        ResultStatus::Unknown | ResultStatus::Started => {
            Err(TaskError::Failed(TaskFailure::from_message(format!(
                "the worker reported a status this client does not know: {}",
                message()
            ))))
        }
        ResultStatus::WorkerDied => Err(TaskError::WorkerDied(crate::error::WorkerDeath {
            exit_code: result.exit_code,
            signal: result.signal,
            stderr_tail: message(),
        })),
    }
}
