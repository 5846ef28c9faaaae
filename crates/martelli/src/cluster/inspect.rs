//! [`Inspector`]: a view of a cluster for a person at a dashboard, read from the broker alone.
//!
//! - [`Inspector::queues`]: every queue under the prefix (its keys, found with `SCAN`);
//! - [`Inspector::reading`]: each queue's depth per priority (as [`status`](super::status) reads
//!   it), the age of its oldest waiting task, and every worker's heartbeat;
//! - [`Inspector::delayed`]: a queue's delayed tasks, soonest first, a page at a time;
//! - [`Inspector::task`]: one task found by id, wherever it is (waiting, held, delayed or
//!   dead-lettered), with its envelope, attempts and, while its caller has not collected it, its
//!   result;
//! - [`Inspector::dead_letters`]: a queue's dead letters, to browse, inspect, requeue or discard
//!   (see [`DeadLetters`](super::DeadLetters); these are the only writes).
//!
//! An inspector keeps one connection between calls and opens a new one after the broker dropped
//! it; every command has a time limit ([`InspectorOptions::timeout`]), so a stuck broker gives an
//! error, never a hang.

use super::conn::{self, Broker, Entry};
use super::envelope::{ENTRY_FIELD, ResultEnvelope, ResultStatus, TaskEnvelope};
use super::error::ClusterError;
use super::preview::Payload;
use super::status::{self, PRIORITIES, QueueStatus, WorkerStatus, query};
use super::{DEFAULT_PREFIX, DEFAULT_QUEUE, GROUP, Keys, unix_ms};
use redis::{Connection, Value};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

/// How many entries of a stream, delayed set or reply list one command reads while searching.
const SEARCH_BATCH: usize = 500;

/// The most entries [`Inspector::task`] looks at in one search (all keys together), so that a
/// search of a huge queue costs the broker a bounded amount of work.
pub const SEARCH_LIMIT: u64 = 200_000;

/// The most results of a reply list [`Inspector::task`] reads when it looks for a task's result.
const REPLY_SEARCH: usize = 1000;

/// How an [`Inspector`] connects.
///
/// ```
/// use martelli::cluster::InspectorOptions;
/// use std::time::Duration;
///
/// let options = InspectorOptions::new().prefix("jobs").timeout(Duration::from_secs(2));
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct InspectorOptions {
    prefix: String,
    tls_ca: Option<PathBuf>,
    timeout: Duration,
}

impl Default for InspectorOptions {
    fn default() -> Self {
        InspectorOptions {
            prefix: DEFAULT_PREFIX.to_owned(),
            tls_ca: None,
            timeout: Duration::from_secs(10),
        }
    }
}

impl InspectorOptions {
    /// The defaults: prefix `martelli`, 10 s per command.
    pub fn new() -> InspectorOptions {
        InspectorOptions::default()
    }

    /// The key prefix (default `martelli`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> InspectorOptions {
        self.prefix = prefix.into();
        self
    }

    /// For a `rediss://` broker: the PEM file of CA certificates to trust.
    pub fn tls_ca(mut self, path: impl Into<PathBuf>) -> InspectorOptions {
        self.tls_ca = Some(path.into());
        self
    }

    /// How long one command may take before it fails (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> InspectorOptions {
        self.timeout = timeout;
        self
    }
}

/// A connection to a cluster's broker that reads queues, workers and tasks, and acts on dead
/// letters.
///
/// ```no_run
/// use martelli::cluster::{Inspector, InspectorOptions};
///
/// let mut inspector = Inspector::connect("redis://127.0.0.1:6379", &InspectorOptions::new())?;
/// let queues = inspector.queues()?;
/// let reading = inspector.reading(&queues)?;
/// for q in &reading.queues {
///     println!("{}: {} waiting, {} dead letters", q.status.name, q.status.waiting, q.status.dead);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Inspector {
    broker: Broker,
    prefix: String,
    timeout: Duration,
    conn: Option<Connection>,
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspector")
            .field("broker", &self.broker.shown())
            .field("prefix", &self.prefix)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

