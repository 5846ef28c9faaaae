//! The writer thread and what it stores: results, `started` notes, dead letters and handed-back
//! tasks, one pipeline per batch, each outcome before the acknowledgement of its entry (rule 1).

use super::{Held, Job, Shared};
use crate::cluster::conn::{self, Entry};
use crate::cluster::envelope::{ENTRY_FIELD, FlowRef, ResultEnvelope, ResultStatus, TaskEnvelope};
use crate::cluster::record::{self, RecordState};
use crate::cluster::{GROUP, Keys, PROTOCOL_VERSION, unix_ms, workflow};
use crossbeam_channel::Receiver;
use redis::Connection;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How many bytes of an oversized or malformed entry the dead letter keeps.
const DEAD_LETTER_SAMPLE: usize = 1024;

/// The most outcomes the writer stores in one pipeline.
const WRITE_BATCH: usize = 1024;

/// How long the writer holds `started` notes for an outcome to join them (see `next_writes`).
const NOTE_HOLD: Duration = Duration::from_millis(2);

/// The task record a write updates (docs/protocol.md, "Addition 1"): the task name and the
/// envelope's `keep` (ms), when the producer asked for a record.
pub(super) type Record = Option<(String, u64)>;

/// The record of `envelope`'s task, if its producer asked for one.
pub(super) fn record_of(envelope: &TaskEnvelope) -> Record {
    envelope.keep.map(|keep| (envelope.task.clone(), keep))
}

/// The workflow a write counts a member of (docs/protocol.md, "Addition 5"): where the member is,
/// and its task name.
pub(super) type Flow = Option<(FlowRef, String)>;

/// The workflow `envelope`'s task is a member of, if any.
pub(super) fn flow_of(envelope: &TaskEnvelope) -> Flow {
    envelope
        .flow
        .clone()
        .map(|flow| (flow, envelope.task.clone()))
}

