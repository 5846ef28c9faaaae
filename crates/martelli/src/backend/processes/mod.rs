//! The process backend: tasks by name on worker processes that are this program re-executed.
//!
//! # Protocol
//!
//! The pool keeps one *slot* thread per worker process. A slot owns its worker (the [`Child`], the
//! pool's end of a socketpair, the reader of its stderr, the files its captured output goes to) and
//! keeps one or more tasks in flight on it:
//!
//! 1. Jobs wait in one queue with three priority levels (FIFO within a level), guarded by one mutex;
//!    an idle slot sleeps on `work`, a submitter blocked by a full bounded queue on `space`.
//! 2. A slot with nothing in flight pops a job and sends it. While its worker runs tasks, the slot
//!    *pipelines*: it takes more jobs (when the queue holds more than there are sleeping slots, so it
//!    never takes work an idle slot could run) and writes their frames behind the running one, all
//!    in one non-blocking `sendmsg`. How many it keeps in flight adapts to the tasks, by each task
//!    name's time on this slot (`estimates.rs`): only behind a task known to be short, only tasks
//!    known to be short, about `PIPELINE_WINDOW` of their estimated work (2 ms unless
//!    `PoolBuilder::pipeline_window` sets it), at most `MAX_DEPTH` tasks
//!    and `PIPELINE_BYTES` of frames, and never more than the worker has left before
//!    `max_tasks_per_worker`. A task not seen yet, or seen to be long, is never written behind
//!    another, and nothing is written behind it. The worker runs them in order and answers in order.
//! 3. A task *starts* when it reaches the front of its worker's line: when the answer before it
//!    arrives, or when it is sent to an idle worker. Only then is its future marked running and its
//!    timeout counted. Until then it is queued: `Future::cancel` removes it and resolves it as
//!    cancelled. A cancelled task not yet written is dropped; one already written is followed by a
//!    `Cancel` frame, which the worker reads (without blocking) before it starts each task, and
//!    answers the task as skipped. If the frame arrives too late — the worker reached the task first
//!    (for tiny tasks a real window: the slot must be scheduled to write the frame) — the task runs
//!    and its result is dropped; if its answer does not come within `CANCEL_GRACE`, the slot takes
//!    it for running and kills the worker, as for a cancelled running task.
//! 4. The answer frame resolves the future (value, error, panic, unknown task; a captured task's
//!    `Output` frame comes just before it). End of file on the channel means the worker died: its
//!    group gets `SIGKILL` (grandchildren die with it), the worker is reaped, and the task at the
//!    front resolves as `WorkerDied` with the exit code or signal and the tail of its stderr. A
//!    deadline passed or a cancel kills the group the same way and resolves it as `TimedOut` or
//!    `Cancelled`. A frame that is too large or does not decode kills the worker too (it can no
//!    longer be trusted to be in step) and fails the task with `TaskError::Codec`. However the
//!    loss is noticed — end of file, a write that fails, a deadline, a cancel, a `CancelPending`
//!    shutdown — the slot first stops the worker (reaps it, or kills its group) and then reads every
//!    answer it sent before it went: a worker flushes a task's answer before it starts the next, so
//!    when it dies in the next one that answer may still be in the socket, and the task it belongs
//!    to keeps its value (only after a frame out of step is nothing more read). Then only the task
//!    the worker was running fails: the tasks behind it never started, and go back to the front of
//!    the queue, in order, to run on the replacement or another worker. A task whose frame never
//!    reached the worker (it was gone before the write) is not failed: it goes to the replacement.
//! 5. A killed or dead worker is replaced at once, before the slot takes its next job, so the pool
//!    never loses capacity; a worker that ran `max_tasks_per_worker` tasks, or whose resident memory
//!    passed `max_worker_memory` after a task (then it is sent no more, and retired once the tasks
//!    already sent to it are answered), is retired (its channel closed, so it exits) and replaced
//!    the same way.
//! 6. Shutdown closes the queue; slots drain it (`Wait`), or (`CancelPending`) the queue is emptied,
//!    every slot is woken and drops what it had in flight, killing its worker if a task ran; each
//!    slot then closes its channel, the idle worker exits, and the slot reaps it.
//! 7. The pool's guardian process (which kills the workers' groups if this process dies) is shared
//!    by the pool, its slots and their workers; once shutdown has joined every slot (so every worker
//!    is reaped), the pool lets go of it too, and the guardian exits and is reaped then, not when
//!    the `Pool` is dropped.