/// One reading of every queue asked for and of the workers.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Reading {
    /// When the reading was taken (Unix ms).
    pub at_ms: u64,
    /// The queues, in the order asked.
    pub queues: Vec<QueueReading>,
    /// Every worker with a heartbeat under the prefix, by consumer name, then the consumers of
    /// the queues' groups that hold tasks without one (workers that died).
    pub workers: Vec<WorkerStatus>,
}

/// One queue in a [`Reading`].
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct QueueReading {
    /// Its depth per priority, delayed tasks and dead letters.
    pub status: QueueStatus,
    /// How long the oldest task waiting for a worker has waited (ms, from its stream entry id,
    /// which is the time it was queued); `None` when none waits.
    pub oldest_waiting_ms: Option<u64>,
}

/// A task envelope as a person reads it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct EnvelopeView {
    /// The task id.
    pub id: String,
    /// The task name.
    pub task: String,
    /// The reply list its result goes to; `None` when nobody waits for it.
    pub reply: Option<String>,
    /// Unix ms after which it does not start.
    pub deadline_ms: Option<u64>,
    /// Deliveries allowed before it is dead-lettered.
    pub max_attempts: u32,
    /// Attempts spent before this entry was written.
    pub attempts: u32,
    /// The whole envelope's size in bytes.
    pub size: usize,
    /// Its payload.
    pub payload: Payload,
}

impl EnvelopeView {
    /// Reads an envelope; the error says what is wrong with it.
    pub(crate) fn decode(bytes: &[u8]) -> Result<EnvelopeView, String> {
        let e = TaskEnvelope::decode(bytes)?;
        Ok(EnvelopeView {
            payload: Payload::of(&e.payload),
            id: e.id,
            task: e.task,
            reply: e.reply,
            deadline_ms: e.deadline,
            max_attempts: e.max_attempts,
            attempts: e.attempts,
            size: bytes.len(),
        })
    }
}

/// A result envelope as a person reads it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ResultView {
    /// `ok`, `failed`, `panicked`, `timed_out`, `lost`, `cancelled`, `worker_died`, or `unknown`.
    pub status: &'static str,
    /// The error, panic message or dead-letter reason.
    pub error: Option<String>,
    /// The attempt that produced it.
    pub attempts: u32,
    /// The worker that wrote it.
    pub worker: String,
    /// The value, for `ok`.
    pub payload: Option<Payload>,
    /// With `worker_died`: the exit code of the process that ran the task.
    pub exit_code: Option<i32>,
    /// With `worker_died`: the signal that killed it.
    pub signal: Option<i32>,
}

impl From<ResultEnvelope> for ResultView {
    fn from(r: ResultEnvelope) -> ResultView {
        ResultView {
            status: r.status.as_str(),
            error: r.error,
            attempts: r.attempts,
            worker: r.worker,
            payload: r.payload.as_deref().map(Payload::of),
            exit_code: r.exit_code,
            signal: r.signal,
        }
    }
}

/// Where a task was found.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TaskState {
    /// In its priority stream, not yet read by a worker.
    Waiting {
        /// `high`, `normal` or `low`.
        priority: &'static str,
        /// Its stream entry id.
        entry: String,
        /// When it was queued (Unix ms, from the entry id).
        queued_ms: Option<u64>,
    },
    /// Read by a worker and not yet acknowledged: running, or about to.
    Held {
        /// `high`, `normal` or `low`.
        priority: &'static str,
        /// Its stream entry id.
        entry: String,
        /// When it was queued (Unix ms, from the entry id).
        queued_ms: Option<u64>,
        /// The consumer that holds it.
        consumer: String,
        /// Milliseconds since its lease was last renewed.
        idle_ms: u64,
        /// Deliveries of this entry so far.
        deliveries: u64,
    },
    /// In the delayed set.
    Delayed {
        /// `high`, `normal` or `low`: the stream it goes to when due.
        priority: &'static str,
        /// When it is due (Unix ms).
        due_ms: u64,
    },
    /// In the dead-letter stream.
    Dead {
        /// The dead letter.
        letter: Box<super::DeadLetter>,
    },
}