/// An outcome to store.
pub(super) enum Write {
    /// A result for the caller; then the entry is acknowledged.
    Result {
        held: Held,
        reply: Option<String>,
        result: ResultEnvelope,
        record: Record,
        flow: Flow,
    },
    /// A dead letter (and, when the envelope could be read, its result: `lost`, or the last run's
    /// when its retries ran out, for the reply list and the record); then the entry is
    /// acknowledged.
    Dead {
        held: Held,
        letter: Vec<(&'static str, Vec<u8>)>,
        reply: Option<String>,
        result: Option<ResultEnvelope>,
        record: Record,
        flow: Flow,
    },
    /// An unstarted task put back on its stream; then the held entry is acknowledged.
    HandBack { held: Held, envelope: Vec<u8> },
    /// A `started` note for a caller that asked for one (the envelope's `started`) and the
    /// `running` state of a record; nothing is acknowledged.
    Started {
        reply: Option<String>,
        note: ResultEnvelope,
        record: Record,
    },
    /// A run that ended in an error its retry policy names (Addition 2): the task goes to the
    /// delayed set as `member` (priority digit and envelope) due at `note.due`, the caller gets the
    /// `retrying` note, the record `queued` with `errors`; then the entry is acknowledged.
    Retry {
        held: Held,
        member: Vec<u8>,
        reply: Option<String>,
        note: ResultEnvelope,
        record: Record,
        /// The envelope's `errors` after this run, MessagePack.
        errors: Vec<u8>,
    },
    /// A task whose name's rate limit gave it a later start (Addition 3): it goes to the delayed
    /// set as `member` (priority digit and envelope, with its `slot`) due at `due`; then the entry
    /// is acknowledged.
    Defer {
        held: Held,
        member: Vec<u8>,
        due: u64,
    },
}

impl Write {
    /// The entry acknowledged once this is stored; none for a note.
    fn held(&self) -> Option<&Held> {
        match self {
            Write::Result { held, .. }
            | Write::Dead { held, .. }
            | Write::HandBack { held, .. }
            | Write::Retry { held, .. }
            | Write::Defer { held, .. } => Some(held),
            Write::Started { .. } => None,
        }
    }
}

/// One pipeline for a batch of outcomes. Within it, each outcome is stored before its entry is
/// acknowledged (rule 1): the results and dead letters come first, then one `XACK` and one `XDEL` per
/// stream.
fn build_writes(batch: &[Write], keys: &Keys, ttl_ms: u64, dead_max: usize) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    let mut replies: HashSet<&str> = HashSet::new();
    let mut acks: HashMap<usize, Vec<&str>> = HashMap::new();
    // A `started` note (and `running` record) is pointless beside its task's outcome.
    let answered: HashSet<&str> = batch
        .iter()
        .filter_map(|w| match w {
            Write::Result { result, .. } => Some(result.id.as_str()),
            Write::Retry { note, .. } => Some(note.id.as_str()),
            _ => None,
        })
        .collect();
    for write in batch {
        match write {
            Write::Result {
                reply,
                result,
                record,
                flow,
                ..
            } => {
                let encoded = result.encode();
                if let Some(reply) = reply {
                    pipe.cmd("LPUSH").arg(reply).arg(&encoded).ignore();
                    replies.insert(reply);
                }
                if result.status == ResultStatus::Cancelled {
                    pipe.cmd("DEL").arg(keys.tombstone(&result.id)).ignore();
                }
                if let Some((task, keep)) = record {
                    let state = RecordState::of(result.status);
                    write_ended(&mut pipe, keys, task, *keep, state, result, &encoded);
                }
                // After the member's record, before its entry's acknowledgement (Addition 5).
                if let Some((flow, task)) = flow {
                    workflow::count(&mut pipe, keys, flow, task, result);
                }
            }
            Write::Dead {
                letter,
                reply,
                result,
                record,
                flow,
                ..
            } => {
                let mut cmd = redis::cmd("XADD");
                cmd.arg(&keys.dead)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(dead_max)
                    .arg("*");
                for (field, value) in letter {
                    cmd.arg(*field).arg(value);
                }
                pipe.add_command(cmd).ignore();
                if let Some(result) = result {
                    let encoded = result.encode();
                    if let Some(reply) = reply {
                        pipe.cmd("LPUSH").arg(reply).arg(&encoded).ignore();
                        replies.insert(reply);
                    }
                    if let Some((task, keep)) = record {
                        let dead = RecordState::Dead;
                        write_ended(&mut pipe, keys, task, *keep, dead, result, &encoded);
                    }
                    if let Some((flow, task)) = flow {
                        workflow::count(&mut pipe, keys, flow, task, result);
                    }
                }
            }
            Write::Defer { member, due, .. } => {
                pipe.cmd("ZADD")
                    .arg(&keys.delayed)
                    .arg(*due)
                    .arg(member)
                    .ignore();
            }
            Write::HandBack { held, envelope } => {
                pipe.cmd("XADD")
                    .arg(&keys.streams[held.0])
                    .arg("*")
                    .arg(ENTRY_FIELD)
                    .arg(envelope)
                    .ignore();
            }
            Write::Started {
                reply,
                note,
                record,
            } => {
                if !answered.contains(note.id.as_str()) {
                    if let Some(reply) = reply {
                        pipe.cmd("LPUSH").arg(reply).arg(note.encode()).ignore();
                        replies.insert(reply);
                    }
                    if let Some((task, keep)) = record {
                        let attempts = note.attempts.to_string();
                        record::write(
                            &mut pipe,
                            &keys.record(&note.id),
                            RecordState::Running,
                            *keep,
                            &[
                                ("task", task.as_bytes()),
                                ("attempts", attempts.as_bytes()),
                                ("worker", note.worker.as_bytes()),
                            ],
                        );
                    }
                }
            }
            Write::Retry {
                member,
                reply,
                note,
                record,
                errors,
                ..
            } => {
                // The task waits in Redis for its retry; moved to its stream like any delayed task.
                pipe.cmd("ZADD")
                    .arg(&keys.delayed)
                    .arg(note.due.unwrap_or(0))
                    .arg(member)
                    .ignore();
                if let Some(reply) = reply {
                    pipe.cmd("LPUSH").arg(reply).arg(note.encode()).ignore();
                    replies.insert(reply);
                }
                if let Some((task, keep)) = record {
                    let due = note.due.unwrap_or(0).to_string();
                    record::write(
                        &mut pipe,
                        &keys.record(&note.id),
                        RecordState::Queued,
                        *keep,
                        &[
                            ("task", task.as_bytes()),
                            ("attempts", b"0"),
                            ("worker", note.worker.as_bytes()),
                            ("errors", errors),
                            ("due", due.as_bytes()),
                        ],
                    );
                }
            }
        }
        if let Some((stream, id)) = write.held() {
            acks.entry(*stream).or_default().push(id);
        }
    }
    for reply in replies {
        pipe.cmd("PEXPIRE").arg(reply).arg(ttl_ms).ignore();
    }
    for (stream, ids) in acks {
        let key = &keys.streams[stream];
        pipe.cmd("XACK").arg(key).arg(GROUP).arg(&ids).ignore();
        pipe.cmd("XDEL").arg(key).arg(&ids).ignore();
    }
    pipe
}

