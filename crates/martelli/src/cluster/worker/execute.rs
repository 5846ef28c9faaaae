//! The executor threads: each runs one job at a time, on its own thread or (with
//! `WorkerOptions::processes`) on the worker's process pool, and sends the outcome to the writer.

use super::write::{Write, flow_of, record_of};
use super::{Held, Job, Shared};
use crate::cancel::{CancelToken, CurrentTokenGuard};
use crate::cluster::conn::Entry;
use crate::cluster::envelope::{ENTRY_FIELD, ResultEnvelope, ResultStatus, TaskEnvelope};
use crate::cluster::runner::RunError;
use crate::cluster::{PROTOCOL_VERSION, unix_ms};
use crossbeam_channel::Sender;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// How a task ended, before it becomes a result.
pub(super) struct Ended {
    pub(super) status: ResultStatus,
    pub(super) payload: Option<Vec<u8>>,
    pub(super) error: Option<String>,
    /// With `worker_died`: the exit code and the signal of the process that ran the task.
    pub(super) death: Option<(Option<i32>, Option<i32>)>,
}

impl Ended {
    fn new(status: ResultStatus, payload: Option<Vec<u8>>, error: Option<String>) -> Ended {
        Ended {
            status,
            payload,
            error,
            death: None,
        }
    }

    /// How a task run on the process pool ended. `Err` holds the reason for the dead letter of a
    /// task the pool's processes do not register.
    fn isolated(
        ran: crate::cluster::registered::Isolated,
        consumer: &str,
        task: &str,
    ) -> Result<Ended, String> {
        use crate::cluster::registered::Isolated;
        Ok(match ran {
            Isolated::Value(bytes) => Ended::new(ResultStatus::Ok, Some(bytes), None),
            Isolated::Failed(message) => Ended::new(ResultStatus::Failed, None, Some(message)),
            Isolated::Panicked(message) => Ended::new(ResultStatus::Panicked, None, Some(message)),
            Isolated::TimedOut => Ended::new(
                ResultStatus::TimedOut,
                None,
                Some(
                    "the task ran past its deadline; its process was killed with its group"
                        .to_owned(),
                ),
            ),
            Isolated::Cancelled => Ended::new(
                ResultStatus::Cancelled,
                None,
                Some(
                    "the task was cancelled while it ran; its process was killed with its group"
                        .to_owned(),
                ),
            ),
            Isolated::Died(how) => Ended {
                status: ResultStatus::WorkerDied,
                payload: None,
                error: Some(format!("the process running the task died: {how}")),
                death: Some((how.exit_code, how.signal)),
            },
            Isolated::Unknown => {
                return Err(format!(
                    "unknown task {task:?}: the worker processes of worker {consumer} do not \
                     register it (they must be the same program as the worker)"
                ));
            }
        })
    }

    /// The outcome of a task whose token fired while it ran (rule 5): `cancelled`, whatever it
    /// returned; a value it still returned stays in the payload, and the error says how it ended.
    fn into_cancelled(self) -> Ended {
        if self.status == ResultStatus::Cancelled {
            return self;
        }
        let how = match (self.status, &self.error) {
            (ResultStatus::Ok, _) => "it then returned a value".to_owned(),
            (status, Some(error)) => format!("it then ended as {}: {error}", status.as_str()),
            (status, None) => format!("it then ended as {}", status.as_str()),
        };
        Ended {
            status: ResultStatus::Cancelled,
            payload: self.payload,
            error: Some(format!(
                "the task was cancelled while it ran (its cancel token fired); {how}"
            )),
            death: None,
        }
    }
}

impl Shared {
    /// An executor thread: runs jobs until the fetch thread has gone and no job is left.
    pub(super) fn execute_loop(&self, out: &Sender<Write>) {
        for job in self.jobs.iter() {
            let write = self.execute(job, out);
            // The writer keeps its receiver until this thread's sender is gone.
            let _ = out.send(write);
        }
    }