mod capture;
mod crash_signals;
mod estimates;
mod inflight;
mod spawned;
mod supervisor;
pub(crate) use supervisor::PIPELINE_WINDOW;
pub(crate) mod worker;

use super::{Admission, Backend, Rejected, RemoteBackend, RemoteJob, RemoteRejected};
use crate::error::Error;
use crate::job::Job;
use crate::options::Shutdown;
use crate::process::Guardian;
use crate::sync::{Arc, Condvar, Mutex};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::task::Waker;
use std::thread::{self, JoinHandle};
use std::time::Duration;
use supervisor::Slot;

/// The guardian's time between `SIGTERM` and `SIGKILL` to the groups of a dead pool's workers.
const GUARDIAN_GRACE: Duration = Duration::from_millis(200);

/// How a process pool starts and manages its workers.
#[derive(Debug, Clone)]
pub(crate) struct ProcessConfig {
    pub(crate) workers: usize,
    pub(crate) name_prefix: String,
    /// The worker program; `None`: this program (`current_exe`).
    pub(crate) program: Option<PathBuf>,
    pub(crate) args: Vec<OsString>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_frame: usize,
    pub(crate) max_tasks_per_worker: Option<usize>,
    /// How much estimated work a slot writes behind its worker's running task (rule 2).
    pub(crate) pipeline_window: Duration,
    pub(crate) max_worker_memory: Option<u64>,
    pub(crate) nice: Option<i32>,
    pub(crate) rlimits: Vec<(crate::process::Resource, Option<u64>, Option<u64>)>,
    pub(crate) queue_bound: Option<usize>,
    /// The most bytes of stdout (and of stderr) a captured task returns.
    pub(crate) capture_limit: usize,
}

struct Queue {
    levels: [VecDeque<RemoteJob>; 3],
    len: usize,
    bound: Option<usize>,
    /// Slots asleep on `work`; a submitter signals only when there are some (a signal is a system
    /// call even when nobody waits).
    sleeping: usize,
    /// Submitters asleep on `space`.
    blocked: usize,
    closed: bool,
    /// Set by `Shutdown::CancelPending`: jobs a slot hands back are dropped (resolved as cancelled),
    /// and slots drop what they have in flight.
    discard: bool,
}

impl Queue {
    fn pop(&mut self) -> Option<RemoteJob> {
        let job = self.levels.iter_mut().find_map(VecDeque::pop_front)?;
        self.len -= 1;
        Some(job)
    }
}

pub(crate) struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
    space: Condvar,
    /// Wakes each slot's `poll` (its eventfd), so that `CancelPending` reaches busy slots.
    wakers: Box<[Mutex<Option<Waker>>]>,
    /// `Queue::discard`, readable without the lock on each turn of a slot.
    discard: AtomicBool,
}

impl Shared {
    /// The next job, sleeping while there is none; `None` once closed and drained (rule 1).
    fn next_job(&self) -> Option<RemoteJob> {
        let mut q = self.queue.lock();
        loop {
            if let Some(job) = q.pop() {
                if q.blocked > 0 {
                    self.space.notify_one();
                }
                return Some(job);
            }
            if q.closed {
                return None;
            }
            q.sleeping += 1;
            q = self.work.wait(q);
            q.sleeping -= 1;
        }
    }

