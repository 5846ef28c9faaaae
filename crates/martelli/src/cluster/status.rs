//! [`status`]: what a queue holds, which workers serve it, and how fast tasks go through, read from
//! the broker alone (every figure comes from the keys of `docs/protocol.md`, so it covers workers on
//! every machine).
//!
//! - Queue depth per priority stream: a task stream holds only tasks waiting or held (acknowledged
//!   entries are deleted), so *waiting* is the stream's length less the group's pending entries, and
//!   *held* is the pending count (`XINFO STREAM`, `XINFO GROUPS`).
//! - Workers: the heartbeat hashes `P:worker:*` (a live worker refreshes its own every third of a
//!   lease), and the consumers of the group that still hold tasks without a heartbeat (a worker that
//!   died; its tasks are reclaimed once their lease expires).
//! - Throughput: two readings of the streams' `entries-added` and length, `sample` apart. Entries
//!   added are tasks submitted; entries added less the length are tasks done (acknowledged and
//!   deleted, or dead-lettered).

use super::conn::{self, Broker};
use super::error::ClusterError;
use super::{DEFAULT_PREFIX, DEFAULT_QUEUE, GROUP, Keys, unix_ms};
use redis::{Connection, Value};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The priority names of the three task streams, in stream order.
pub(super) const PRIORITIES: [&str; 3] = ["high", "normal", "low"];

/// What [`status`] reads.
///
/// ```
/// use martelli::cluster::StatusOptions;
/// use std::time::Duration;
///
/// let options = StatusOptions::new().queue("images").sample(Duration::from_millis(500));
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct StatusOptions {
    prefix: String,
    queue: String,
    tls_ca: Option<PathBuf>,
    sample: Duration,
}

impl Default for StatusOptions {
    fn default() -> Self {
        StatusOptions {
            prefix: DEFAULT_PREFIX.to_owned(),
            queue: DEFAULT_QUEUE.to_owned(),
            tls_ca: None,
            sample: Duration::from_secs(1),
        }
    }
}

impl StatusOptions {
    /// The defaults: prefix `martelli`, queue `default`, throughput over 1 s.
    pub fn new() -> StatusOptions {
        StatusOptions::default()
    }

    /// The key prefix (default `martelli`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> StatusOptions {
        self.prefix = prefix.into();
        self
    }

    /// The queue whose depth is read (default `default`). Workers of every queue are listed.
    pub fn queue(mut self, queue: impl Into<String>) -> StatusOptions {
        self.queue = queue.into();
        self
    }

    /// For a `rediss://` broker: the PEM file of CA certificates to trust.
    pub fn tls_ca(mut self, path: impl Into<PathBuf>) -> StatusOptions {
        self.tls_ca = Some(path.into());
        self
    }

    /// How long apart the two readings for the throughput are (default 1 s); zero skips the
    /// throughput and returns at once.
    pub fn sample(mut self, interval: Duration) -> StatusOptions {
        self.sample = interval;
        self
    }
}

/// One reading of a queue and its workers.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ClusterStatus {
    /// The broker's URL, with any password hidden.
    pub broker: String,
    /// The key prefix.
    pub prefix: String,
    /// When the reading was taken (Unix ms).
    pub at_ms: u64,
    /// The queue.
    pub queue: QueueStatus,
    /// Every worker with a heartbeat under the prefix (any queue), then the consumers of this queue's
    /// group that hold tasks without one; by consumer name.
    pub workers: Vec<WorkerStatus>,
    /// Tasks per second over the sample interval; `None` when the interval was zero.
    pub throughput: Option<Throughput>,
}

/// The depth of one queue.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct QueueStatus {
    /// The queue's name.
    pub name: String,
    /// The three priority streams, highest first.
    pub streams: Vec<StreamStatus>,
    /// Tasks waiting for a worker, all priorities.
    pub waiting: u64,
    /// Tasks held by workers (read and not yet acknowledged), all priorities.
    pub held: u64,
    /// Tasks in the delayed set, not yet due or not yet moved to their stream.
    pub delayed: u64,
    /// Entries of the dead-letter stream.
    pub dead: u64,
}

