//! Task records (docs/protocol.md, "Addition 1: task records"): a task's state and result, readable
//! by id from any process until some time after the task ended.
//!
//! A producer that sets the envelope's `keep` writes the record `queued` before the task's `XADD`;
//! the worker writes `running` when it starts the task and the outcome when it ends, in the
//! pipelines that carry its notes and results. Every worker write goes through [`RECORD_SCRIPT`],
//! which never changes an ended record (`done`, `failed`), so the record keeps the outcome the
//! caller saw first even when a task ran twice.

use super::envelope::{AttemptError, ResultEnvelope, ResultStatus};
use crate::error::TaskResult;
use serde::de::DeserializeOwned;
use std::fmt;

/// Writes a record unless it has ended. KEYS[1] the record; ARGV[1] the state, ARGV[2] the TTL
/// (ms), ARGV[3..] field/value pairs. The `due` field is kept only by a `queued` write.
pub(crate) const RECORD_SCRIPT: &str = r"
local cur = redis.call('HGET', KEYS[1], 'state')
if cur == 'done' or cur == 'failed' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], unpack(ARGV, 3))
if ARGV[1] ~= 'queued' then redis.call('HDEL', KEYS[1], 'due') end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// How much longer than `keep` the record of a task that has not ended stays (7 days): long
/// enough for a task that waits, short enough that a lost task's record goes away.
pub(crate) const UNENDED_GRACE_MS: u64 = 7 * 24 * 3600 * 1000;

/// Where a task is in its life, as its record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordState {
    /// Waiting in its queue, in the delayed set, or for a retry.
    Queued,
    /// A worker started it.
    Running,
    /// It returned a value.
    Done,
    /// It ended in an error (failed, panicked, timed out, cancelled, its process died).
    Failed,
    /// It was dead-lettered: it will not run unless someone requeues it.
    Dead,
}

impl RecordState {
    /// The state as the record writes it: `queued`, `running`, `done`, `failed`, `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordState::Queued => "queued",
            RecordState::Running => "running",
            RecordState::Done => "done",
            RecordState::Failed => "failed",
            RecordState::Dead => "dead",
        }
    }

    fn parse(s: &str) -> Option<RecordState> {
        Some(match s {
            "queued" => RecordState::Queued,
            "running" => RecordState::Running,
            "done" => RecordState::Done,
            "failed" => RecordState::Failed,
            "dead" => RecordState::Dead,
            _ => return None,
        })
    }

    /// The state a result with `status` leaves its task in.
    pub(crate) fn of(status: ResultStatus) -> RecordState {
        match status {
            ResultStatus::Ok => RecordState::Done,
            ResultStatus::Lost => RecordState::Dead,
            ResultStatus::Started => RecordState::Running,
            ResultStatus::Retrying => RecordState::Queued,
            _ => RecordState::Failed,
        }
    }

    /// Whether the task has ended (for now, for `Dead`).
    pub fn is_ended(self) -> bool {
        matches!(
            self,
            RecordState::Done | RecordState::Failed | RecordState::Dead
        )
    }
}

impl fmt::Display for RecordState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task's record, read by id ([`Client::status`](super::Client::status)).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskRecord {
    /// The task id.
    pub id: String,
    /// Where the task is.
    pub state: RecordState,
    /// The task name.
    pub task: String,
    /// The attempt that last started or ended (0 while it waits for its first).
    pub attempts: u32,
    /// The worker that last started or ended it.
    pub worker: Option<String>,
    /// When the record last changed (Unix ms).
    pub updated_ms: Option<u64>,
    /// While a retry waits: when it is queued again (Unix ms).
    pub due_ms: Option<u64>,
    /// The errors of the runs that were retried, oldest first.
    pub errors: Vec<AttemptError>,
    result: Option<ResultEnvelope>,
}

impl TaskRecord {
    /// The task's outcome once it has ended: its value's bytes, or its error. `None` while it has
    /// not ended.
    pub fn outcome(&self) -> Option<TaskResult<Vec<u8>>> {
        self.result
            .clone()
            .map(|result| super::client::outcome(result, None))
    }

    /// The task's outcome with its value decoded from MessagePack as `R` (what typed and
    /// registered tasks return). `None` while it has not ended.
    pub fn value<R: DeserializeOwned>(&self) -> Option<TaskResult<R>> {
        let outcome = self.outcome()?;
        Some(outcome.and_then(|bytes| super::decode_result(&self.task, &bytes)))
    }

    /// The result's status on the wire (`ok`, `failed`, …) once the task has ended.
    pub fn status(&self) -> Option<&'static str> {
        self.result.as_ref().map(|r| r.status.as_str())
    }

    /// The error message of the outcome, if it ended in one.
    pub fn error(&self) -> Option<&str> {
        self.result.as_ref().and_then(|r| r.error.as_deref())
    }

    /// Reads a record from the fields of `HGETALL`; `None` when there are none (unknown or
    /// expired). A record with a state this build does not know reads as an error.
    pub(crate) fn from_fields(
        id: &str,
        fields: Vec<(String, Vec<u8>)>,
    ) -> Result<Option<TaskRecord>, String> {
        if fields.is_empty() {
            return Ok(None);
        }
        let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        let mut state = None;
        let mut record = TaskRecord {
            id: id.to_owned(),
            state: RecordState::Queued,
            task: String::new(),
            attempts: 0,
            worker: None,
            updated_ms: None,
            due_ms: None,
            errors: Vec::new(),
            result: None,
        };
        for (field, value) in fields {
            match field.as_str() {
                "state" => {
                    let s = text(&value);
                    state = Some(RecordState::parse(&s).ok_or_else(|| {
                        format!(
                            "the record of task {id} has a state this build does not know: {s:?}"
                        )
                    })?);
                }
                "task" => record.task = text(&value),
                "attempts" => record.attempts = text(&value).parse().unwrap_or(0),
                "worker" => record.worker = Some(text(&value)),
                "updated" => record.updated_ms = text(&value).parse().ok(),
                "due" => record.due_ms = text(&value).parse().ok(),
                "errors" => {
                    record.errors = rmp_serde::from_slice(&value).map_err(|e| {
                        format!("the record of task {id} has unreadable errors: {e}")
                    })?;
                }
                "result" => {
                    record.result = Some(ResultEnvelope::decode(&value).map_err(|e| {
                        format!("the record of task {id} has an unreadable result: {e}")
                    })?);
                }
                _ => {}
            }
        }
        record.state =
            state.ok_or_else(|| format!("the record of task {id} has no state field"))?;
        Ok(Some(record))
    }
}

/// Adds a worker's write of a record to `pipe` (through [`RECORD_SCRIPT`]). `keep` is the
/// envelope's `keep`; the TTL is `keep` once the task has ended, [`UNENDED_GRACE_MS`] more before.
pub(crate) fn write(
    pipe: &mut redis::Pipeline,
    key: &str,
    state: RecordState,
    keep: u64,
    fields: &[(&str, &[u8])],
) {
    let ttl = if state.is_ended() {
        keep
    } else {
        keep.saturating_add(UNENDED_GRACE_MS)
    };
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(RECORD_SCRIPT)
        .arg(1)
        .arg(key)
        .arg(state.as_str())
        .arg(ttl.max(1));
    for (field, value) in fields {
        cmd.arg(*field).arg(*value);
    }
    cmd.arg("updated").arg(super::unix_ms());
    pipe.add_command(cmd).ignore();
}
