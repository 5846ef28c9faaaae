//! Reading a worker's answers and resolving the tasks they answer.

use super::*;

impl Slot {
    /// Reads what the worker sent, without waiting, and resolves the tasks it answered. False when
    /// nothing came.
    pub(super) fn read_answers(&mut self) -> bool {
        let Some(worker) = self.worker.as_mut() else {
            return false;
        };
        let mut eof = match worker.inbox.fill(worker.channel.as_fd(), false) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => true,
        };
        // Part of a frame came: the worker is writing it now (answers come in order, so it is the
        // front task's), and the rest is read as it comes rather than in `poll` rounds.
        while !eof && worker.inbox.partial_frame() {
            eof = !matches!(worker.inbox.fill(worker.channel.as_fd(), true), Ok(n) if n > 0);
        }
        loop {
            let read = match self.next_frame() {
                None => break,
                Some(read) => read,
            };
            match read {
                Read::Output => {}
                Read::Answered { ran } => {
                    if self.after_answer(ran) {
                        return true; // retired (and replaced): what it sent is all read
                    }
                    // The next task starts now; skip those dropped as cancelled before they were
                    // written.
                    while !self.line.is_empty() && !self.start_front() {}
                }
                Read::Garbled(message) => {
                    self.lose_worker(Loss::Garbled(message));
                    return true;
                }
            }
        }
        if eof {
            self.lose_worker(Loss::Died);
        }
        true
    }

    /// Takes one complete frame from the worker's inbox and acts on it.
    pub(super) fn next_frame(&mut self) -> Option<Read> {
        let Slot {
            worker,
            line,
            output,
            estimates,
            ..
        } = self;
        let worker = worker.as_mut()?;
        let envelope = match worker.inbox.next() {
            Ok(Some(envelope)) => envelope,
            Ok(None) => return None,
            Err(e) => {
                return Some(Read::Garbled(format!(
                    "the worker's answer was refused, and the worker replaced: {e}"
                )));
            }
        };
        let Some(front) = line.front() else {
            return Some(Read::Garbled(
                "the worker answered a task it was not given, and was replaced".to_owned(),
            ));
        };
        let expected = front.job.id;
        let (outcome, ran) = match codec::decode(envelope) {
            Ok((
                Header::Output {
                    id,
                    stdout_len,
                    stderr_len,
                    stdout,
                    stderr,
                },
                _,
            )) if id == expected && front.captured => {
                *output = Some(Output {
                    stdout: stdout.to_vec(),
                    stdout_len,
                    stderr: stderr.to_vec(),
                    stderr_len,
                });
                return Some(Read::Output);
            }
            Ok((Header::Value { id }, body)) if id == expected => (Ok(body), true),
            Ok((Header::Error { id, kind, message }, _)) if id == expected => {
                let error = match kind {
                    ErrorKind::Failed => TaskError::Failed(TaskFailure::from_message(message)),
                    ErrorKind::Panicked => TaskError::Panicked {
                        message: message.to_owned(),
                    },
                    ErrorKind::UnknownTask => TaskError::UnknownTask {
                        name: message.to_owned(),
                    },
                    ErrorKind::BadArgs | ErrorKind::BadResult => {
                        TaskError::Codec(message.to_owned())
                    }
                    ErrorKind::Cancelled => TaskError::Cancelled,
                };
                (Err(error), kind != ErrorKind::Cancelled)
            }
            Ok((other, _)) => {
                return Some(Read::Garbled(format!(
                    "the worker sent {other:?} instead of an answer, and was replaced"
                )));
            }
            Err(e) => {
                return Some(Read::Garbled(format!(
                    "the worker's answer does not decode, and the worker was replaced: {e}"
                )));
            }
        };
        let mut item = line.pop_front()?;
        if item.captured {
            let (stdout, stderr) = output.take().unwrap_or_default().into_streams();
            item.job.sink.capture(stdout, stderr);
        }
        if let (true, Some(started)) = (ran, item.started) {
            estimates.learn(&item.job.frame, started.elapsed());
        }
        item.job.sink.complete(outcome);
        Some(Read::Answered { ran })
    }

    /// Counts a task its worker ran and retires a worn-out worker (rule 5); true
    /// when it retired it.
    pub(super) fn after_answer(&mut self, ran: bool) -> bool {
        let Some(worker) = self.worker.as_mut() else {
            return true;
        };
        self.unfed_losses = 0;
        if ran {
            worker.tasks += 1;
            let worn_out = self
                .config
                .max_tasks_per_worker
                .is_some_and(|max| worker.tasks >= max);
            let too_big = self
                .config
                .max_worker_memory
                .is_some_and(|max| resident_bytes(worker.pid()).is_some_and(|rss| rss > max));
            self.retiring |= worn_out || too_big;
        }
        if self.retiring && self.line.is_empty() {
            self.retiring = false;
            if let Some(worker) = self.worker.take() {
                worker.retire();
            }
            // A replacement starts now, not when the next task comes: that task should not wait.
            self.replace_worker();
            return true;
        }
        false
    }
}
