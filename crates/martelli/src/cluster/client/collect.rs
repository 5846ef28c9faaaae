//! The collector thread: pops results from the reply list in batches, completes each task's
//! future once, marks futures running on `started` notes, and resolves those past their deadline.

use super::{COLLECT_BATCH, COLLECT_POLL, Inner, lost};
use crate::cluster::conn;
use crate::cluster::envelope::{ResultEnvelope, ResultStatus};
use crate::cluster::lost::Looks;
use crate::error::{TaskError, TaskFailure, TaskResult};
use redis::Connection;
use std::cmp::Reverse;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A result on the wire as the caller's outcome.
pub(crate) fn outcome(result: ResultEnvelope, timeout: Option<Duration>) -> TaskResult<Vec<u8>> {
    let message = || result.error.clone().unwrap_or_default();
    match result.status {
        ResultStatus::Ok => Ok(result.payload.unwrap_or_default()),
        ResultStatus::Failed => Err(TaskError::Failed(TaskFailure::from_message(message()))),
        ResultStatus::Panicked => Err(TaskError::Panicked { message: message() }),
        ResultStatus::TimedOut => Err(TaskError::TimedOut {
            after: timeout.unwrap_or_default(),
        }),
        ResultStatus::Lost => Err(TaskError::Lost {
            attempts: result.attempts,
            reason: message(),
        }),
        ResultStatus::Cancelled => Err(TaskError::Cancelled),
        // Notes never get here (`deliver` takes them); a reader treats an unexpected one as an
        // unknown status.
        ResultStatus::Unknown | ResultStatus::Started | ResultStatus::Retrying => {
            Err(TaskError::Failed(TaskFailure::from_message(format!(
                "the worker reported a status this client does not know: {}",
                message()
            ))))
        }
        ResultStatus::WorkerDied => Err(TaskError::WorkerDied(crate::error::WorkerDeath {
            exit_code: result.exit_code,
            signal: result.signal,
            stderr_tail: message(),
        })),
    }
}

impl Inner {
    pub(super) fn collector_stop_if_idle(&self) {
        if self.outbox.lock().closed && self.state.lock().pending.is_empty() {
            self.collector_stop.store(true, Ordering::Release);
        }
    }

    /// Pops results until the client is closed and nothing is pending.
    pub(super) fn collect_loop(self: Arc<Self>, mut conn: Connection) {
        let mut looks = Looks::new(Instant::now());
        loop {
            let wait = {
                // Lock order: outbox before state (as in `enqueue`). Once closed, nothing new becomes
                // pending, so an empty map seen after this read means the collector is done.
                let closed = self.outbox.lock().closed;
                let state = self.state.lock();
                if closed && state.pending.is_empty() {
                    return;
                }
                match state.deadlines.peek() {
                    Some(Reverse((at, _))) => at
                        .saturating_duration_since(Instant::now())
                        .min(COLLECT_POLL),
                    None => COLLECT_POLL,
                }
            };
            let done = match self.pop(&mut conn, wait) {
                Ok(_) => self
                    .look_for_lost(&mut conn, &mut looks)
                    .map_err(|e| (e, "looking for tasks that vanished from the broker")),
                Err(error) => Err((error, "reading results")),
            };
            match done {
                Ok(()) => {}
                Err((error, _)) if conn::is_connection_error(&error) => {
                    match self.broker.reconnect(&self.collector_stop, "client") {
                        Some(fresh) => {
                            conn = fresh;
                            looks.reconnected();
                        }
                        None => return,
                    }
                }
                Err((error, what)) => {
                    eprintln!(
                        "martelli cluster client ({}): {what} failed: {error}",
                        self.reply
                    );
                    std::thread::sleep(COLLECT_POLL);
                }
            }
            self.expire_deadlines();
        }
    }

    /// Pops and delivers one batch of results, waiting at most `wait` for one; returns how many
    /// items it popped.
    pub(super) fn pop(&self, conn: &mut Connection, wait: Duration) -> redis::RedisResult<usize> {
        // BLMPOP's timeout is in seconds; 0 would block for ever.
        let seconds = wait.as_secs_f64().max(0.001);
        let value: redis::Value = redis::cmd("BLMPOP")
            .arg(seconds)
            .arg(1)
            .arg(&self.reply)
            .arg("RIGHT")
            .arg("COUNT")
            .arg(COLLECT_BATCH)
            .query(conn)?;
        Ok(self.deliver(&value))
    }

    /// Completes the futures of the results in a `BLMPOP` reply: `[key, [result, …]]` or nil, and
    /// marks running those whose `started` note it holds. Returns how many items it held.
    pub(super) fn deliver(&self, value: &redis::Value) -> usize {
        crate::chaos::point();
        let parts = conn::array(value);
        let Some(results) = parts.get(1) else {
            return 0;
        };
        let results = conn::array(results);
        let mut done = Vec::new();
        let mut started = Vec::new();
        {
            let mut state = self.state.lock();
            for raw in results {
                let Some(bytes) = conn::bytes(raw) else {
                    continue;
                };
                let result = match ResultEnvelope::decode(bytes) {
                    Ok(result) => result,
                    Err(error) => {
                        eprintln!(
                            "martelli cluster client: dropped a malformed result on {}: {error}",
                            self.reply
                        );
                        continue;
                    }
                };
                if result.status == ResultStatus::Retrying {
                    // A run failed and the task waits in the delayed set for its retry
                    // (Addition 2): that is where to look for it now (see `lost.rs`).
                    if let (Some(pending), Some(due_ms)) =
                        (state.pending.get_mut(&result.id), result.due)
                    {
                        pending.placed = lost::Placed::Delayed { due_ms };
                        pending.missing_since = None;
                    }
                    continue;
                }
                if result.status == ResultStatus::Started {
                    if let Some(pending) = state.pending.get_mut(&result.id) {
                        pending.started = pending.started.max(result.attempts);
                        started.push(pending.sink.clone());
                    }
                    continue;
                }
                match state.pending.remove(&result.id) {
                    Some(pending) => done.push((pending, result)),
                    None => {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            state.completing += done.len();
        }
        for sink in started {
            sink.start();
        }
        let n = done.len();
        for (pending, result) in done {
            let outcome = outcome(result, pending.timeout);
            pending.sink.complete(outcome);
        }
        self.completed(n);
        results.len()
    }

    /// Resolves tasks whose deadline passed as timed out.
    pub(super) fn expire_deadlines(&self) {
        let now = Instant::now();
        let mut done = Vec::new();
        {
            let mut state = self.state.lock();
            while let Some(Reverse((at, _))) = state.deadlines.peek() {
                if *at > now {
                    break;
                }
                let Some(Reverse((_, id))) = state.deadlines.pop() else {
                    break;
                };
                if let Some(pending) = state.pending.remove(&id) {
                    done.push(pending);
                }
            }
            state.completing += done.len();
        }
        let n = done.len();
        for pending in done {
            let after = pending.timeout.unwrap_or_default();
            pending.sink.complete(Err(TaskError::TimedOut { after }));
        }
        self.completed(n);
    }
}