    fn execute(&self, job: Job, out: &Sender<Write>) -> Write {
        crate::chaos::point();
        if job.token.is_cancelled() {
            // Its tombstone was found after it was fetched, before an executor took it (rule 5).
            return self.cancelled_result(job);
        }
        let Job {
            stream,
            entry,
            envelope,
            attempt,
            token,
        } = job;
        let held = (stream, entry);
        let ran = if envelope.deadline.is_some_and(|d| unix_ms() > d) {
            Ok(Ended::new(
                ResultStatus::TimedOut,
                None,
                Some("the task's deadline passed before a worker could start it".to_owned()),
            ))
        } else {
            self.announce_start(&envelope, attempt, out);
            match self.run_on_processes(&envelope, &token) {
                Some(isolated) => Ended::isolated(isolated, &self.consumer, &envelope.task),
                None => self.run_on_thread(&envelope, &token),
            }
        };
        let ended = match ran {
            Ok(ended) if token.is_cancelled() => ended.into_cancelled(),
            Ok(ended) => ended,
            Err(reason) => return self.dead_letter_unknown(held, &envelope, attempt, reason),
        };
        // Addition 2: an error the task's retry policy names queues it again, or, with no retry
        // left, dead-letters it with every run's error.
        let retry = envelope.retry.as_ref().filter(|r| {
            ended.status != ResultStatus::Cancelled && r.wants(ended.status, ended.error.as_deref())
        });
        if let Some(policy) = retry {
            return self.retry_or_give_up(held, &envelope, policy, attempt, ended);
        }
        Write::Result {
            held,
            record: record_of(&envelope),
            flow: flow_of(&envelope),
            reply: envelope.reply,
            result: ResultEnvelope {
                v: PROTOCOL_VERSION,
                id: envelope.id,
                status: ended.status,
                payload: ended.payload,
                error: ended.error,
                attempts: attempt,
                worker: self.consumer.clone(),
                exit_code: ended.death.and_then(|(code, _)| code),
                signal: ended.death.and_then(|(_, signal)| signal),
                due: None,
            },
        }
    }

    /// Queues a `started` note for the caller when its envelope asks for one: the writer stores it
    /// with the next batch, before the task's result.
    fn announce_start(&self, envelope: &TaskEnvelope, attempt: u32, out: &Sender<Write>) {
        let reply = envelope.reply.clone().filter(|_| envelope.started);
        let record = record_of(envelope);
        if reply.is_none() && record.is_none() {
            return;
        }
        let _ = out.send(Write::Started {
            reply,
            record,
            note: ResultEnvelope {
                v: PROTOCOL_VERSION,
                id: envelope.id.clone(),
                status: ResultStatus::Started,
                payload: None,
                error: None,
                attempts: attempt,
                worker: self.consumer.clone(),
                exit_code: None,
                signal: None,
                due: None,
            },
        });
    }

    /// Runs a task on this executor thread, with its token as the thread's current token so that
    /// `martelli::is_cancelled()` inside it sees a cancellation (rule 5). `Err` holds the reason
    /// for the dead letter of a task nobody registered.
    fn run_on_thread(&self, envelope: &TaskEnvelope, token: &CancelToken) -> Result<Ended, String> {
        let ran = {
            let _current = CurrentTokenGuard::enter(token);
            catch_unwind(AssertUnwindSafe(|| {
                self.runner.run(&envelope.task, &envelope.payload)
            }))
        };
        Ok(match ran {
            Ok(Ok(bytes)) => Ended::new(ResultStatus::Ok, Some(bytes), None),
            Ok(Err(RunError::Failed(failure))) => Ended::new(
                ResultStatus::Failed,
                None,
                Some(failure.message().to_owned()),
            ),
            Ok(Err(RunError::UnknownTask)) => {
                return Err(format!(
                    "unknown task {:?}: no task of that name is registered on worker {} \
                     (register it, or check the name the producer sends)",
                    envelope.task, self.consumer
                ));
            }
            Err(panic) => Ended::new(
                ResultStatus::Panicked,
                None,
                Some(crate::error::panic_message(panic.as_ref())),
            ),
        })
    }

    fn dead_letter_unknown(
        &self,
        held: Held,
        envelope: &TaskEnvelope,
        attempt: u32,
        reason: String,
    ) -> Write {
        let raw = Entry {
            id: held.1.clone(),
            fields: match envelope.encode() {
                Ok(bytes) => vec![(ENTRY_FIELD.as_bytes().to_vec(), bytes)],
                Err(_) => Vec::new(),
            },
        };
        self.dead_letter(held, &raw, Some(envelope), attempt, reason)
    }

    /// Runs a registered task on the worker's process pool, when it has one, killing its process
    /// when `token` fires; `None` otherwise.
    #[cfg(target_os = "linux")]
    fn run_on_processes(
        &self,
        envelope: &TaskEnvelope,
        token: &CancelToken,
    ) -> Option<crate::cluster::registered::Isolated> {
        let pool = self.processes.as_ref()?;
        let registry = crate::task::Registry::get().ok()?;
        if envelope.task == crate::cluster::registered::RUN_REGISTERED
            || !registry.contains(&envelope.task)
        {
            return None;
        }
        Some(crate::cluster::registered::run_isolated(
            pool,
            &envelope.task,
            &envelope.payload,
            envelope.deadline,
            token,
        ))
    }

    #[cfg(not(target_os = "linux"))]
    fn run_on_processes(
        &self,
        _envelope: &TaskEnvelope,
        _token: &CancelToken,
    ) -> Option<crate::cluster::registered::Isolated> {
        None
    }
}
