//! What the dashboard's platform view reads: the periodic schedules (docs/protocol.md, "Addition
//! 4"), the rate limits per task name ("Addition 3"), the tasks of a queue waiting for a retry
//! ("Addition 2"), and the queue's chords and chains running or recently ended ("Addition 5", read
//! through its optional index of workflows). Read only.

use redis::Connection;
use serde::Serialize;

use super::envelope::TaskEnvelope;
use super::error::ClusterError;
use super::inspect::Inspector;
use super::schedule::{self, ScheduleInfo};
use super::{Keys, RateLimit, conn};

/// How many of a queue's delayed tasks (soonest first) the view reads to find retries.
pub const RETRY_SCAN: usize = 1000;

/// How many workflows (newest first in the index) the view reads to find the queue's chords and
/// chains.
pub const FLOW_SCAN: usize = 500;

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
    /// The queue's chords and chains that run or ended within their result TTL: running first,
    /// then the others, latest first (among the first [`FLOW_SCAN`] workflows of the index).
    pub flows: Vec<FlowView>,
    /// The workflows read from the index to find them.
    pub flows_read: u64,
    /// How many workflows the index holds (every queue's).
    pub flows_total: u64,
}

/// What kind of workflow a [`FlowView`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FlowKind {
    /// Members, then a callback on all their values.
    Chord,
    /// Steps one after another (one workflow per step but the last, shown together).
    Chain,
}

/// One chord or chain.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct FlowView {
    /// Chord or chain.
    pub kind: FlowKind,
    /// A chord: its workflow id (`P:flow:W`); a chain: its id, which is its last step's task id.
    pub id: String,
    /// A chord: members counted; a chain: steps that ended well.
    pub done: u64,
    /// A chord: its members; a chain: its steps.
    pub total: u64,
    /// Members (steps) that ended badly and were counted: with `on_fail` = `fail`, the one that
    /// failed the workflow.
    pub failed: u64,
    /// A chord's member that failed it (from 0), when one did (a chain: not shown).
    pub failed_by: Option<u64>,
    /// The task id of the callback (a chain: its last step), to read by id.
    pub callback: String,
    /// The callback's state: `waiting` (members still to end), then as its record says
    /// (`queued`, `running`, `done`, `failed`, `dead`), `failed` when a member failed the workflow,
    /// or `gone` when its record has expired.
    pub callback_state: String,
    /// When the callback was queued (Unix ms; a chain: its last step).
    pub fired_ms: Option<u64>,
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
    let (flows, flows_read, flows_total) = flows(conn, &keys)?;
    Ok(PlatformView {
        now_ms,
        schedules,
        rate_limits,
        retries,
        delayed_read,
        delayed_total,
        flows,
        flows_read,
        flows_total,
    })
}

/// The fields of a workflow's hash the view reads, in order.
const FLOW_FIELDS: [&str; 8] = [
    "total",
    "done",
    "state",
    "shape",
    "stream",
    "end_id",
    "fired",
    "failed_by",
];

/// One workflow's hash, as read.
struct FlowRow {
    id: String,
    total: u64,
    done: u64,
    state: String,
    chain: bool,
    end_id: String,
    fired_ms: Option<u64>,
    failed_by: Option<u64>,
    fails: u64,
    order: usize,
}

