//! One slot of a process pool: the thread that keeps a line of tasks on one worker process, reads
//! their answers, and kills and replaces the worker when it must. The protocol is in the
//! [module docs](super).

use super::capture::Output;
use super::estimates::Estimates;
use super::inflight::Pipeline;
use super::spawned::{Worker, resident_bytes};
use super::{ProcessConfig, Shared};
use crate::backend::RemoteJob;
use crate::codec::{self, ErrorKind, Header};
use crate::error::{Error, TaskError, TaskFailure, WorkerDeath};
use crate::process::Guardian;
use crate::sync::Arc;
use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec, eventfd, poll};
use rustix::io::Errno;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

/// A task known to take less than this is waited for by polling its channel (yielding the core
/// between tries) rather than by sleeping in `poll`: its answer comes before a sleeping thread could
/// be woken, which on an idle machine (cores in deep sleep states) costs tens of microseconds.
const SPIN_FOR_ANSWER: Duration = Duration::from_micros(50);
/// How much work, by the estimates of the tasks' times, a slot keeps waiting behind the running task
/// on its worker (rule 2). Short tasks are pipelined deeply; tasks longer than this not at all, so
/// that a long task never holds back others another worker could run.
const PIPELINE_WINDOW: Duration = Duration::from_millis(2);
/// The most tasks in flight on one worker.
const MAX_DEPTH: usize = 256;
/// No more tasks are added behind the running one while their frames pass this many bytes.
const PIPELINE_BYTES: usize = 256 * 1024;
/// How long the slot waits for a worker to answer a task cancelled after it was written as skipped,
/// before it takes the task for running (the cancel came too late) and kills the worker (rule 3).
const CANCEL_GRACE: Duration = Duration::from_millis(100);
/// How many lines of a captured stderr a death report adds to its tail.
const CAPTURED_TAIL_LINES: usize = 20;
/// How many workers in a row may be found gone before the started front task was written to them
/// (it then goes to the replacement) before the task is failed instead: a guard against a worker
/// program that dies right after its handshake, which would otherwise be replaced for ever.
const MAX_UNFED_LOSSES: u32 = 3;

/// Tells a slot that a token fired (a cancel, a shutdown): sets a flag the slot reads on every turn
/// (a busy slot, reading answer after answer, may not `poll` for a while), and writes its eventfd to
/// wake it from `poll`.
struct FdWaker {
    fd: OwnedFd,
    fired: AtomicBool,
}

impl FdWaker {
    /// True, once, after a token fired.
    fn take(&self) -> bool {
        self.fired.swap(false, Ordering::AcqRel)
    }
}

impl Wake for FdWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
    }
}

/// Why a slot lost its worker; the task at the front fails with the matching error.
enum Loss {
    /// The channel closed or failed: the worker died.
    Died,
    /// The front task passed its timeout.
    TimedOut(Duration),
    /// The front task, running, was cancelled.
    Cancelled,
    /// The worker did not skip a task cancelled before it started: it was running it.
    CancelledLate,
    /// The worker sent something that is not the answer expected.
    Garbled(String),
}

/// What one frame from the worker did.
enum Read {
    /// An answer resolved the front task; `ran` is false for a task the worker skipped.
    Answered { ran: bool },
    /// A captured task's output, kept for its answer.
    Output,
    /// The worker is out of step.
    Garbled(String),
}

/// One slot: a worker and the thread that runs tasks on it.
pub(super) struct Slot {
    index: usize,
    config: Arc<ProcessConfig>,
    shared: Arc<Shared>,
    /// The pool's guardian, which each worker's group is registered with.
    guardian: std::sync::Arc<Guardian>,
    worker: Option<Worker>,
    wake_fd: std::sync::Arc<FdWaker>,
    waker: Waker,
    line: Pipeline,
    /// How long each task takes on this slot, for what to pipeline.
    estimates: Estimates,
    /// The worker is sent no more tasks and is retired once it has answered those it has.
    retiring: bool,
    /// The `Output` frame of the front task, until its answer comes.
    output: Option<Output>,
    /// Why the last replacement could not start.
    spawn_error: Option<String>,
    /// Workers lost in a row before the started front task was written to them.
    unfed_losses: u32,
    /// Scratch space for jobs taken from the queue.
    taken: Vec<RemoteJob>,
}

