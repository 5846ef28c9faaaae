//! Cancels, a lost worker (died, killed, timed out) and its replacement: who pays for a loss, and
//! what happens to the tasks behind it.

use super::*;

impl Slot {
    /// Fires for cancelled tasks: the running front task costs the worker; tasks that have not
    /// started are dropped or skipped (rule 3).
    pub(super) fn check_cancels(&mut self) {
        let Some(front) = self.line.front() else {
            return;
        };
        if front.started.is_some() && front.job.sink.token().is_cancelled() {
            self.lose_worker(Loss::Cancelled);
            return;
        }
        for index in (0..self.line.len()).rev() {
            let waiting = self.line.iter().nth(index).is_some_and(|item| {
                item.started.is_none() && !item.cancel_sent && item.job.sink.token().is_cancelled()
            });
            if waiting {
                drop(self.line.cancel_waiting(index));
            }
        }
    }

    /// Loses the worker (rules 4 and 5): stops it (a dead one is reaped with its own exit status,
    /// a live one killed with its group), reads every answer it sent before it went, fails the task
    /// it was running with the loss, puts the tasks behind that one back at the front of the
    /// queue, and starts a replacement.
    ///
    /// Reading first is what keeps a finished task from being blamed: a worker flushes a task's
    /// answer before it starts the next, so when it dies in the next one, or is killed in it, that
    /// answer may still be unread in the socket — and the loss may have been noticed by a failed
    /// write or by a deadline rather than by end of file. Only after a frame out of step (`Garbled`)
    /// is nothing more read: the stream can no longer be trusted.
    pub(super) fn lose_worker(&mut self, loss: Loss) {
        let front_id = self.line.front().map(|f| f.job.id);
        let Some(worker) = self.worker.as_mut() else {
            return;
        };
        let (error, drain) = match loss {
            Loss::Died => (TaskError::WorkerDied(worker.death()), true),
            Loss::TimedOut(after) => {
                worker.kill();
                (TaskError::TimedOut { after }, true)
            }
            Loss::Cancelled | Loss::CancelledLate => {
                worker.kill();
                (TaskError::Cancelled, true)
            }
            Loss::Garbled(message) => {
                worker.kill();
                (TaskError::Codec(message), false)
            }
        };
        if drain {
            self.drain_answers();
        }
        let Some(worker) = self.worker.take() else {
            return;
        };
        let same_front = self.line.front().map(|f| f.job.id) == front_id;
        let started_unwritten =
            self.line.front().is_some_and(|f| f.started.is_some()) && self.line.front_unwritten();
        if self.line.front_unwritten()
            && !(started_unwritten && self.unfed_losses >= MAX_UNFED_LOSSES)
        {
            // Nothing left in the line reached the worker: it was gone before the front task's
            // frame went out, or it answered every task written to it. A front task already
            // started stays at the front of the line for the replacement (its future says
            // running); the rest go back to the queue.
            if started_unwritten {
                self.unfed_losses += 1;
            }
            let mut back = self.line.take_behind();
            if !started_unwritten {
                if let Some(front) = self.line.pop_front() {
                    back.insert(0, front.job);
                }
            }
            self.shared.requeue_front(back);
            self.output = None;
            self.line.reset_stream();
            drop(worker);
            self.replace_worker();
            if let Some(front) = self.line.front_mut() {
                // It starts again on the replacement: its timeout counts from now (rule 3).
                let now = Instant::now();
                front.started = Some(now);
                front.deadline = front.job.sink.timeout().and_then(|t| now.checked_add(t));
            }
            return;
        }
        self.unfed_losses = 0;
        // The worker answered the task that was at the front, and went in the next one: a death is
        // that task's own; a kill was for the task before it, which finished as the kill came, just
        // as this one began.
        let error = if same_front || matches!(error, TaskError::WorkerDied(_)) {
            error
        } else {
            TaskError::WorkerDied(WorkerDeath {
                exit_code: None,
                signal: Some(crate::process::Signal::KILL.as_raw()),
                stderr_tail: "the worker was killed for the task before this one (its timeout or \
                              cancel), which finished as the kill came, just as this task began"
                    .to_owned(),
            })
        };
        self.shared.requeue_front(self.line.take_behind());
        if let Some(mut front) = self.line.pop_front() {
            let mut error = error;
            if front.captured {
                let output = self.output.take().or_else(|| {
                    worker
                        .capture
                        .as_ref()
                        .map(|files| files.read(self.config.capture_limit))
                });
                if let Some(output) = output {
                    if let TaskError::WorkerDied(death) = &mut error {
                        add_captured_tail(death, &output.stderr);
                    }
                    let (stdout, stderr) = output.into_streams();
                    front.job.sink.capture(stdout, stderr);
                }
            }
            front.job.sink.complete(Err(error));
        }
        self.output = None;
        self.line.reset_stream();
        drop(worker);
        // A replacement starts now, not when the next task comes: that task should not wait.
        self.replace_worker();
    }