/// The record write of a task that ended (or was dead-lettered) with `result` (`encoded`).
fn write_ended(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    task: &str,
    keep: u64,
    state: RecordState,
    result: &ResultEnvelope,
    encoded: &[u8],
) {
    let attempts = result.attempts.to_string();
    record::write(
        pipe,
        &keys.record(&result.id),
        state,
        keep,
        &[
            ("task", task.as_bytes()),
            ("attempts", attempts.as_bytes()),
            ("worker", result.worker.as_bytes()),
            ("result", encoded),
        ],
    );
}

impl Shared {
    /// The outcome of a task cancelled before it started (rules 4 and 5).
    pub(super) fn cancelled_result(&self, job: Job) -> Write {
        Write::Result {
            held: (job.stream, job.entry),
            record: record_of(&job.envelope),
            flow: flow_of(&job.envelope),
            reply: job.envelope.reply,
            result: ResultEnvelope {
                v: PROTOCOL_VERSION,
                id: job.envelope.id,
                status: ResultStatus::Cancelled,
                payload: None,
                error: Some("the task was cancelled before a worker started it".to_owned()),
                attempts: job.attempt,
                worker: self.consumer.clone(),
                exit_code: None,
                signal: None,
                due: None,
            },
        }
    }

    /// A dead letter for `entry`, and a `lost` result for its caller when the envelope is readable.
    pub(super) fn dead_letter(
        &self,
        held: Held,
        entry: &Entry,
        envelope: Option<&TaskEnvelope>,
        attempts: u32,
        reason: String,
    ) -> Write {
        let mut letter: Vec<(&'static str, Vec<u8>)> = vec![
            ("reason", reason.clone().into_bytes()),
            ("stream", self.keys.streams[held.0].clone().into_bytes()),
            ("entry", held.1.clone().into_bytes()),
            ("attempts", attempts.to_string().into_bytes()),
            ("worker", self.consumer.clone().into_bytes()),
            ("at", unix_ms().to_string().into_bytes()),
        ];
        if let Some(envelope) = envelope {
            letter.push(("id", envelope.id.clone().into_bytes()));
            letter.push(("task", envelope.task.clone().into_bytes()));
        }
        // The entry itself, so the task can be inspected and re-queued; only a sample when oversized.
        let raw = entry
            .field(ENTRY_FIELD)
            .map(<[u8]>::to_vec)
            .unwrap_or_else(|| {
                let mut flat = Vec::new();
                for (k, v) in &entry.fields {
                    flat.extend_from_slice(k);
                    flat.push(b'=');
                    flat.extend_from_slice(v);
                    flat.push(b'\n');
                }
                flat
            });
        if raw.len() > self.options.max_payload {
            letter.push(("sample", raw[..DEAD_LETTER_SAMPLE.min(raw.len())].to_vec()));
            letter.push(("truncated", b"1".to_vec()));
        } else {
            letter.push((ENTRY_FIELD, raw));
        }
        let result = envelope.map(|e| ResultEnvelope {
            v: PROTOCOL_VERSION,
            id: e.id.clone(),
            status: ResultStatus::Lost,
            payload: None,
            error: Some(reason),
            attempts,
            worker: self.consumer.clone(),
            exit_code: None,
            signal: None,
            due: None,
        });
        Write::Dead {
            held,
            letter,
            reply: envelope.and_then(|e| e.reply.clone()),
            result,
            record: envelope.and_then(record_of),
            flow: envelope.and_then(flow_of),
        }
    }

