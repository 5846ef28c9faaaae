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
//!
//! # Files
//!
//! - `options.rs`: [`ClientBuilder`] and [`SubmitOptions`].
//! - `submitter.rs`: [`Submitter`], the verbs with options for one call ([`Client::with`]).
//! - `send.rs`: submitting (the outbox) and the sender thread.
//! - `collect.rs`: the collector thread.
//! - `cancel.rs`: cancelling submitted tasks (tombstones).
//! - `vanish.rs`: finding tasks that vanished from the broker, and queueing them again or failing
//!   them (the rule is in `cluster/lost.rs`).

mod cancel;
mod collect;
mod options;
mod send;
mod submitter;
mod vanish;

pub(crate) use collect::outcome;

pub use options::{ClientBuilder, SubmitOptions};
pub use submitter::Submitter;

use super::Keys;
use super::conn::{self, Broker};
use super::error::ClusterError;
use super::lost::{self, OnLost, Placed};
use super::sink::SharedSink;
use crate::cancel::CancelToken;
use crate::cluster::ratelimit::RateLimit;
use crate::cluster::record::TaskRecord;
use crate::error::{TaskError, TaskResult};
use crate::future::Future;
use crate::sync::{Condvar, Mutex};
use send::{Outbox, Target};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The most results the collector pops at once.
const COLLECT_BATCH: usize = 1024;
/// The longest the collector blocks on the reply list before it looks at deadlines and at `close`.
const COLLECT_POLL: Duration = Duration::from_millis(250);

/// How long a tombstone stays by default: a task cancelled while queued that is still queued after
/// this long runs after all.
pub(crate) const DEFAULT_CANCEL_TTL: Duration = Duration::from_secs(24 * 3600);

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

    /// The client's verbs with `options` for the calls made through it: `client.with(options)
    /// .submit(…)`, as a pool's [`with`](crate::Pool::with). A [`Priority`](crate::Priority) converts
    /// to options on its own: `client.with(Priority::High)`.
    #[inline]
    pub fn with(&self, options: impl Into<SubmitOptions>) -> Submitter<'_> {
        Submitter::new(self, options.into())
    }

    /// Submits the task `task` with serde arguments (encoded as MessagePack) and a serde result.
    /// Options for one call: [`with`](Client::with).
    pub fn submit<A, R>(&self, task: &str, args: &A) -> Result<Future<R>, ClusterError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        self.with(SubmitOptions::default()).submit(task, args)
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
        self.inner.enqueue(task, payload, options, Some(sink))
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

    /// Queues the task `task` with serde arguments and returns its id at once: nobody waits for its
    /// result, which is read by id later, from this or any other process ([`Client::status`],
    /// [`Client::result`], `martelli result ID`). The task keeps its record for an hour after it
    /// ends unless the options or the client say otherwise ([`SubmitOptions::result_ttl`]). A
    /// Celery user knows this as `delay()` followed by `AsyncResult(id)`. Options for one call:
    /// `client.with(options).send(…)`.
    pub fn send<A>(&self, task: &str, args: &A) -> Result<String, ClusterError>
    where
        A: Serialize + ?Sized,
    {
        self.with(SubmitOptions::default()).send(task, args)
    }

    /// [`send`](Client::send) with a payload of bytes (a raw task).
    pub fn send_raw(
        &self,
        task: &str,
        payload: impl Into<Vec<u8>>,
    ) -> Result<String, ClusterError> {
        self.with(SubmitOptions::default()).send_raw(task, payload)
    }

    /// The record of the task `id`: its state, attempts, the errors of retried runs and, once it
    /// ended, its outcome ([`TaskRecord::outcome`], [`TaskRecord::value`]). `None` when the task
    /// keeps no record (submitted without [`SubmitOptions::result_ttl`]) or its record expired.
    pub fn status(&self, id: &str) -> Result<Option<TaskRecord>, ClusterError> {
        let fields: Vec<(String, Vec<u8>)> = self.query("read a task record", |conn, keys| {
            redis::cmd("HGETALL").arg(keys.record(id)).query(conn)
        })?;
        TaskRecord::from_fields(id, fields).map_err(ClusterError::BadRecord)
    }

    /// The outcome of the task `id`, its value decoded from MessagePack as `R`, once it ended:
    /// `None` while it has not, or when it keeps no record ([`status`](Client::status) tells
    /// which).
    pub fn result<R: DeserializeOwned>(
        &self,
        id: &str,
    ) -> Result<Option<TaskResult<R>>, ClusterError> {
        Ok(self.status(id)?.and_then(|record| {
            if record.state.is_ended() {
                record.value()
            } else {
                None
            }
        }))
    }

    /// Limits how often tasks named `task` start, across every worker of every queue under this
    /// client's prefix (docs/protocol.md, "Addition 3: rate limits"). Workers see a new limit
    /// within about 100 ms.
    pub fn set_rate_limit(&self, task: &str, limit: RateLimit) -> Result<(), ClusterError> {
        self.query("set a rate limit", |conn, keys| {
            redis::cmd("HSET")
                .arg(keys.rate_limits())
                .arg(task)
                .arg(limit.to_wire())
                .query(conn)
        })
    }

    /// Removes the rate limit of `task`, if any.
    pub fn clear_rate_limit(&self, task: &str) -> Result<(), ClusterError> {
        self.query("clear a rate limit", |conn, keys| {
            redis::cmd("HDEL")
                .arg(keys.rate_limits())
                .arg(task)
                .query(conn)
        })
    }

    /// The keys of this client's queue.
    pub(crate) fn keys(&self) -> Keys {
        self.inner.keys.clone()
    }

    /// The client's result TTL, if it has one ([`ClientBuilder::result_ttl`]).
    pub(crate) fn keep(&self) -> Option<Duration> {
        self.inner.keep
    }

    /// The client's `max_attempts`.
    pub(crate) fn max_attempts(&self) -> u32 {
        self.inner.max_attempts
    }

    /// The largest envelope the client sends.
    pub(crate) fn max_payload(&self) -> usize {
        self.inner.max_payload
    }

    /// Runs `f` on the connection that reads records and limits (made on first use, and again
    /// after a failure).
    pub(crate) fn query<T>(
        &self,
        action: &'static str,
        f: impl FnOnce(&mut redis::Connection, &Keys) -> redis::RedisResult<T>,
    ) -> Result<T, ClusterError> {
        let mut slot = self.inner.query.lock();
        let mut conn = match slot.take() {
            Some(conn) => conn,
            None => self.inner.broker.connect()?,
        };
        let value = f(&mut conn, &self.inner.keys)
            .map_err(|source| ClusterError::Broker { action, source })?;
        // Kept for the next call only when it worked: a failed one is made again.
        *slot = Some(conn);
        Ok(value)
    }

    /// Submits the task `task` with a payload of bytes; the future resolves with the result's bytes.
    pub fn submit_raw(
        &self,
        task: &str,
        payload: impl Into<Vec<u8>>,
    ) -> Result<Future<Vec<u8>>, ClusterError> {
        self.with(SubmitOptions::default())
            .submit_raw(task, payload)
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
            .arg(crate::cluster::GROUP)
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
    /// Keep a record of every task this long after it ends (`ClientBuilder::result_ttl`).
    keep: Option<Duration>,
    /// The connection that reads task records (`Client::status`), made on first use.
    query: Mutex<Option<redis::Connection>>,
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
}