fn flows(conn: &mut Connection, keys: &Keys) -> Result<(Vec<FlowView>, u64, u64), ClusterError> {
    let index = keys.flows();
    let (total, ids): (u64, Vec<String>) = redis::pipe()
        .cmd("ZCARD")
        .arg(&index)
        .cmd("ZREVRANGE")
        .arg(&index)
        .arg(0)
        .arg(FLOW_SCAN - 1)
        .query(conn)
        .map_err(broker("read the index of workflows"))?;
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("HMGET")
            .arg(keys.flow(id))
            .arg(&FLOW_FIELDS[..])
            .arg("fails");
    }
    let hashes: Vec<Vec<Option<String>>> = if ids.is_empty() {
        Vec::new()
    } else {
        pipe.query(conn).map_err(broker("read the workflows"))?
    };
    let num = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<u64>().ok());
    let mut rows = Vec::new();
    for (order, (id, fields)) in ids.iter().zip(hashes).enumerate() {
        let [
            total,
            done,
            state,
            shape,
            stream,
            end_id,
            fired,
            failed_by,
            fails,
        ] = fields.as_slice()
        else {
            continue;
        };
        // Gone (expired), or another queue's.
        let (Some(total), Some(state), Some(stream), Some(end_id)) =
            (num(total), state, stream, end_id)
        else {
            continue;
        };
        if !keys.streams.iter().any(|s| s == stream) {
            continue;
        }
        rows.push(FlowRow {
            id: id.clone(),
            total,
            done: num(done).unwrap_or(0),
            state: state.clone(),
            chain: shape.as_deref() == Some("one"),
            end_id: end_id.clone(),
            fired_ms: num(fired),
            failed_by: num(failed_by),
            fails: num(fails).unwrap_or(0),
            order,
        });
    }
    // The callbacks' records (a chain's last step's, once for the chain).
    let mut ends: Vec<&str> = rows.iter().map(|r| r.end_id.as_str()).collect();
    ends.sort_unstable();
    ends.dedup();
    let mut pipe = redis::pipe();
    for end in &ends {
        pipe.cmd("HGET").arg(keys.record(end)).arg("state");
    }
    let states: Vec<Option<String>> = if ends.is_empty() {
        Vec::new()
    } else {
        pipe.query(conn)
            .map_err(broker("read the workflows' callbacks"))?
    };
    let state_of = |end: &str| -> Option<&str> {
        let at = ends.binary_search(&end).ok()?;
        states.get(at)?.as_deref()
    };

    let mut out: Vec<(bool, usize, FlowView)> = Vec::new();
    let mut chains: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for row in &rows {
        let end_state = state_of(&row.end_id);
        if !row.chain {
            let callback_state = match (row.state.as_str(), end_state) {
                ("open", _) => "waiting",
                (_, Some(s)) => s,
                ("failed", None) => "failed",
                _ => "gone",
            };
            out.push((
                row.state == "open",
                row.order,
                FlowView {
                    kind: FlowKind::Chord,
                    id: row.id.clone(),
                    done: row.done,
                    total: row.total,
                    failed: row.fails,
                    failed_by: row.failed_by,
                    callback: row.end_id.clone(),
                    callback_state: callback_state.to_owned(),
                    fired_ms: row.fired_ms,
                },
            ));
            continue;
        }
        // A chain step: its workflows share the chain's end record; one row for the chain.
        let at = *chains.entry(row.end_id.clone()).or_insert_with(|| {
            out.push((
                false,
                row.order,
                FlowView {
                    kind: FlowKind::Chain,
                    id: row.end_id.clone(),
                    done: 0,
                    total: 1,
                    failed: 0,
                    failed_by: None,
                    callback: row.end_id.clone(),
                    callback_state: String::new(),
                    fired_ms: None,
                },
            ));
            out.len() - 1
        });
        let (open, _, chain) = &mut out[at];
        chain.total += 1;
        chain.done += u64::from(row.state == "fired");
        chain.failed += row.fails;
        *open |= row.state == "open";
        chain.fired_ms = chain.fired_ms.max(row.fired_ms);
    }
    for (open, _, view) in &mut out {
        if view.kind != FlowKind::Chain {
            continue;
        }
        let end_state = state_of(&view.callback);
        // The steps before the last are its workflows; the last is the end record.
        let all_fired = view.done + 1 == view.total;
        view.callback_state = if view.failed > 0 {
            "failed".to_owned()
        } else if !all_fired {
            "waiting".to_owned()
        } else {
            end_state.unwrap_or("gone").to_owned()
        };
        if end_state == Some("done") && all_fired {
            view.done += 1;
        } else if matches!(end_state, Some("failed" | "dead")) && all_fired {
            view.failed += 1;
        }
        *open = *open || (view.failed == 0 && matches!(end_state, Some("queued" | "running")));
    }
    // Running first, then the others, each latest first (the index's order).
    out.sort_by_key(|(open, order, _)| (!*open, *order));
    Ok((
        out.into_iter().map(|(_, _, v)| v).collect(),
        ids.len() as u64,
        total,
    ))
}

fn score(v: &redis::Value) -> u64 {
    match v {
        redis::Value::Double(d) => *d as u64,
        other => conn::string(other)
            .and_then(|s| s.parse::<f64>().ok())
            .map_or(0, |d| d as u64),
    }
}
