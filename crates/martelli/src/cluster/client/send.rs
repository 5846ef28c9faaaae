//! Submitting: a task's envelope goes to the outbox, and the sender thread writes everything
//! waiting in one pipeline, recording where each task went.

use super::{Inner, Pending, SubmitOptions};
use crate::cluster::conn;
use crate::cluster::envelope::{ENTRY_FIELD, TaskEnvelope};
use crate::cluster::error::ClusterError;
use crate::cluster::lost::{OnLost, Placed};
use crate::cluster::record::UNENDED_GRACE_MS;
use crate::cluster::sink::SharedSink;
use crate::cluster::{Keys, PROTOCOL_VERSION, unix_ms};
use redis::Connection;
use std::cmp::Reverse;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// The most envelopes the sender writes in one pipeline.
const SEND_BATCH: usize = 1024;

/// How long the record of a task sent with [`Client::send`](super::Client::send) stays after it
/// ends, unless the options say otherwise.
const DETACHED_KEEP: std::time::Duration = std::time::Duration::from_secs(3600);

/// Where an envelope goes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Target {
    Stream(usize),
    /// The delayed set, with the due time in Unix milliseconds.
    Delayed(u64, usize),
    /// No envelope: the tombstone of the cancelled task `id`.
    Tombstone,
}

pub(super) struct Outgoing {
    pub(super) id: String,
    pub(super) target: Target,
    pub(super) bytes: Arc<Vec<u8>>,
    /// The task's record to write before the task (Addition 1): its name and `keep` (ms).
    pub(super) record: Option<(String, u64)>,
}

#[derive(Default)]
pub(super) struct Outbox {
    pub(super) items: Vec<Outgoing>,
    /// Envelopes taken by the sender and not yet confirmed by the broker.
    pub(super) in_flight: usize,
    pub(super) closed: bool,
}

/// The retry policy task `task` declares in this program, if any.
fn declared_retry(task: &str) -> Option<crate::cluster::envelope::Retry> {
    crate::task::Registry::get()
        .ok()?
        .options(task)
        .and_then(crate::task::TaskSettings::retry)
}