/// One priority stream of a queue.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct StreamStatus {
    /// `high`, `normal` or `low`.
    pub priority: String,
    /// The stream's key.
    pub key: String,
    /// Tasks waiting for a worker.
    pub waiting: u64,
    /// Tasks held by workers.
    pub held: u64,
    /// Entries ever added to the stream (Redis's `entries-added`).
    pub entries_added: u64,
}

/// One worker (or a consumer of the group that holds tasks without a heartbeat).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct WorkerStatus {
    /// The consumer name (`<host or name>-<pid>-<random>`).
    pub consumer: String,
    /// The queue it serves, as its heartbeat says.
    pub queue: Option<String>,
    /// Whether it renewed its heartbeat within its lease. A consumer without a heartbeat is not.
    pub alive: bool,
    /// Milliseconds since its last heartbeat; `None` without one.
    pub heartbeat_age_ms: Option<u64>,
    /// Its lease (ms), as its heartbeat says.
    pub lease_ms: Option<u64>,
    /// Its process id on its machine.
    pub pid: Option<u64>,
    /// How many tasks it runs at once.
    pub concurrency: Option<u64>,
    /// Tasks it holds (from its heartbeat; without one, the group's pending count for it).
    pub held: u64,
    /// Tasks that returned a value.
    pub succeeded: u64,
    /// Tasks that failed, panicked or were past their deadline.
    pub failed: u64,
    /// Entries it moved to the dead-letter stream.
    pub dead_lettered: u64,
}

/// Tasks per second between two readings.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Throughput {
    /// The time between the readings (ms).
    pub interval_ms: u64,
    /// Tasks added to the queue's streams per second.
    pub submitted_per_s: f64,
    /// Tasks done (acknowledged or dead-lettered) per second.
    pub completed_per_s: f64,
}

/// Reads the status of a queue and of the workers under a prefix.
///
/// ```no_run
/// use martelli::cluster::{StatusOptions, status};
///
/// let status = status("redis://127.0.0.1:6379", &StatusOptions::new())?;
/// println!("{} waiting, {} workers", status.queue.waiting, status.workers.len());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn status(url: &str, options: &StatusOptions) -> Result<ClusterStatus, ClusterError> {
    if options.prefix.is_empty() || options.queue.is_empty() {
        return Err(ClusterError::InvalidOption(
            "the key prefix and the queue name must not be empty".to_owned(),
        ));
    }
    let broker = Broker::new(url, options.tls_ca.as_deref())?;
    let mut conn = broker.connect()?;
    let keys = Keys::new(&options.prefix, &options.queue);
    let first = read_streams(&mut conn, &keys)?;
    let first_at = Instant::now();
    let throughput = if options.sample.is_zero() {
        None
    } else {
        std::thread::sleep(options.sample);
        let second = read_streams(&mut conn, &keys)?;
        let elapsed = first_at.elapsed().as_secs_f64().max(1e-6);
        let added = |s: &[StreamReading]| s.iter().map(|r| r.entries_added).sum::<u64>();
        let done = |s: &[StreamReading]| {
            s.iter()
                .map(|r| r.entries_added.saturating_sub(r.length))
                .sum::<u64>()
        };
        Some(Throughput {
            interval_ms: u64::try_from(first_at.elapsed().as_millis()).unwrap_or(u64::MAX),
            submitted_per_s: added(&second).saturating_sub(added(&first)) as f64 / elapsed,
            completed_per_s: done(&second).saturating_sub(done(&first)) as f64 / elapsed,
        })
    };
    let readings = read_streams(&mut conn, &keys)?;
    let delayed: u64 = query(&mut conn, redis::cmd("ZCARD").arg(&keys.delayed), "ZCARD")?;
    let dead: u64 = query(&mut conn, redis::cmd("XLEN").arg(&keys.dead), "XLEN")?;
    let workers = read_workers(&mut conn, &keys, &options.queue, &readings)?;
    Ok(ClusterStatus {
        broker: broker.shown().to_owned(),
        prefix: options.prefix.clone(),
        at_ms: unix_ms(),
        queue: queue_status(&options.queue, &keys, &readings, delayed, dead),
        workers,
        throughput,
    })
}

