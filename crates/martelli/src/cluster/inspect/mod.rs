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
//!
//! Here: the inspector and its calls. What it returns is in `views.rs`; how it finds one task among
//! the streams, the delayed set and the dead letters, in `search.rs`.

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

mod search;
#[cfg(test)]
mod tests;
mod views;

use search::*;
pub(crate) use search::{entry_ms, is_entry_id};
pub use views::{
    DelayedPage, DelayedTask, EnvelopeView, QueueReading, Reading, ResultView, TaskState, TaskView,
};

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
