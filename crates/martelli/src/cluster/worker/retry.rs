//! Retries with backoff (docs/protocol.md, "Addition 2"): a run that ends in an error its
//! envelope's retry policy names puts the task in the delayed set, due after the policy's delay,
//! with this run's error appended to the envelope's `errors`; with no retry left, the task is
//! dead-lettered with every run's error and its caller gets the last run's outcome.
//!
//! The retry is written in the writer's pipeline before the entry is acknowledged (rule 1), so a
//! worker that dies in between leaves the entry pending: it is reclaimed and the run repeated.
//! Nothing of a retry lives in a worker's memory.

use super::execute::Ended;
use super::write::{Write, record_of};
use super::{Held, Shared};
use crate::cluster::conn::Entry;
use crate::cluster::envelope::{
    AttemptError, ENTRY_FIELD, ResultEnvelope, ResultStatus, Retry, TaskEnvelope,
};
use crate::cluster::{PROTOCOL_VERSION, unix_ms};

impl Shared {
    /// The write for a run that ended in an error `policy` (the envelope's) names: a retry while retries
    /// are left, otherwise the dead letter (with the run's outcome for the caller).
    pub(super) fn retry_or_give_up(
        &self,
        held: Held,
        envelope: &TaskEnvelope,
        policy: &Retry,
        attempt: u32,
        ended: Ended,
    ) -> Write {
        let run = envelope.retries.saturating_add(1);
        let mut errors = envelope.errors.clone();
        errors.push(AttemptError {
            attempt: run,
            status: ended.status.as_str().to_owned(),
            error: ended.error.clone().unwrap_or_default(),
            worker: self.consumer.clone(),
            at: unix_ms(),
        });
        let errors_bytes = rmp_serde::to_vec_named(&errors).unwrap_or_default();
        if envelope.retries < policy.max() {
            let due = unix_ms().saturating_add(policy.delay_ms(envelope.retries, random_unit()));
            let mut again = envelope.clone();
            again.retries = run;
            again.errors = errors;
            // Each run gets its `max_attempts` deliveries again.
            again.attempts = 0;
            // A retry takes a new start time under its name's rate limit.
            again.slot = None;
            if let Ok(bytes) = again.encode() {
                let mut member = Vec::with_capacity(bytes.len() + 1);
                // The priority digit: the stream index (0 high, 1 normal, 2 low).
                member.push(b'0' + u8::try_from(held.0).unwrap_or(1));
                member.extend_from_slice(&bytes);
                return Write::Retry {
                    held,
                    member,
                    reply: envelope.reply.clone().filter(|_| envelope.started),
                    note: ResultEnvelope {
                        v: PROTOCOL_VERSION,
                        id: envelope.id.clone(),
                        status: ResultStatus::Retrying,
                        payload: None,
                        error: ended.error,
                        attempts: attempt,
                        worker: self.consumer.clone(),
                        exit_code: None,
                        signal: None,
                        due: Some(due),
                    },
                    record: record_of(envelope),
                    errors: errors_bytes,
                };
            }
            // An envelope that decoded always encodes again; should it not, the task gives up
            // below rather than be lost.
        }
        let last = ended.error.clone().unwrap_or_default();
        let reason = format!(
            "retries exhausted: {run} run(s) ended in an error the task's retry policy names \
             (at most {} retries); the last ended as {}: {last}",
            policy.max(),
            ended.status.as_str()
        );
        let entry = Entry {
            id: held.1.clone(),
            fields: match envelope.encode() {
                Ok(bytes) => vec![(ENTRY_FIELD.as_bytes().to_vec(), bytes)],
                Err(_) => Vec::new(),
            },
        };
        let mut write = self.dead_letter(held, &entry, Some(envelope), attempt, reason);
        if let Write::Dead { letter, result, .. } = &mut write {
            letter.push(("errors", errors_bytes));
            letter.push(("runs", run.to_string().into_bytes()));
            // The caller gets the last run's outcome, not `lost`: the task ran, and failed.
            if let Some(result) = result {
                result.status = ended.status;
                result.payload = ended.payload;
                result.error = Some(format!(
                    "{last} (run {run} of at most {}: its retries are exhausted; every run's \
                     error is in the dead letter)",
                    policy.max().saturating_add(1)
                ));
                result.exit_code = ended.death.and_then(|(code, _)| code);
                result.signal = ended.death.and_then(|(_, signal)| signal);
            }
        }
        write
    }
}

/// A number in `[0, 1)` for the jitter, from the random bits of a v4 UUID (no extra dependency).
fn random_unit() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() as u64 >> 11;
    bits as f64 / (1u64 << 53) as f64
}