/// A queue's depth from its streams' readings and the sizes of its delayed set and dead letters.
pub(super) fn queue_status(
    name: &str,
    keys: &Keys,
    readings: &[StreamReading],
    delayed: u64,
    dead: u64,
) -> QueueStatus {
    let streams: Vec<StreamStatus> = readings
        .iter()
        .zip(PRIORITIES)
        .zip(&keys.streams)
        .map(|((r, priority), key)| StreamStatus {
            priority: priority.to_owned(),
            key: key.clone(),
            waiting: r.length.saturating_sub(r.pending),
            held: r.pending,
            entries_added: r.entries_added,
        })
        .collect();
    QueueStatus {
        name: name.to_owned(),
        waiting: streams.iter().map(|s| s.waiting).sum(),
        held: streams.iter().map(|s| s.held).sum(),
        streams,
        delayed,
        dead,
    }
}

/// One stream as read.
#[derive(Debug, Default)]
pub(super) struct StreamReading {
    pub(super) length: u64,
    pub(super) entries_added: u64,
    pub(super) pending: u64,
    /// The group's consumers and how many entries each holds.
    pub(super) consumers: Vec<(String, u64)>,
    /// The last entry delivered to the group (`last-delivered-id`); `None` without a group.
    pub(super) last_delivered: Option<String>,
}

pub(super) fn query<T: redis::FromRedisValue>(
    conn: &mut Connection,
    cmd: &redis::Cmd,
    what: &'static str,
) -> Result<T, ClusterError> {
    cmd.query(conn).map_err(|source| ClusterError::Broker {
        action: what,
        source,
    })
}

/// Reads `XINFO STREAM`, `XINFO GROUPS` and `XINFO CONSUMERS` of each priority stream; a stream
/// that does not exist (no worker ever started on the queue) reads as empty.
pub(super) fn read_streams(
    conn: &mut Connection,
    keys: &Keys,
) -> Result<Vec<StreamReading>, ClusterError> {
    let mut out = Vec::with_capacity(keys.streams.len());
    for stream in &keys.streams {
        let mut reading = StreamReading::default();
        let info: redis::RedisResult<Value> =
            redis::cmd("XINFO").arg("STREAM").arg(stream).query(conn);
        let info = match info {
            Ok(info) => info,
            Err(e) if e.to_string().contains("no such key") => {
                out.push(reading);
                continue;
            }
            Err(source) => {
                return Err(ClusterError::Broker {
                    action: "describe a task stream (XINFO STREAM)",
                    source,
                });
            }
        };
        let info = map(&info);
        reading.length = number(&info, "length");
        reading.entries_added = number(&info, "entries-added");
        let groups: Value = query(
            conn,
            redis::cmd("XINFO").arg("GROUPS").arg(stream),
            "list a stream's consumer groups (XINFO GROUPS)",
        )?;
        let ours = conn::array(&groups)
            .iter()
            .map(map)
            .find(|g| g.get("name").and_then(conn::string).as_deref() == Some(GROUP));
        if let Some(group) = ours {
            reading.pending = number(&group, "pending");
            reading.last_delivered = group.get("last-delivered-id").and_then(conn::string);
            let consumers: Value = query(
                conn,
                redis::cmd("XINFO").arg("CONSUMERS").arg(stream).arg(GROUP),
                "list a group's consumers (XINFO CONSUMERS)",
            )?;
            reading.consumers = conn::array(&consumers)
                .iter()
                .map(map)
                .filter_map(|c| {
                    let name = conn::string(c.get("name")?)?;
                    Some((name, number(&c, "pending")))
                })
                .collect();
        }
        out.push(reading);
    }
    Ok(out)
}

/// Reads every heartbeat hash under the prefix, then adds the consumers of the queue's group that
/// hold entries without a heartbeat.
fn read_workers(
    conn: &mut Connection,
    keys: &Keys,
    queue: &str,
    readings: &[StreamReading],
) -> Result<Vec<WorkerStatus>, ClusterError> {
    let workers = read_heartbeats(conn, keys)?;
    let orphans = orphans(&workers, queue, readings);
    let mut list: Vec<WorkerStatus> = workers.into_values().collect();
    list.extend(orphans);
    Ok(list)
}

