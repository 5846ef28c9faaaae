//! What an [`Inspector`](super::Inspector) returns: readings, envelopes, results, tasks, pages.

use super::*;

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
        letter: Box<crate::cluster::DeadLetter>,
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
