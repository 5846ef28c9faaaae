//! Tasks that vanish from the broker (a restart without persistence, an eviction): looking for
//! them by the rule of `cluster/lost.rs`, then queueing them again or failing them.

use super::send::{Outgoing, Target};
use super::{COLLECT_BATCH, Inner, Pending};
use crate::cluster::envelope::TaskEnvelope;
use crate::cluster::lost::{self, Looks, Placed, Probe, Scope};
use crate::cluster::unix_ms;
use crate::error::TaskError;
use redis::Connection;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The envelope and target that queue a vanished task again, with the attempts it has used; or
/// why it is lost instead.
fn again_envelope(pending: &Pending) -> Result<(Arc<Vec<u8>>, Target), String> {
    const VANISHED: &str = "the task vanished from the broker: it is in no stream, not held by a \
                            live worker, not delayed, and has no result (the broker restarted \
                            without persistence, or its keys were deleted or evicted)";
    let Some((bytes, target)) = &pending.resubmit else {
        return Err(VANISHED.to_owned());
    };
    let mut envelope = TaskEnvelope::decode(bytes).map_err(|e| format!("{VANISHED}; {e}"))?;
    envelope.attempts = envelope.attempts.max(pending.started);
    if envelope.attempts >= envelope.max_attempts {
        return Err(format!(
            "{VANISHED}, after its last attempt ({} of max_attempts = {})",
            envelope.attempts, envelope.max_attempts
        ));
    }
    let bytes = envelope
        .encode()
        .map_err(|e| format!("{VANISHED}; it could not be encoded again: {e}"))?;
    let target = match *target {
        Target::Delayed(due, index) if due <= unix_ms() => Target::Stream(index),
        other => other,
    };
    Ok((Arc::new(bytes), target))
}

impl Inner {
    /// Looks for tasks that vanished from the broker when a look is due, and queues them again or
    /// fails them (see `lost.rs` for the rule).
    pub(super) fn look_for_lost(
        &self,
        conn: &mut Connection,
        looks: &mut Looks,
    ) -> redis::RedisResult<()> {
        if self.sender_reconnected.swap(false, Ordering::AcqRel) {
            looks.reconnected();
        }
        let now = Instant::now();
        let waiting = !self.state.lock().pending.is_empty();
        let Some(scope) = looks.due(conn, now, waiting)? else {
            return Ok(());
        };
        let probes: Vec<Probe> = {
            let state = self.state.lock();
            state
                .pending
                .iter()
                .filter(|(_, p)| match scope {
                    Scope::All => true,
                    Scope::Older(age) => {
                        p.missing_since.is_some() || now.duration_since(p.submitted) >= age
                    }
                })
                .filter(|(_, p)| !matches!(p.placed, Placed::Unsent))
                .map(|(id, p)| Probe {
                    id: id.clone(),
                    placed: p.placed.clone(),
                })
                .collect()
        };
        let absent = looks.absent(conn, &self.keys, &probes)?;
        let mut absent_ids: HashSet<String> =
            absent.into_iter().map(|at| probes[at].id.clone()).collect();
        {
            let mut state = self.state.lock();
            for probe in probes.iter().filter(|p| !absent_ids.contains(&p.id)) {
                if let Some(pending) = state.pending.get_mut(&probe.id) {
                    pending.missing_since = None;
                }
            }
        }
        if absent_ids.is_empty() {
            return Ok(());
        }
        // A worker stores a result before it deletes the task's entry: what the reply list holds
        // now settles the tasks whose entries are gone because they are done.
        while self.pop(conn, Duration::ZERO)? == COLLECT_BATCH {}
        {
            let state = self.state.lock();
            absent_ids.retain(|id| state.pending.contains_key(id));
        }
        let found = lost::search(conn, &self.keys, &absent_ids)?;
        let mut vanished = Vec::new();
        {
            let mut state = self.state.lock();
            for id in &absent_ids {
                let Some(pending) = state.pending.get_mut(id) else {
                    continue;
                };
                if let Some((index, entry)) = found.moved.get(id) {
                    pending.placed = Placed::Stream {
                        index: *index,
                        entry: entry.clone(),
                    };
                    pending.missing_since = None;
                } else if found.held.contains(id) {
                    pending.missing_since = None;
                } else {
                    match pending.missing_since {
                        Some(since) if now.duration_since(since) >= lost::CONFIRM => {
                            vanished.push(id.clone());
                        }
                        Some(_) => {}
                        None => pending.missing_since = Some(now),
                    }
                }
            }
            if state.pending.values().any(|p| p.missing_since.is_some()) {
                looks.confirm_later(now);
            }
        }
        self.vanished(&vanished);
        Ok(())
    }

    /// Queues again, or fails, the tasks `ids` found nowhere at two looks.
    pub(super) fn vanished(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let mut again = Vec::new();
        let mut lost = Vec::new();
        {
            let mut state = self.state.lock();
            for id in ids {
                let Some(pending) = state.pending.get_mut(id) else {
                    continue;
                };
                match again_envelope(pending) {
                    Ok(item) => {
                        pending.placed = Placed::Unsent;
                        pending.missing_since = None;
                        pending.submitted = Instant::now();
                        again.push(Outgoing {
                            id: id.clone(),
                            target: item.1,
                            bytes: item.0,
                            // Its record, if any, was written when it was first sent.
                            record: None,
                        });
                    }
                    Err(reason) => {
                        if let Some(pending) = state.pending.remove(id) {
                            lost.push((pending, reason));
                        }
                    }
                }
            }
            state.completing += lost.len();
        }
        eprintln!(
            "martelli cluster client: {} task(s) vanished from the broker at {} (a restart without \
             persistence, or deleted keys?): {} queued again, {} failed as lost",
            ids.len(),
            self.broker.shown(),
            again.len(),
            lost.len()
        );
        self.resubmitted
            .fetch_add(again.len() as u64, Ordering::Relaxed);
        if !again.is_empty() {
            let mut outbox = self.outbox.lock();
            let was_empty = outbox.items.is_empty();
            outbox.items.extend(again);
            if was_empty {
                self.outbox_ready.notify_one();
            }
        }
        let n = lost.len();
        for (pending, reason) in lost {
            pending.sink.complete(Err(TaskError::Lost {
                attempts: pending.started,
                reason,
            }));
        }
        self.completed(n);
    }
}