    /// The writer thread: stores outcomes in batches until every sender is gone and nothing is
    /// left.
    pub(super) fn write_loop(&self, mut conn: Connection, writes: &Receiver<Write>) {
        let ttl_ms = u64::try_from(self.options.result_ttl.as_millis()).unwrap_or(u64::MAX);
        let dead_max = self.options.dead_letter_max;
        loop {
            let Some(batch) = next_writes(writes) else {
                return;
            };
            let pipe = build_writes(&batch, &self.keys, ttl_ms, dead_max);
            loop {
                match pipe.exec(&mut conn) {
                    Ok(()) => break,
                    Err(error) if conn::is_connection_error(&error) => {
                        match self.broker.reconnect(&self.never, "worker") {
                            Some(fresh) => conn = fresh,
                            None => return,
                        }
                    }
                    // The group vanished with a Redis restart: the results, written before the
                    // acknowledgements in the pipeline, are stored; the entries are gone.
                    Err(error) if conn::is_nogroup(&error) => break,
                    Err(error) => {
                        // The batch's entries stay pending; once this worker stops renewing them
                        // (below), their lease expires and they are delivered again.
                        eprintln!(
                            "martelli cluster worker {}: storing {} outcome(s) failed: {error}",
                            self.consumer,
                            batch.len()
                        );
                        break;
                    }
                }
            }
            let c = &self.counters;
            let mut held = self.held.lock();
            for write in &batch {
                let Some(entry) = write.held() else {
                    continue;
                };
                held.remove(entry);
                let counter = match write {
                    Write::Result { result, .. } if result.status == ResultStatus::Ok => {
                        &c.succeeded
                    }
                    Write::Result { result, .. } if result.status == ResultStatus::Cancelled => {
                        &c.cancelled
                    }
                    Write::Result { .. } => &c.failed,
                    Write::Dead { .. } => &c.dead_lettered,
                    Write::HandBack { .. } => &c.handed_back,
                    Write::Retry { .. } => &c.retried,
                    Write::Defer { .. } => &c.rate_limited,
                    Write::Started { .. } => continue,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            self.slot_freed.notify_all();
        }
    }
}

/// The next batch of outcomes to store; `None` once every sender is gone and nothing is left. A
/// batch of `started` notes alone is held up to [`NOTE_HOLD`] for an outcome to join it: a short
/// task's note and result then cost one pipeline (and the note is left out, see [`build_writes`]),
/// not two round trips in a row.
fn next_writes(writes: &Receiver<Write>) -> Option<Vec<Write>> {
    let is_note = |w: &Write| matches!(w, Write::Started { .. });
    let mut batch = vec![writes.recv().ok()?];
    batch.extend(writes.try_iter().take(WRITE_BATCH - 1));
    let until = Instant::now() + NOTE_HOLD;
    while batch.iter().all(is_note) && batch.len() < WRITE_BATCH {
        // The channel is empty here, so the next write ends this wait.
        match writes.recv_deadline(until) {
            Ok(write) => {
                batch.push(write);
                batch.extend(writes.try_iter().take(WRITE_BATCH - batch.len()));
            }
            Err(_) => break,
        }
    }
    Some(batch)
}