/// What [`Inspector::task`] found.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct TaskView {
    /// The task id looked for.
    pub id: String,
    /// The queue searched.
    pub queue: String,
    /// Where it is; `None` when it was not found: done and acknowledged (results leave the broker
    /// when the caller collects them), never submitted to this queue, or beyond the search limit
    /// (see `complete`).
    pub state: Option<TaskState>,
    /// Its envelope, when found and readable.
    pub envelope: Option<EnvelopeView>,
    /// Why its envelope could not be read, when it could not.
    pub envelope_error: Option<String>,
    /// Attempts so far: the envelope's, plus the deliveries of a held entry.
    pub attempts: Option<u64>,
    /// Its result, when one waits in its reply list for the caller to collect it.
    pub result: Option<ResultView>,
    /// Whether its caller cancelled it (its tombstone exists).
    pub cancelled: bool,
    /// How many entries the search looked at.
    pub searched: u64,
    /// False when the search stopped at [`SEARCH_LIMIT`] entries before it looked everywhere.
    pub complete: bool,
}

/// One page of a queue's delayed tasks.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct DelayedPage {
    /// Delayed tasks in all.
    pub total: u64,
    /// The rank of the first task of the page (0 is the soonest due).
    pub offset: u64,
    /// The tasks, soonest due first.
    pub tasks: Vec<DelayedTask>,
}

/// One delayed task.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct DelayedTask {
    /// When it is due (Unix ms).
    pub due_ms: u64,
    /// The stream it goes to when due: `high`, `normal` or `low` (`None` for a malformed member).
    pub priority: Option<&'static str>,
    /// Its envelope, when readable.
    pub envelope: Option<EnvelopeView>,
    /// Why its envelope could not be read, when it could not.
    pub envelope_error: Option<String>,
}

impl Inspector {
    /// Connects to the broker at `url` and checks that it is Redis 7 or newer.
    pub fn connect(url: &str, options: &InspectorOptions) -> Result<Inspector, ClusterError> {
        if options.prefix.is_empty() {
            return Err(ClusterError::InvalidOption(
                "the key prefix must not be empty".to_owned(),
            ));
        }
        let broker = Broker::new(url, options.tls_ca.as_deref())?;
        let conn = broker.connect_checked()?;
        let mut inspector = Inspector {
            broker,
            prefix: options.prefix.clone(),
            timeout: options.timeout,
            conn: None,
        };
        inspector.conn = Some(inspector.limit(conn)?);
        Ok(inspector)
    }

    /// The broker's URL, with any password hidden.
    pub fn broker(&self) -> &str {
        self.broker.shown()
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Sets the time limit of every command on a connection.
    fn limit(&self, conn: Connection) -> Result<Connection, ClusterError> {
        let set = conn
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| conn.set_write_timeout(Some(self.timeout)));
        set.map_err(|source| ClusterError::Broker {
            action: "accept a time limit on its connection",
            source,
        })?;
        Ok(conn)
    }

