//! What the dashboard's platform view reads: the periodic schedules (docs/protocol.md, "Addition
//! 4"), the rate limits per task name ("Addition 3"), and the tasks of a queue waiting for a retry
//! ("Addition 2"). Read only.

use redis::Connection;
use serde::Serialize;

use super::envelope::TaskEnvelope;
use super::error::ClusterError;
use super::inspect::Inspector;
use super::schedule::{self, ScheduleInfo};
use super::{Keys, RateLimit, conn};

/// How many of a queue's delayed tasks (soonest first) the view reads to find retries.
pub const RETRY_SCAN: usize = 1000;

/// The platform view of one queue.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PlatformView {
    /// The broker's clock when it was read (Unix ms).
    pub now_ms: u64,
    /// Every periodic schedule under the prefix, by name.
    pub schedules: Vec<ScheduleInfo>,
    /// Every rate limit under the prefix, by task name.
    pub rate_limits: Vec<RateLimitView>,
    /// The queue's tasks waiting for a retry, soonest first (among the first [`RETRY_SCAN`]
    /// delayed tasks).
    pub retries: Vec<RetryView>,
    /// The delayed tasks read to find them, and how many the queue has.
    pub delayed_read: u64,
    /// How many delayed tasks the queue has.
    pub delayed_total: u64,
}

/// One rate limit.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct RateLimitView {
    /// The task name.
    pub task: String,
    /// The limit as a person writes it (`100/s`), or the raw value when it cannot be read.
    pub limit: String,
    /// The earliest start a new task of the name would get (Unix ms), when it is in the future:
    /// how far the reservations run ahead.
    pub next_start_ms: Option<u64>,
}

/// One task waiting for its retry.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct RetryView {
    /// The task id.
    pub id: String,
    /// The task name.
    pub task: String,
    /// Retries done so far (this one included): the next run is run number `retries + 1`.
    pub retries: u32,
    /// Retries allowed.
    pub max_retries: Option<u32>,
    /// When it is queued again (Unix ms).
    pub due_ms: u64,
    /// The error of the run that was retried last.
    pub last_error: Option<String>,
}

impl Inspector {
    /// Reads the schedules, the rate limits and `queue`'s retries.
    pub fn platform(&mut self, queue: &str) -> Result<PlatformView, ClusterError> {
        self.with_conn(|conn, prefix| read(conn, prefix, queue))
    }
}

fn broker(action: &'static str) -> impl FnOnce(redis::RedisError) -> ClusterError {
    move |source| ClusterError::Broker { action, source }
}

fn read(conn: &mut Connection, prefix: &str, queue: &str) -> Result<PlatformView, ClusterError> {
    let keys = Keys::new(prefix, queue);
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query(conn)
        .map_err(broker("read its clock (TIME)"))?;
    let now_ms = secs * 1000 + micros / 1000;
    let schedules = schedule::list(conn, prefix).map_err(broker("list the schedules"))?;

    let mut limits: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(keys.rate_limits())
        .query(conn)
        .map_err(broker("read the rate limits"))?;
    limits.sort();
    let mut rate_limits = Vec::with_capacity(limits.len());
    for (task, raw) in limits {
        let tat: Option<String> = redis::cmd("GET")
            .arg(keys.rate(&task))
            .query(conn)
            .map_err(broker("read a rate limit's state"))?;
        let next_start_ms = tat
            .and_then(|t| t.parse::<u64>().ok())
            .map(|us| us / 1000)
            .filter(|&ms| ms > now_ms);
        rate_limits.push(RateLimitView {
            limit: raw
                .parse::<RateLimit>()
                .map_or_else(|_| raw.clone(), |l| l.to_string()),
            task,
            next_start_ms,
        });
    }

    let delayed_total: u64 = redis::cmd("ZCARD")
        .arg(&keys.delayed)
        .query(conn)
        .map_err(broker("count the delayed tasks"))?;
    let members: redis::Value = redis::cmd("ZRANGE")
        .arg(&keys.delayed)
        .arg(0)
        .arg(RETRY_SCAN - 1)
        .arg("WITHSCORES")
        .query(conn)
        .map_err(broker("read the delayed tasks"))?;
    // RESP2 replies member, score, member, score…; RESP3 [member, score] pairs.
    let items = conn::array(&members);
    let pairs: Vec<(&[u8], u64)> = if items
        .first()
        .is_some_and(|i| matches!(i, redis::Value::Array(_)))
    {
        items
            .iter()
            .filter_map(|pair| match conn::array(pair) {
                [m, s] => Some((conn::bytes(m)?, score(s))),
                _ => None,
            })
            .collect()
    } else {
        items
            .chunks(2)
            .filter_map(|pair| match pair {
                [m, s] => Some((conn::bytes(m)?, score(s))),
                _ => None,
            })
            .collect()
    };
    let delayed_read = pairs.len() as u64;
    let mut retries = Vec::new();
    for (member, due_ms) in pairs {
        let Some(envelope) = member.get(1..).and_then(|e| TaskEnvelope::decode(e).ok()) else {
            continue;
        };
        if envelope.retries == 0 {
            continue;
        }
        retries.push(RetryView {
            last_error: envelope.errors.last().map(|e| e.error.clone()),
            max_retries: envelope.retry.as_ref().map(super::Retry::max),
            retries: envelope.retries,
            id: envelope.id,
            task: envelope.task,
            due_ms,
        });
    }
    Ok(PlatformView {
        now_ms,
        schedules,
        rate_limits,
        retries,
        delayed_read,
        delayed_total,
    })
}

fn score(v: &redis::Value) -> u64 {
    match v {
        redis::Value::Double(d) => *d as u64,
        other => conn::string(other)
            .and_then(|s| s.parse::<f64>().ok())
            .map_or(0, |d| d as u64),
    }
}
