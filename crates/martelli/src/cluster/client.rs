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
//!   and resolves futures whose deadline passed as timed out.
//!
//! Both reconnect with backoff when the broker goes away and carry on where they were: the sender
//! re-sends the batch it could not confirm (a task may then be queued twice; it runs at least once and
//! its caller sees one result).
//!
//! # Cancelling
//!
//! [`Future::cancel`] on a task of this client resolves the future as
//! [`TaskError::Cancelled`] at once and has the sender write a *tombstone* for the task id
//! (`{prefix}:cancel:{id}`, with a TTL) after the task's own `XADD`. A worker checks the tombstones of
//! the tasks it fetched before it starts them, and acknowledges a tombstoned task without running
//! it; it also watches the tombstones of the tasks it runs, and stops one whose tombstone appears (its
//! process is killed on a worker's process pool; on a thread its cancel token fires). Whatever
//! result such a task still produces is dropped here.

use super::conn::{self, Broker};
use super::envelope::{ENTRY_FIELD, ResultEnvelope, ResultStatus, TaskEnvelope};
use super::error::ClusterError;
use super::{DEFAULT_MAX_PAYLOAD, DEFAULT_PREFIX, DEFAULT_QUEUE, Keys, PROTOCOL_VERSION, unix_ms};
use crate::error::{TaskError, TaskFailure, TaskResult};
use crate::future::{Future, Promise, promise};
use crate::pool::Priority;
use crate::sync::{Condvar, Mutex};
use redis::Connection;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
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
            state: Mutex::new(State::default()),
            idle: Condvar::new(),
            outbox: Mutex::new(Outbox::default()),
            outbox_ready: Condvar::new(),
            sent: Condvar::new(),
            collector_stop: AtomicBool::new(false),
            never: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
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
            .enqueue(task, payload, options, decode_into(task, promise))?;
        self.inner.watch_cancel(&future, vec![id]);
        Ok(future)
    }

    /// Submits an encoded task whose outcome goes to `complete`; returns the task id. The caller
    /// arranges for cancellation with [`cancel_on`](Client::cancel_on).
    pub(crate) fn submit_encoded(
        &self,
        task: &str,
        payload: Vec<u8>,
        options: &SubmitOptions,
        complete: Box<dyn FnOnce(TaskResult<Vec<u8>>) + Send>,
    ) -> Result<String, ClusterError> {
        self.inner.enqueue(task, payload, options, complete)
    }

    /// Writes tombstones for the tasks `ids` when `future` resolves as cancelled.
    pub(crate) fn cancel_on<T>(&self, future: &Future<T>, ids: Vec<String>) {
        self.inner.watch_cancel(future, ids);
    }

    /// Cancels every task whose result has not arrived: writes their tombstones and resolves their
    /// futures as cancelled. Returns how many there were.
    pub(crate) fn cancel_pending(&self) -> usize {
        self.inner.cancel_pending()
    }

    /// Blocks until no task of this client waits for its result.
    pub(crate) fn wait_idle(&self) {
        let mut state = self.inner.state.lock();
        while !state.pending.is_empty() || state.completing > 0 {
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
        let id = self.inner.enqueue(
            task,
            payload.into(),
            options,
            Box::new(move |result| {
                promise.complete(result);
            }),
        )?;
        self.inner.watch_cancel(&future, vec![id]);
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

    /// The Redis list this client's results arrive on.
    pub fn reply_key(&self) -> &str {
        &self.inner.reply
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

pub(crate) type Completer = Box<dyn FnOnce(TaskResult<Vec<u8>>) + Send>;

struct Pending {
    complete: Completer,
    timeout: Option<Duration>,
}

#[derive(Default)]
struct State {
    pending: HashMap<String, Pending>,
    /// Tasks taken out of `pending` whose completers have not returned yet: the client is idle only
    /// when both are zero, so `wait_idle` never returns before a future is resolved.
    completing: usize,
    /// Deadlines of pending tasks, earliest first.
    deadlines: BinaryHeap<Reverse<(Instant, String)>>,
}

/// Where an envelope goes.
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
    bytes: Vec<u8>,
}

#[derive(Default)]
struct Outbox {
    items: Vec<Outgoing>,
    /// Envelopes taken by the sender and not yet confirmed by the broker.
    in_flight: usize,
    closed: bool,
}

/// The client's shared state. Lock order: `outbox` before `state`; no other lock is held with them.
struct Inner {
    broker: Broker,
    keys: Keys,
    reply: String,
    max_payload: usize,
    max_attempts: u32,
    cancel_ttl_ms: u64,
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
    dropped: AtomicU64,
}

impl Inner {
    fn enqueue(
        &self,
        task: &str,
        payload: Vec<u8>,
        options: &SubmitOptions,
        complete: Completer,
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
        };
        let bytes = envelope.encode()?;
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
                    complete,
                    timeout: options.timeout,
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

    /// Queues tombstones for `ids` when `future` resolves as cancelled.
    fn watch_cancel<T>(self: &Arc<Self>, future: &Future<T>, ids: Vec<String>) {
        let inner = Arc::downgrade(self);
        future.on_done(move |result| {
            if matches!(result, Err(TaskError::Cancelled)) {
                if let Some(inner) = inner.upgrade() {
                    // This runs under the future's lock: the pending entries (which hold its promise)
                    // are removed by the sender, on its own thread, once the tombstones are written.
                    inner.queue_tombstones(ids);
                }
            }
        });
    }

    fn queue_tombstones(&self, ids: Vec<String>) {
        let mut outbox = self.outbox.lock();
        let was_empty = outbox.items.is_empty();
        outbox.items.extend(ids.into_iter().map(|id| Outgoing {
            id,
            target: Target::Tombstone,
            bytes: Vec::new(),
        }));
        if was_empty {
            self.outbox_ready.notify_one();
        }
    }

    fn cancel_pending(&self) -> usize {
        let taken: Vec<(String, Pending)> = {
            let mut state = self.state.lock();
            state.deadlines.clear();
            let taken: Vec<(String, Pending)> = state.pending.drain().collect();
            state.completing += taken.len();
            taken
        };
        let n = taken.len();
        self.queue_tombstones(taken.iter().map(|(id, _)| id.clone()).collect());
        for (_, pending) in taken {
            (pending.complete)(Err(TaskError::Cancelled));
        }
        self.completed(n);
        n
    }

    /// Forgets tasks whose tombstone is written: their futures are resolved already.
    fn forget(&self, ids: &[&str]) {
        let forgotten: Vec<Pending> = {
            let mut state = self.state.lock();
            let gone: Vec<Pending> = ids
                .iter()
                .filter_map(|id| state.pending.remove(*id))
                .collect();
            state.completing += gone.len();
            gone
        };
        let n = forgotten.len();
        // Dropped here, with no lock held: a dropped completer drops its promise, which locks its
        // (already resolved) future.
        drop(forgotten);
        self.completed(n);
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
            let mut pipe = redis::pipe();
            let mut tombstones = Vec::new();
            for item in &batch {
                match item.target {
                    Target::Tombstone => {
                        pipe.cmd("SET")
                            .arg(self.keys.tombstone(&item.id))
                            .arg(1)
                            .arg("PX")
                            .arg(self.cancel_ttl_ms)
                            .ignore();
                        tombstones.push(item.id.as_str());
                    }
                    Target::Stream(index) => {
                        pipe.cmd("XADD")
                            .arg(&self.keys.streams[index])
                            .arg("*")
                            .arg(ENTRY_FIELD)
                            .arg(&item.bytes)
                            .ignore();
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
            if !tombstones.is_empty() {
                // Tells workers that tombstones exist, so they look for them (see the worker's fetch).
                pipe.cmd("SET")
                    .arg(self.keys.cancels())
                    .arg(1)
                    .arg("PX")
                    .arg(self.cancel_ttl_ms)
                    .ignore();
            }
            loop {
                match pipe.exec(&mut conn) {
                    Ok(()) => break,
                    Err(error) if conn::is_connection_error(&error) => {
                        match self.broker.reconnect(&self.never, "client") {
                            Some(fresh) => conn = fresh,
                            None => return,
                        }
                    }
                    Err(error) => {
                        let reason = format!("the broker refused the task: {error}");
                        self.fail(batch.iter().map(|item| item.id.as_str()), &reason);
                        break;
                    }
                }
            }
            if !tombstones.is_empty() {
                self.forget(&tombstones);
            }
            self.outbox.lock().in_flight = 0;
            self.sent.notify_all();
        }
        self.collector_stop_if_idle();
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
            (pending.complete)(Err(TaskError::Lost {
                attempts: 0,
                reason: reason.to_owned(),
            }));
        }
        self.completed(n);
    }

    /// Counts `n` completers as returned, and wakes `wait_idle` when nothing is left.
    fn completed(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut state = self.state.lock();
        state.completing -= n;
        if state.pending.is_empty() && state.completing == 0 {
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
            // BLMPOP's timeout is in seconds; 0 would block for ever.
            let seconds = wait.as_secs_f64().max(0.001);
            let reply: redis::RedisResult<redis::Value> = redis::cmd("BLMPOP")
                .arg(seconds)
                .arg(1)
                .arg(&self.reply)
                .arg("RIGHT")
                .arg("COUNT")
                .arg(COLLECT_BATCH)
                .query(&mut conn);
            match reply {
                Ok(value) => self.deliver(&value),
                Err(error) if conn::is_connection_error(&error) => {
                    match self.broker.reconnect(&self.collector_stop, "client") {
                        Some(fresh) => conn = fresh,
                        None => return,
                    }
                }
                Err(error) => {
                    eprintln!(
                        "martelli cluster client: reading results from {} failed: {error}",
                        self.reply
                    );
                    std::thread::sleep(COLLECT_POLL);
                }
            }
            self.expire_deadlines();
        }
    }

    /// Completes the futures of the results in a `BLMPOP` reply: `[key, [result, …]]` or nil.
    fn deliver(&self, value: &redis::Value) {
        crate::chaos::point();
        let parts = conn::array(value);
        let Some(results) = parts.get(1) else {
            return;
        };
        let mut done = Vec::new();
        {
            let mut state = self.state.lock();
            for raw in conn::array(results) {
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
                match state.pending.remove(&result.id) {
                    Some(pending) => done.push((pending, result)),
                    None => {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            state.completing += done.len();
        }
        let n = done.len();
        for (pending, result) in done {
            let outcome = outcome(result, pending.timeout);
            (pending.complete)(outcome);
        }
        self.completed(n);
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
            (pending.complete)(Err(TaskError::TimedOut { after }));
        }
        self.completed(n);
    }
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
        ResultStatus::Unknown => Err(TaskError::Failed(TaskFailure::from_message(format!(
            "the worker reported a status this client does not know: {}",
            message()
        )))),
        ResultStatus::WorkerDied => Err(TaskError::WorkerDied(crate::error::WorkerDeath {
            exit_code: result.exit_code,
            signal: result.signal,
            stderr_tail: message(),
        })),
    }
}

/// The completer of task `name` whose future wants a value of type `R`: it decodes the MessagePack
/// result and resolves `promise` with it.
pub(crate) fn decode_into<R: DeserializeOwned + Send + 'static>(
    name: &str,
    promise: Promise<R>,
) -> Completer {
    let name = name.to_owned();
    Box::new(move |result: TaskResult<Vec<u8>>| {
        promise.complete(result.and_then(|bytes| decode_result(&name, &bytes)));
    })
}

/// Decodes a typed task's MessagePack result.
pub(crate) fn decode_result<R: DeserializeOwned>(name: &str, bytes: &[u8]) -> TaskResult<R> {
    rmp_serde::from_slice::<R>(bytes).map_err(|e| {
        TaskError::Failed(TaskFailure::from_message(format!(
            "could not decode the result of task {name:?}: {e} (the client and the worker disagree \
             on its result type)"
        )))
    })
}