impl Inner {
    pub(super) fn enqueue(
        &self,
        task: &str,
        payload: Vec<u8>,
        options: &SubmitOptions,
        sink: Option<SharedSink>,
    ) -> Result<String, ClusterError> {
        crate::chaos::point();
        let max_attempts = options.max_attempts.unwrap_or(self.max_attempts);
        if max_attempts == 0 {
            return Err(ClusterError::InvalidOption(
                "max_attempts must be at least 1".to_owned(),
            ));
        }
        let id = match &options.id {
            Some(id) if id.is_empty() => {
                return Err(ClusterError::InvalidOption(
                    "a task id must not be empty".to_owned(),
                ));
            }
            Some(id) => id.clone(),
            None => uuid::Uuid::new_v4().simple().to_string(),
        };
        // A task nobody waits for is looked up by id: it keeps a record (an hour by default).
        let keep = options
            .keep
            .or(self.keep)
            .or(sink.is_none().then_some(DETACHED_KEEP))
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1));
        let now = Instant::now();
        let deadline = options.timeout.and_then(|t| now.checked_add(t));
        let envelope = TaskEnvelope {
            v: PROTOCOL_VERSION,
            id: id.clone(),
            task: task.to_owned(),
            payload,
            reply: sink.is_some().then(|| self.reply.clone()),
            deadline: options.timeout.map(|t| {
                unix_ms().saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
            }),
            max_attempts,
            attempts: 0,
            started: sink.is_some(),
            keep,
            // A retry policy the task declares (`#[martelli::task(retries = …)]`) unless the
            // submission has its own.
            retry: options.retry.clone().or_else(|| declared_retry(task)),
            retries: 0,
            errors: Vec::new(),
            slot: None,
            flow: None,
        };
        let bytes = Arc::new(envelope.encode()?);
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
        let resubmit = (self.on_lost == OnLost::Resubmit).then(|| (bytes.clone(), target));
        // Registered before it is sent, so that the fastest result finds its future.
        {
            let mut outbox = self.outbox.lock();
            if outbox.closed {
                return Err(ClusterError::Closed);
            }
            // A task sent without a sink (no reply wanted) is not tracked: it only goes out.
            if let Some(sink) = sink {
                let mut state = self.state.lock();
                state.pending.insert(
                    id.clone(),
                    Pending {
                        sink,
                        timeout: options.timeout,
                        placed: Placed::Unsent,
                        resubmit,
                        started: 0,
                        submitted: now,
                        missing_since: None,
                    },
                );
                if let Some(deadline) = deadline {
                    state.deadlines.push(Reverse((deadline, id.clone())));
                }
            }
            outbox.items.push(Outgoing {
                id: id.clone(),
                target,
                bytes,
                record: keep.map(|keep| (task.to_owned(), keep)),
            });
            if outbox.items.len() == 1 {
                self.outbox_ready.notify_one();
            }
        }
        Ok(id)
    }

    pub(super) fn close(&self) {
        let mut outbox = self.outbox.lock();
        outbox.closed = true;
        self.outbox_ready.notify_one();
    }

    /// Writes queued envelopes until the client is closed and the outbox is empty.
    pub(super) fn send_loop(self: Arc<Self>, mut conn: Connection) {
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
            let tombstones: Vec<&str> = batch
                .iter()
                .filter(|item| matches!(item.target, Target::Tombstone))
                .map(|item| item.id.as_str())
                .collect();
            if !tombstones.is_empty() {
                self.resolve_cancelled(&tombstones);
            }
            let pipe = self.writes(&batch, !tombstones.is_empty());
            let replies = loop {
                match pipe.query::<Vec<redis::Value>>(&mut conn) {
                    Ok(replies) => break Some(replies),
                    Err(error) if conn::is_connection_error(&error) => {
                        match self.broker.reconnect(&self.never, "client") {
                            Some(fresh) => {
                                conn = fresh;
                                self.sender_reconnected.store(true, Ordering::Release);
                            }
                            None => return,
                        }
                    }
                    Err(error) => {
                        let reason = format!("the broker refused the task: {error}");
                        self.fail(batch.iter().map(|item| item.id.as_str()), &reason);
                        break None;
                    }
                }
            };
            if let Some(replies) = replies {
                self.placed(&batch, &replies);
            }
            if !tombstones.is_empty() {
                self.forget(&tombstones);
            }
            self.outbox.lock().in_flight = 0;
            self.sent.notify_all();
        }
        self.collector_stop_if_idle();
    }

    /// The pipeline that writes a batch: `XADD` (its reply, the entry id, is kept), `ZADD`, or the
    /// `SET` of a tombstone per item, then the queue's `cancels` flag when there were tombstones.
    pub(super) fn writes(&self, batch: &[Outgoing], tombstones: bool) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        for item in batch {
            if let Some((task, keep)) = &item.record {
                // The record first (Addition 1): a worker's `running` never precedes `queued`.
                let key = self.keys.record(&item.id);
                pipe.cmd("HSET")
                    .arg(&key)
                    .arg("state")
                    .arg("queued")
                    .arg("task")
                    .arg(task)
                    .arg("attempts")
                    .arg(0)
                    .arg("updated")
                    .arg(unix_ms())
                    .ignore();
                pipe.cmd("PEXPIRE")
                    .arg(&key)
                    .arg(keep.saturating_add(UNENDED_GRACE_MS))
                    .ignore();
            }
            match item.target {
                Target::Tombstone => {
                    pipe.cmd("SET")
                        .arg(self.keys.tombstone(&item.id))
                        .arg(1)
                        .arg("PX")
                        .arg(self.cancel_ttl_ms)
                        .ignore();
                }
                Target::Stream(index) => {
                    pipe.cmd("XADD")
                        .arg(&self.keys.streams[index])
                        .arg("*")
                        .arg(ENTRY_FIELD)
                        .arg(item.bytes.as_slice());
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
        if tombstones {
            // Tells workers that tombstones exist, so they look for them (see the worker's fetch).
            pipe.cmd("SET")
                .arg(self.keys.cancels())
                .arg(1)
                .arg("PX")
                .arg(self.cancel_ttl_ms)
                .ignore();
        }
        pipe
    }

    /// Records where the broker put each task of a written batch (`replies`: one entry id per
    /// `XADD`, in order).
    pub(super) fn placed(&self, batch: &[Outgoing], replies: &[redis::Value]) {
        let mut entries = replies.iter();
        let mut state = self.state.lock();
        for item in batch {
            let placed = match item.target {
                Target::Tombstone => continue,
                Target::Stream(index) => match entries.next().and_then(conn::string) {
                    Some(entry) => Placed::Stream { index, entry },
                    None => continue,
                },
                Target::Delayed(due_ms, _) => Placed::Delayed { due_ms },
            };
            if let Some(pending) = state.pending.get_mut(&item.id) {
                pending.placed = placed;
            }
        }
    }
}