    /// Runs `f` on the connection, opening one first if there is none; a connection the broker
    /// dropped (or that timed out) is closed, and the next call opens a new one.
    pub(crate) fn with_conn<T>(
        &mut self,
        f: impl FnOnce(&mut Connection, &str) -> Result<T, ClusterError>,
    ) -> Result<T, ClusterError> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                let conn = self.broker.connect()?;
                self.limit(conn)?
            }
        };
        let conn = self.conn.insert(conn);
        let out = f(conn, &self.prefix);
        if let Err(ClusterError::Broker { source, .. }) = &out {
            if conn::is_connection_error(source) {
                self.conn = None;
            }
        }
        out
    }

    /// Every queue under the prefix: the names in the keys `P:q:NAME:{high,normal,low,delayed,dead}`
    /// (one `SCAN` of the key space), sorted.
    pub fn queues(&mut self) -> Result<Vec<String>, ClusterError> {
        self.with_conn(|conn, prefix| {
            let base = format!("{prefix}:q:");
            let pattern = format!("{}*", conn::glob_escape(&base));
            let mut queues = BTreeSet::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<String>) = query(
                    conn,
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000),
                    "list the queues' keys (SCAN)",
                )?;
                for key in batch {
                    if let Some(name) = queue_of(&key, &base) {
                        queues.insert(name.to_owned());
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
            Ok(queues.into_iter().collect())
        })
    }

    /// Reads `queues` and the workers.
    pub fn reading(&mut self, queues: &[String]) -> Result<Reading, ClusterError> {
        self.with_conn(|conn, prefix| {
            let mut out = Vec::with_capacity(queues.len());
            let mut all_readings = Vec::with_capacity(queues.len());
            for name in queues {
                let keys = Keys::new(prefix, name);
                let readings = status::read_streams(conn, &keys)?;
                let mut pipe = redis::pipe();
                pipe.cmd("ZCARD").arg(&keys.delayed);
                pipe.cmd("XLEN").arg(&keys.dead);
                let mut waiting_streams = 0;
                for (reading, stream) in readings.iter().zip(&keys.streams) {
                    if reading.length > reading.pending {
                        // The first entry after the last one delivered is the oldest waiting.
                        let start = reading
                            .last_delivered
                            .as_ref()
                            .map_or_else(|| "-".to_owned(), |id| format!("({id}"));
                        pipe.cmd("XRANGE")
                            .arg(stream)
                            .arg(start)
                            .arg("+")
                            .arg("COUNT")
                            .arg(1);
                        waiting_streams += 1;
                    }
                }
                let replies: Vec<Value> =
                    pipe.query(conn).map_err(|source| ClusterError::Broker {
                        action: "read a queue's delayed set, dead letters and oldest tasks",
                        source,
                    })?;
                let count = |i: usize| {
                    replies
                        .get(i)
                        .and_then(conn::int)
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(0)
                };
                let (delayed, dead) = (count(0), count(1));
                let now = unix_ms();
                let oldest = replies
                    .iter()
                    .skip(2)
                    .take(waiting_streams)
                    .filter_map(|r| conn::array(r).first().and_then(Entry::parse))
                    .filter_map(|e| entry_ms(&e.id))
                    .min()
                    .map(|ms| now.saturating_sub(ms));
                out.push(QueueReading {
                    status: status::queue_status(name, &keys, &readings, delayed, dead),
                    oldest_waiting_ms: oldest,
                });
                all_readings.push(readings);
            }
            // Heartbeats are keyed by the prefix alone: any queue's keys name them.
            let keys = Keys::new(prefix, DEFAULT_QUEUE);
            let heartbeats = status::read_heartbeats(conn, &keys)?;
            let mut orphans = BTreeSet::new();
            let mut extra = Vec::new();
            for (name, readings) in queues.iter().zip(&all_readings) {
                for orphan in status::orphans(&heartbeats, name, readings) {
                    if orphans.insert(orphan.consumer.clone()) {
                        extra.push(orphan);
                    }
                }
            }
            let mut workers: Vec<WorkerStatus> = heartbeats.into_values().collect();
            workers.extend(extra);
            Ok(Reading {
                at_ms: unix_ms(),
                queues: out,
                workers,
            })
        })
    }

    /// A page of `queue`'s delayed tasks: up to `count` from rank `offset`, soonest due first.
    pub fn delayed(
        &mut self,
        queue: &str,
        offset: u64,
        count: usize,
    ) -> Result<DelayedPage, ClusterError> {
        self.with_conn(|conn, prefix| {
            let keys = Keys::new(prefix, queue);
            let total: u64 = query(
                conn,
                redis::cmd("ZCARD").arg(&keys.delayed),
                "count the delayed tasks (ZCARD)",
            )?;
            let members = delayed_range(conn, &keys, offset, count)?;
            let tasks = members
                .into_iter()
                .map(|(member, due_ms)| {
                    let (priority, envelope) = split_delayed(&member);
                    let (envelope, envelope_error) = match EnvelopeView::decode(envelope) {
                        Ok(e) => (Some(e), None),
                        Err(why) => (None, Some(why)),
                    };
                    DelayedTask {
                        due_ms,
                        priority,
                        envelope,
                        envelope_error,
                    }
                })
                .collect();
            Ok(DelayedPage {
                total,
                offset,
                tasks,
            })
        })
    }

    /// Finds the task whose id is `id` in `queue`: among its dead letters (newest first), its
    /// three streams, then its delayed set, looking at no more than [`SEARCH_LIMIT`] entries.
    pub fn task(&mut self, queue: &str, id: &str) -> Result<TaskView, ClusterError> {
        self.with_conn(|conn, prefix| {
            let keys = Keys::new(prefix, queue);
            let mut search = Search {
                id,
                left: SEARCH_LIMIT,
            };
            let mut view = TaskView {
                id: id.to_owned(),
                queue: queue.to_owned(),
                state: None,
                envelope: None,
                envelope_error: None,
                attempts: None,
                result: None,
                cancelled: false,
                searched: 0,
                complete: true,
            };
            if let Some(letter) = search.dead(conn, &keys)? {
                let letter = super::deadletters::DeadLetter::from_entry(&letter, true);
                view.attempts = letter.attempts.map(u64::from);
                view.envelope = letter.envelope.clone();
                view.envelope_error = letter.envelope_error.clone();
                view.state = Some(TaskState::Dead {
                    letter: Box::new(letter),
                });
            } else if let Some((index, entry, envelope)) = search.streams(conn, &keys)? {
                let held = pending(conn, &keys.streams[index], &entry.id)?;
                let priority = PRIORITIES[index];
                let queued_ms = entry_ms(&entry.id);
                let spent = envelope
                    .as_ref()
                    .map_or(0, |e: &EnvelopeView| u64::from(e.attempts));
                view.state = Some(match held {
                    Some((consumer, idle_ms, deliveries)) => {
                        view.attempts = Some(spent + deliveries);
                        TaskState::Held {
                            priority,
                            entry: entry.id.clone(),
                            queued_ms,
                            consumer,
                            idle_ms,
                            deliveries,
                        }
                    }
                    None => {
                        view.attempts = Some(spent);
                        TaskState::Waiting {
                            priority,
                            entry: entry.id.clone(),
                            queued_ms,
                        }
                    }
                });
                view.envelope = envelope;
            } else if let Some((priority, due_ms, envelope)) = search.delayed(conn, &keys)? {
                view.attempts = Some(u64::from(envelope.attempts));
                view.state = Some(TaskState::Delayed { priority, due_ms });
                view.envelope = Some(envelope);
            }
            view.searched = SEARCH_LIMIT - search.left;
            view.complete = search.left > 0;
            if let Some(reply) = view.envelope.as_ref().and_then(|e| e.reply.clone()) {
                view.result = find_result(conn, &reply, id)?;
            }
            view.cancelled = query(
                conn,
                redis::cmd("EXISTS").arg(keys.tombstone(id)),
                "look for a task's tombstone (EXISTS)",
            )?;
            Ok(view)
        })
    }
}