    /// Resolves the answers a stopped (reaped or killed) worker sent before it went: whatever is
    /// still in its socket is all it will ever send. A task that finished keeps its value, and
    /// nothing that ran is sent again. Stops at a frame out of step.
    pub(super) fn drain_answers(&mut self) {
        loop {
            while let Some(read) = self.next_frame() {
                if let Read::Garbled(_) = read {
                    return;
                }
            }
            let Some(worker) = self.worker.as_mut() else {
                return;
            };
            // End of file, nothing more, or a broken channel: all that came is read.
            if !matches!(worker.inbox.fill(worker.channel.as_fd(), false), Ok(n) if n > 0) {
                return;
            }
        }
    }

    /// `CancelPending`: drops everything in flight (their futures resolve as cancelled), killing the
    /// worker, which may be running one of them (rule 6). No replacement: the pool is closing.
    pub(super) fn discard(&mut self) {
        // A task that finished before the kill keeps its value (rule 4).
        if let Some(worker) = self.worker.as_mut() {
            worker.kill();
            self.drain_answers();
        }
        drop(self.worker.take());
        let items = self.line.take_all();
        self.output = None;
        for item in items {
            if item.started.is_some() {
                item.job.sink.complete(Err(TaskError::Cancelled));
            }
        }
    }

    /// Starts a worker in place of a lost one; false (the reason kept) when it cannot.
    pub(super) fn replace_worker(&mut self) -> bool {
        match Worker::spawn(&self.config, &self.guardian) {
            Ok(worker) => {
                self.worker = Some(worker);
                self.spawn_error = None;
                true
            }
            Err(e) => {
                self.spawn_error = Some(e.to_string());
                false
            }
        }
    }

    /// No worker can be started: the front task fails with the reason, the rest go back to the
    /// queue (each will try again).
    pub(super) fn no_worker(&mut self) {
        let reason = self.spawn_error.take().unwrap_or_default();
        self.shared.requeue_front(self.line.take_behind());
        if let Some(front) = self.line.pop_front() {
            if front.started.is_some() || front.job.sink.start() {
                front
                    .job
                    .sink
                    .complete(Err(TaskError::WorkerDied(WorkerDeath {
                        exit_code: None,
                        signal: None,
                        stderr_tail: format!("no worker could be started for the task: {reason}"),
                    })));
            }
        }
        self.line.reset_stream();
    }
}

/// Adds the last lines of a dead worker's captured stderr to its death report: they went to the
/// capture file, not to the stderr pipe the report's tail comes from.
fn add_captured_tail(death: &mut WorkerDeath, captured: &[u8]) {
    if captured.is_empty() {
        return;
    }
    let text = String::from_utf8_lossy(captured);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(CAPTURED_TAIL_LINES)..].join("\n");
    if death.stderr_tail.is_empty() {
        death.stderr_tail = tail;
    } else {
        death.stderr_tail = format!("{}\n{tail}", death.stderr_tail);
    }
}