impl Slot {
    pub(super) fn start(
        index: usize,
        config: Arc<ProcessConfig>,
        shared: Arc<Shared>,
        guardian: std::sync::Arc<Guardian>,
    ) -> Result<Slot, Error> {
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map_err(|e| {
            Error::WorkerStart {
                message: format!("cannot create an eventfd: {e}"),
            }
        })?;
        let wake_fd = std::sync::Arc::new(FdWaker {
            fd,
            fired: AtomicBool::new(false),
        });
        let waker = Waker::from(std::sync::Arc::clone(&wake_fd));
        let worker = Worker::spawn(&config, &guardian)?;
        Ok(Slot {
            index,
            config,
            shared,
            guardian,
            worker: Some(worker),
            wake_fd,
            waker,
            line: Pipeline::default(),
            estimates: Estimates::default(),
            retiring: false,
            output: None,
            spawn_error: None,
            unfed_losses: 0,
            taken: Vec::new(),
        })
    }

    /// Runs jobs until the queue is closed and drained, then retires the worker.
    pub(super) fn serve(mut self) {
        *self.shared.wakers[self.index].lock() = Some(self.waker.clone());
        loop {
            if self.line.is_empty() {
                match self.shared.next_job() {
                    Some(job) => self.admit(job),
                    None => break,
                }
            } else {
                self.turn();
            }
        }
        *self.shared.wakers[self.index].lock() = None;
        if let Some(worker) = self.worker.take() {
            worker.retire();
        }
    }

    /// Puts a job in the line, and asks its token to wake this slot when it fires.
    fn admit(&mut self, job: RemoteJob) {
        {
            let cancelled = pin!(job.sink.token().cancelled());
            let mut cx = Context::from_waker(&self.waker);
            if cancelled.poll(&mut cx).is_ready() {
                return; // cancelled while queued: dropping the job leaves it cancelled
            }
        }
        let estimate = self.estimates.of(&job.frame);
        self.line.push(job, estimate);
    }