/// The queue named by a key under `base` (`P:q:`), if the key is one of a queue's.
fn queue_of<'k>(key: &'k str, base: &str) -> Option<&'k str> {
    let rest = key.strip_prefix(base)?;
    [":high", ":normal", ":low", ":delayed", ":dead"]
        .iter()
        .find_map(|suffix| rest.strip_suffix(suffix))
        .filter(|name| !name.is_empty())
}

/// The time part (Unix ms) of a stream entry id `ms-seq`.
pub(crate) fn entry_ms(id: &str) -> Option<u64> {
    id.split_once('-')?.0.parse().ok()
}

/// Whether `id` is a stream entry id (`ms-seq`, both decimal).
pub(crate) fn is_entry_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, seq)| {
        !ms.is_empty()
            && !seq.is_empty()
            && ms.len() <= 20
            && seq.len() <= 20
            && ms.bytes().chain(seq.bytes()).all(|b| b.is_ascii_digit())
    })
}

/// Splits a delayed-set member into its priority (the leading digit) and its envelope.
fn split_delayed(member: &[u8]) -> (Option<&'static str>, &[u8]) {
    match member.split_first() {
        Some((digit @ b'0'..=b'2', envelope)) => {
            (Some(PRIORITIES[usize::from(digit - b'0')]), envelope)
        }
        _ => (None, member),
    }
}