/// Every heartbeat hash under the prefix, by consumer name.
pub(super) fn read_heartbeats(
    conn: &mut Connection,
    keys: &Keys,
) -> Result<BTreeMap<String, WorkerStatus>, ClusterError> {
    let prefix = keys.heartbeat("");
    let pattern = format!("{}*", conn::glob_escape(&prefix));
    let names = conn::scan(conn, &pattern).map_err(|source| ClusterError::Broker {
        action: "list the workers' heartbeats (SCAN)",
        source,
    })?;
    let now = unix_ms();
    let mut workers = BTreeMap::new();
    // One round trip for all the heartbeats, however many workers there are.
    let mut pipe = redis::pipe();
    for key in &names {
        pipe.cmd("HGETALL").arg(key);
    }
    let all: Vec<BTreeMap<String, String>> = if names.is_empty() {
        Vec::new()
    } else {
        pipe.query(conn).map_err(|source| ClusterError::Broker {
            action: "read the workers' heartbeats (HGETALL)",
            source,
        })?
    };
    for (key, fields) in names.into_iter().zip(all) {
        if fields.is_empty() {
            continue; // expired between SCAN and HGETALL
        }
        let Some(consumer) = key.strip_prefix(&prefix) else {
            continue;
        };
        let get = |f: &str| fields.get(f).and_then(|v| v.parse::<u64>().ok());
        let age = get("last_seen").map(|seen| now.saturating_sub(seen));
        let lease = get("lease_ms");
        let alive = match (age, lease) {
            (Some(age), Some(lease)) => age <= lease,
            // A heartbeat without its lease (an older worker) is alive while its key exists.
            (Some(_), None) => true,
            _ => false,
        };
        workers.insert(
            consumer.to_owned(),
            WorkerStatus {
                consumer: consumer.to_owned(),
                queue: fields.get("queue").cloned(),
                alive,
                heartbeat_age_ms: age,
                lease_ms: lease,
                pid: get("pid"),
                concurrency: get("concurrency"),
                held: get("held").unwrap_or(0),
                succeeded: get("succeeded").unwrap_or(0),
                failed: get("failed").unwrap_or(0),
                dead_lettered: get("dead_lettered").unwrap_or(0),
            },
        );
    }
    Ok(workers)
}

/// The consumers of a queue's group that hold entries without a heartbeat in `workers`, by name.
pub(super) fn orphans(
    workers: &BTreeMap<String, WorkerStatus>,
    queue: &str,
    readings: &[StreamReading],
) -> Vec<WorkerStatus> {
    let mut orphans: BTreeMap<String, u64> = BTreeMap::new();
    for reading in readings {
        for (name, pending) in &reading.consumers {
            if *pending > 0 && !workers.contains_key(name) {
                *orphans.entry(name.clone()).or_default() += pending;
            }
        }
    }
    orphans
        .into_iter()
        .map(|(consumer, held)| WorkerStatus {
            consumer,
            queue: Some(queue.to_owned()),
            alive: false,
            heartbeat_age_ms: None,
            lease_ms: None,
            pid: None,
            concurrency: None,
            held,
            succeeded: 0,
            failed: 0,
            dead_lettered: 0,
        })
        .collect()
}

/// A reply that is a map: RESP3's map, or RESP2's flat array of names and values.
pub(super) fn map(value: &Value) -> BTreeMap<String, Value> {
    match value {
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((conn::string(k)?, v.clone())))
            .collect(),
        other => conn::array(other)
            .chunks(2)
            .filter_map(|pair| Some((conn::string(pair.first()?)?, pair.get(1)?.clone())))
            .collect(),
    }
}

/// A non-negative integer field of a map reply; 0 when missing or nil.
pub(super) fn number(map: &BTreeMap<String, Value>, field: &str) -> u64 {
    map.get(field)
        .and_then(conn::int)
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_read_from_flat_arrays_and_resp3_maps() {
        let flat = Value::Array(vec![
            Value::BulkString(b"length".to_vec()),
            Value::Int(3),
            Value::BulkString(b"lag".to_vec()),
            Value::Nil,
        ]);
        let m = map(&flat);
        assert_eq!(number(&m, "length"), 3);
        assert_eq!(number(&m, "lag"), 0);
        let resp3 = Value::Map(vec![(Value::SimpleString("pending".into()), Value::Int(2))]);
        assert_eq!(number(&map(&resp3), "pending"), 2);
    }
}