    /// Up to `max` more jobs for a slot whose worker is busy, without waiting (rule 2): in queue
    /// order, while `fits` accepts the next one; only what exceeds one job for each sleeping slot;
    /// and it wakes those slots for theirs.
    fn take_extra(
        &self,
        max: usize,
        mut fits: impl FnMut(&RemoteJob) -> bool,
        into: &mut Vec<RemoteJob>,
    ) {
        let mut q = self.queue.lock();
        let spare = q.len.saturating_sub(q.sleeping).min(max);
        let mut took = 0;
        while took < spare {
            let Some(level) = q.levels.iter_mut().find(|l| !l.is_empty()) else {
                break;
            };
            if !level.front().is_some_and(&mut fits) {
                break;
            }
            if let Some(job) = level.pop_front() {
                into.push(job);
                took += 1;
            }
        }
        q.len -= took;
        let (wake, unblock) = (q.sleeping > 0 && q.len > 0, q.blocked > 0 && took > 0);
        drop(q);
        if wake {
            self.work.notify_all();
        }
        if unblock {
            self.space.notify_all();
        }
    }

    /// Puts jobs that never started (they were behind a task whose worker was lost) back at the
    /// front of their priority levels, in their order; after `CancelPending`, drops them instead.
    fn requeue_front(&self, jobs: Vec<RemoteJob>) {
        if jobs.is_empty() {
            return;
        }
        let mut q = self.queue.lock();
        if q.discard {
            drop(q);
            drop(jobs); // resolves their futures as cancelled
            return;
        }
        for job in jobs.into_iter().rev() {
            q.levels[job.priority.level()].push_front(job);
            q.len += 1;
        }
        let wake = q.sleeping > 0;
        drop(q);
        if wake {
            self.work.notify_all();
        }
    }

    /// True once `Shutdown::CancelPending` has begun.
    fn discarding(&self) -> bool {
        self.discard.load(Ordering::Acquire)
    }
}

/// The process backend. See the [module docs](self).
pub(crate) struct Processes {
    shared: Arc<Shared>,
    config: Arc<ProcessConfig>,
    slots: Mutex<Vec<JoinHandle<()>>>,
    /// Kills the workers' groups if this process dies; let go at shutdown (rule 7).
    guardian: Mutex<Option<std::sync::Arc<Guardian>>>,
}

impl fmt::Debug for Processes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Processes")
            .field("workers", &self.config.workers)
            .field("queued", &self.queued())
            .finish()
    }
}

impl Processes {
    /// Starts the workers and waits until each has answered the handshake; fails, stopping those
    /// already started, if any cannot start or does not answer.
    pub(crate) fn start(config: ProcessConfig) -> Result<Processes, Error> {
        if worker::is_uninitialized_worker() {
            return Err(Error::NotInitialized);
        }
        crate::task::Registry::get().map_err(Error::DuplicateTask)?;
        let n = config.workers;
        // Workers die with this process by their parent-death signal; what their tasks started
        // dies with them through the guardian, which kills every worker's group when this process
        // dies, even by SIGKILL.
        let guardian =
            Guardian::start(n.saturating_mul(2).max(2), GUARDIAN_GRACE).map_err(|e| {
                Error::WorkerStart {
                    message: format!("cannot start the guardian process: {e}"),
                }
            })?;
        let guardian = std::sync::Arc::new(guardian);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                levels: [VecDeque::new(), VecDeque::new(), VecDeque::new()],
                len: 0,
                bound: config.queue_bound,
                sleeping: 0,
                blocked: 0,
                closed: false,
                discard: false,
            }),
            work: Condvar::new(),
            space: Condvar::new(),
            wakers: (0..n).map(|_| Mutex::new(None)).collect(),
            discard: AtomicBool::new(false),
        });
        let config = Arc::new(config);
        let pool = Processes {
            shared,
            config: Arc::clone(&config),
            slots: Mutex::new(Vec::with_capacity(n)),
            guardian: Mutex::new(Some(std::sync::Arc::clone(&guardian))),
        };
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), Error>>();
        for index in 0..n {
            let name = format!("{}-{index}", config.name_prefix);
            let shared = Arc::clone(&pool.shared);
            let config = Arc::clone(&config);
            let guardian = std::sync::Arc::clone(&guardian);
            let ready = ready_tx.clone();
            // The slot thread spawns its worker and every replacement, and lives as long as they
            // do: Linux sends a worker its parent-death signal when the spawning *thread* exits.
            let spawned = thread::Builder::new().name(name.clone()).spawn(move || {
                let slot = match Slot::start(index, config, shared, guardian) {
                    Ok(slot) => {
                        let _ = ready.send(Ok(()));
                        slot
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                drop(ready);
                slot.serve();
            });
            match spawned {
                Ok(handle) => pool.slots.lock().push(handle),
                Err(source) => {
                    pool.shutdown(Shutdown::CancelPending);
                    return Err(Error::Spawn { name, source });
                }
            }
        }
        drop(ready_tx);
        let mut first_error = None;
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => break,
            }
        }
        if let Some(e) = first_error {
            pool.shutdown(Shutdown::CancelPending);
            return Err(e);
        }
        Ok(pool)
    }
}

