//! One slot of a process pool: the thread that keeps a line of tasks on one worker process, reads
//! their answers, and kills and replaces the worker when it must. The protocol is in the
//! [module docs](super).
//!
//! Here: the slot and its loop (admit, start, refill). Reading the worker's answers is in
//! `answers.rs`; cancels, a lost worker and its replacement in `losses.rs`.

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
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

mod answers;
mod losses;

/// A task known to take less than this is waited for by polling its channel (yielding the core
/// between tries) rather than by sleeping in `poll`: its answer comes before a sleeping thread could
/// be woken, which on an idle machine (cores in deep sleep states) costs tens of microseconds.
const SPIN_FOR_ANSWER: Duration = Duration::from_micros(50);
/// How much work, by the estimates of the tasks' times, a slot keeps waiting behind the running task
/// on its worker (rule 2), unless the pool says otherwise
/// ([`PoolBuilder::pipeline_window`](crate::PoolBuilder::pipeline_window)). Short tasks are
/// pipelined deeply; tasks longer than this not at all, so that a long task never holds back others
/// another worker could run.
pub(crate) const PIPELINE_WINDOW: Duration = Duration::from_millis(2);
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
        // A registration that stays after this call (a `cancelled()` future would leave the
        // token's list when dropped at the end of it, and a later cancel would not wake the slot).
        if job
            .sink
            .token()
            .host()
            .state()
            .wake_on_cancel(&self.waker)
            .is_ready()
        {
            return; // cancelled while queued: dropping the job leaves it cancelled
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
        let window = self.config.pipeline_window;
        let short = |estimate: Option<Duration>| estimate.filter(|e| *e <= window);
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
        let mut budget = window.saturating_sub(self.line.behind_work());
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
}