/// Members of the delayed set by rank, with their due times.
fn delayed_range(
    conn: &mut Connection,
    keys: &Keys,
    offset: u64,
    count: usize,
) -> Result<Vec<(Vec<u8>, u64)>, ClusterError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let stop = offset.saturating_add(count as u64 - 1);
    let members: Vec<(Vec<u8>, f64)> = query(
        conn,
        redis::cmd("ZRANGE")
            .arg(&keys.delayed)
            .arg(offset)
            .arg(stop)
            .arg("WITHSCORES"),
        "read the delayed tasks (ZRANGE)",
    )?;
    Ok(members
        .into_iter()
        .map(|(m, score)| (m, score.max(0.0) as u64))
        .collect())
}

/// Who holds a stream entry: its consumer, idle time and deliveries (`XPENDING`), or `None`
/// when no worker has read it.
fn pending(
    conn: &mut Connection,
    stream: &str,
    entry: &str,
) -> Result<Option<(String, u64, u64)>, ClusterError> {
    let reply: redis::RedisResult<Value> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(GROUP)
        .arg(entry)
        .arg(entry)
        .arg(1)
        .query(conn);
    let reply = match reply {
        Ok(reply) => reply,
        // No group yet: nobody has read anything.
        Err(e) if conn::is_nogroup(&e) => return Ok(None),
        Err(source) => {
            return Err(ClusterError::Broker {
                action: "read who holds a task (XPENDING)",
                source,
            });
        }
    };
    Ok(conn::array(&reply).first().and_then(|row| {
        let row = conn::array(row);
        let consumer = conn::string(row.get(1)?)?;
        let idle = u64::try_from(conn::int(row.get(2)?)?).ok()?;
        let deliveries = u64::try_from(conn::int(row.get(3)?)?).ok()?;
        Some((consumer, idle, deliveries))
    }))
}

/// The result of task `id` among the newest results of reply list `reply`.
fn find_result(
    conn: &mut Connection,
    reply: &str,
    id: &str,
) -> Result<Option<ResultView>, ClusterError> {
    let results: Vec<Vec<u8>> = query(
        conn,
        redis::cmd("LRANGE")
            .arg(reply)
            .arg(0)
            .arg(REPLY_SEARCH as i64 - 1),
        "read a reply list (LRANGE)",
    )?;
    Ok(results
        .iter()
        .filter(|r| contains(r, id.as_bytes()))
        .filter_map(|r| ResultEnvelope::decode(r).ok())
        // A `started` note is not a result (docs/protocol.md, "Started notes").
        .find(|r| r.id == id && r.status != ResultStatus::Started)
        .map(ResultView::from))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// A search for one task id, with a budget of entries.
struct Search<'a> {
    id: &'a str,
    left: u64,
}