impl Backend for Processes {
    fn kind(&self) -> &'static str {
        "processes"
    }

    fn workers(&self) -> usize {
        self.config.workers
    }

    /// Closures cannot cross a process boundary; `Pool` refuses them before they get here.
    fn execute(&self, job: Job, _admission: Admission) -> Result<(), Rejected> {
        Err(Rejected::ShutDown(job))
    }

    fn queued(&self) -> usize {
        self.shared.queue.lock().len
    }

    fn help_one(&self) -> bool {
        false
    }

    fn shutdown(&self, mode: Shutdown) {
        let discarded: Vec<RemoteJob> = {
            let mut q = self.shared.queue.lock();
            q.closed = true;
            match mode {
                Shutdown::Wait => Vec::new(),
                Shutdown::CancelPending => {
                    q.discard = true;
                    self.shared.discard.store(true, Ordering::Release);
                    q.len = 0;
                    q.levels.iter_mut().flat_map(|l| l.drain(..)).collect()
                }
            }
        };
        self.shared.work.notify_all();
        self.shared.space.notify_all();
        if mode == Shutdown::CancelPending {
            for slot in self.shared.wakers.iter() {
                if let Some(waker) = slot.lock().as_ref() {
                    waker.wake_by_ref();
                }
            }
        }
        drop(discarded); // resolves their futures as cancelled
        let slots = std::mem::take(&mut *self.slots.lock());
        for handle in slots {
            let _ = handle.join();
        }
        // Every worker is reaped: the guardian has nothing left to guard (rule 7).
        drop(self.guardian.lock().take());
    }

    fn is_shut_down(&self) -> bool {
        self.shared.queue.lock().closed
    }

    fn remote(&self) -> Option<&dyn RemoteBackend> {
        Some(self)
    }

    fn captures_output(&self) -> bool {
        true
    }
}

impl RemoteBackend for Processes {
    fn max_frame(&self) -> usize {
        self.config.max_frame
    }

    fn execute_remote(&self, job: RemoteJob, admission: Admission) -> Result<(), RemoteRejected> {
        let mut q = self.shared.queue.lock();
        loop {
            if q.closed {
                return Err(RemoteRejected::ShutDown);
            }
            match q.bound {
                Some(bound) if q.len >= bound => {
                    if admission == Admission::Try {
                        return Err(RemoteRejected::Full);
                    }
                    q.blocked += 1;
                    q = self.shared.space.wait(q);
                    q.blocked -= 1;
                }
                _ => break,
            }
        }
        q.levels[job.priority.level()].push_back(job);
        q.len += 1;
        let wake = q.sleeping > 0;
        drop(q);
        if wake {
            self.shared.work.notify_one();
        }
        Ok(())
    }
}