    /// One turn: start the front task, take more, write, read, or wait for the worker, a cancel or
    /// a deadline.
    fn turn(&mut self) {
        if self.shared.discarding() {
            self.discard();
            return;
        }
        if self.worker.is_none() && !self.replace_worker() {
            self.no_worker();
            return;
        }
        // A cancel is seen on the next turn, so that its `Cancel` frame goes out with this turn's
        // writes, before the worker reaches the task.
        if self.wake_fd.take() {
            self.check_cancels();
            if self.line.is_empty() {
                return;
            }
        }
        if !self.start_front() {
            return;
        }
        self.refill();
        let Some(worker) = self.worker.as_ref() else {
            return;
        };
        let written = self
            .line
            .write_front(worker.channel.as_fd())
            .and_then(|()| self.line.write(worker.channel.as_fd()));
        if written.is_err() {
            self.lose_worker(Loss::Died);
            return;
        }
        // With several tasks in flight answers are likely waiting: read before sleeping. A lone task
        // was just written, so go straight to `poll`.
        if self.line.len() > 1 && self.read_answers() {
            return;
        }
        let Some(front) = self.line.front() else {
            return;
        };
        let now = Instant::now();
        let until = front.grace.or(front.deadline);
        let wait = until.map(|d| d.saturating_duration_since(now));
        if wait == Some(Duration::ZERO) {
            // An answer that came as the time ran out wins: read before killing.
            if self.read_answers() {
                return;
            }
            let Some(front) = self.line.front() else {
                return;
            };
            let loss = match (front.grace, front.job.sink.timeout()) {
                (Some(_), _) => Loss::CancelledLate,
                (None, after) => Loss::TimedOut(after.unwrap_or_default()),
            };
            self.lose_worker(loss);
            return;
        }
        if front.estimate.is_some_and(|e| e < SPIN_FOR_ANSWER) && self.spin_for_answer() {
            return;
        }
        let Some(worker) = self.worker.as_ref() else {
            return;
        };
        let mut channel = PollFlags::IN;
        if self.line.has_unwritten() {
            channel |= PollFlags::OUT;
        }
        let mut fds = [
            PollFd::new(&worker.channel, channel),
            PollFd::from_borrowed_fd(self.wake_fd.fd.as_fd(), PollFlags::IN),
        ];
        let ts = wait.map(|d| Timespec {
            tv_sec: d.as_secs() as i64,
            tv_nsec: i64::from(d.subsec_nanos()),
        });
        match poll(&mut fds, ts.as_ref()) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(_) => {
                self.lose_worker(Loss::Died);
                return;
            }
        }
        let readable = fds[0]
            .revents()
            .intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR);
        let woken = !fds[1].revents().is_empty();
        if woken {
            let mut drain = [0u8; 8];
            while rustix::io::read(&self.wake_fd.fd, &mut drain).is_ok() {}
            if self.wake_fd.take() {
                self.check_cancels();
            }
        }
        if readable {
            self.read_answers();
        }
    }

    /// Reads the answer of a short task without sleeping, for up to [`SPIN_FOR_ANSWER`], yielding
    /// the core between tries (the worker may need it). True when something was read.
    fn spin_for_answer(&mut self) -> bool {
        let start = Instant::now();
        while start.elapsed() < SPIN_FOR_ANSWER {
            if self.read_answers() {
                return true;
            }
            std::thread::yield_now();
        }
        false
    }

    /// Starts the task at the front if it has not started (rule 3). False when it was dropped
    /// instead: cancelled before any of it was written.
    fn start_front(&mut self) -> bool {
        let unwritten = self.line.front_unwritten();
        let Some(front) = self.line.front_mut() else {
            return false;
        };
        if front.started.is_some() || front.grace.is_some() {
            return true;
        }
        let now = Instant::now();
        if front.job.sink.start() {
            front.started = Some(now);
            front.deadline = front.job.sink.timeout().and_then(|t| now.checked_add(t));
            return true;
        }
        // Cancelled while it waited.
        if unwritten {
            drop(self.line.pop_front());
            return false;
        }
        front.grace = Some(now + CANCEL_GRACE);
        let _ = self.line.cancel_waiting(0);
        true
    }

    /// Takes more jobs into the line while the worker is busy (rule 2): only behind a front task
    /// known to be short, only jobs known to be short, while their estimated work fits the window.
    fn refill(&mut self) {
        let Some(worker) = self.worker.as_ref() else {
            return;
        };
        let short = |estimate: Option<Duration>| estimate.filter(|e| *e <= PIPELINE_WINDOW);
        if self.retiring
            || self.line.behind_bytes() >= PIPELINE_BYTES
            || short(self.line.front().and_then(|f| f.estimate)).is_none()
        {
            return;
        }
        let mut room = MAX_DEPTH.saturating_sub(self.line.len());
        if let Some(max) = self.config.max_tasks_per_worker {
            room = room.min(max.saturating_sub(worker.tasks + self.line.len()));
        }
        let mut budget = PIPELINE_WINDOW.saturating_sub(self.line.behind_work());
        if room == 0 || budget.is_zero() {
            return;
        }
        let estimates = &self.estimates;
        let fits = |job: &RemoteJob| match short(estimates.of(&job.frame)) {
            Some(estimate) if estimate <= budget => {
                budget -= estimate;
                true
            }
            _ => false,
        };
        let mut taken = std::mem::take(&mut self.taken);
        self.shared.take_extra(room, fits, &mut taken);
        for job in taken.drain(..) {
            self.admit(job);
        }
        self.taken = taken;
    }

    /// Reads what the worker sent, without waiting, and resolves the tasks it answered. False when
    /// nothing came.
    fn read_answers(&mut self) -> bool {
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
    fn next_frame(&mut self) -> Option<Read> {
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
    fn after_answer(&mut self, ran: bool) -> bool {
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

    /// Fires for cancelled tasks: the running front task costs the worker; tasks that have not
    /// started are dropped or skipped (rule 3).
    fn check_cancels(&mut self) {
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
    fn lose_worker(&mut self, loss: Loss) {
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
    fn drain_answers(&mut self) {
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
    fn discard(&mut self) {
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
    fn replace_worker(&mut self) -> bool {
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
    fn no_worker(&mut self) {
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