impl Search<'_> {
    /// Takes `n` entries from the budget; false once it is spent.
    fn spend(&mut self, n: usize) -> bool {
        self.left = self.left.saturating_sub(n as u64);
        self.left > 0
    }

    /// The dead letter of the task, newest first.
    fn dead(&mut self, conn: &mut Connection, keys: &Keys) -> Result<Option<Entry>, ClusterError> {
        let mut end = "+".to_owned();
        loop {
            let page: Value = query(
                conn,
                redis::cmd("XREVRANGE")
                    .arg(&keys.dead)
                    .arg(&end)
                    .arg("-")
                    .arg("COUNT")
                    .arg(SEARCH_BATCH),
                "search the dead letters (XREVRANGE)",
            )?;
            let entries: Vec<Entry> = conn::array(&page).iter().filter_map(Entry::parse).collect();
            let more = self.spend(entries.len()) && entries.len() == SEARCH_BATCH;
            if let Some(found) = entries
                .iter()
                .position(|e| e.field("id") == Some(self.id.as_bytes()))
            {
                return Ok(entries.into_iter().nth(found));
            }
            match entries.last() {
                Some(last) if more => end = format!("({}", last.id),
                _ => return Ok(None),
            }
        }
    }

    /// The task in one of the three streams: the stream's index, the entry and its envelope.
    #[allow(clippy::type_complexity)]
    fn streams(
        &mut self,
        conn: &mut Connection,
        keys: &Keys,
    ) -> Result<Option<(usize, Entry, Option<EnvelopeView>)>, ClusterError> {
        for (index, stream) in keys.streams.iter().enumerate() {
            let mut start = "-".to_owned();
            loop {
                if self.left == 0 {
                    return Ok(None);
                }
                let page: Value = query(
                    conn,
                    redis::cmd("XRANGE")
                        .arg(stream)
                        .arg(&start)
                        .arg("+")
                        .arg("COUNT")
                        .arg(SEARCH_BATCH),
                    "search a task stream (XRANGE)",
                )?;
                let entries: Vec<Entry> =
                    conn::array(&page).iter().filter_map(Entry::parse).collect();
                let more = self.spend(entries.len()) && entries.len() == SEARCH_BATCH;
                for entry in &entries {
                    let Some(bytes) = entry.field(ENTRY_FIELD) else {
                        continue;
                    };
                    if !contains(bytes, self.id.as_bytes()) {
                        continue;
                    }
                    if let Ok(envelope) = EnvelopeView::decode(bytes) {
                        if envelope.id == self.id {
                            let entry = Entry {
                                id: entry.id.clone(),
                                fields: Vec::new(),
                            };
                            return Ok(Some((index, entry, Some(envelope))));
                        }
                    }
                }
                match entries.last() {
                    Some(last) if more => start = format!("({}", last.id),
                    _ => break,
                }
            }
        }
        Ok(None)
    }

    /// The task in the delayed set: its priority, due time and envelope.
    fn delayed(
        &mut self,
        conn: &mut Connection,
        keys: &Keys,
    ) -> Result<Option<(&'static str, u64, EnvelopeView)>, ClusterError> {
        let mut offset = 0u64;
        while self.left > 0 {
            let members = delayed_range(conn, keys, offset, SEARCH_BATCH)?;
            let more = self.spend(members.len()) && members.len() == SEARCH_BATCH;
            for (member, due) in &members {
                if !contains(member, self.id.as_bytes()) {
                    continue;
                }
                let (priority, bytes) = split_delayed(member);
                if let (Some(priority), Ok(envelope)) = (priority, EnvelopeView::decode(bytes)) {
                    if envelope.id == self.id {
                        return Ok(Some((priority, *due, envelope)));
                    }
                }
            }
            if !more {
                break;
            }
            offset += SEARCH_BATCH as u64;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_come_from_their_keys() {
        let base = "martelli:q:";
        assert_eq!(queue_of("martelli:q:default:normal", base), Some("default"));
        assert_eq!(queue_of("martelli:q:a:dead:high", base), Some("a:dead"));
        assert_eq!(queue_of("martelli:q:img:dead", base), Some("img"));
        assert_eq!(queue_of("martelli:q:img:cancels", base), None);
        assert_eq!(queue_of("martelli:q::high", base), None);
        assert_eq!(queue_of("other:q:x:high", base), None);
    }

    #[test]
    fn entry_ids_are_checked_and_timed() {
        assert_eq!(entry_ms("1700000000000-3"), Some(1_700_000_000_000));
        assert!(is_entry_id("1-0"));
        for bad in ["", "1", "-1", "1-", "a-1", "1-0 ", "+", "(1-0"] {
            assert!(!is_entry_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn delayed_members_carry_their_priority_digit() {
        assert_eq!(split_delayed(b"0abc"), (Some("high"), &b"abc"[..]));
        assert_eq!(split_delayed(b"2x"), (Some("low"), &b"x"[..]));
        assert_eq!(split_delayed(b"9x"), (None, &b"9x"[..]));
    }
}
