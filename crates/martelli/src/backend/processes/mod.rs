//! The process backend: tasks by name on worker processes that are this program re-executed.
//!
//! # Protocol
//!
//! The pool keeps one *slot* thread per worker process. A slot owns its worker (the [`Child`], the
//! pool's end of a socketpair, the reader of its stderr) and runs one task at a time on it:
//!
//! 1. Jobs wait in one queue with three priority levels (FIFO within a level), guarded by one mutex;
//!    an idle slot sleeps on `work`, a submitter blocked by a full bounded queue on `space`.
//! 2. A slot pops a job, marks its future running (a job cancelled while queued is dropped here),
//!    writes its `Run` frame, then polls the channel and an eventfd that the task's cancel token
//!    wakes, with the task's deadline as the poll timeout.
//! 3. The answer frame resolves the future (value, error, panic, unknown task). End of file on the
//!    channel means the worker died: its group gets `SIGKILL` (grandchildren die with it), the worker
//!    is reaped, and the future resolves as `WorkerDied` with the exit code or signal and the tail of
//!    its stderr. A deadline passed or a cancel kills the group the same way and resolves the future
//!    as `TimedOut` or `Cancelled`. A frame that is too large or does not decode kills the worker too
//!    (it can no longer be trusted to be in step) and fails the task with `TaskError::Codec`.
//! 4. A killed or dead worker is replaced at once, before the slot takes its next job, so the pool
//!    never loses capacity; a worker that ran `max_tasks_per_worker` tasks, or whose resident memory
//!    passed `max_worker_memory` after a task, is retired (its channel closed, so it exits) and
//!    replaced the same way.
//! 5. Shutdown closes the queue; slots drain it (`Wait`) or the queue is emptied and running tokens
//!    fire (`CancelPending`, which kills the workers running them); each slot then closes its
//!    channel, the idle worker exits, and the slot reaps it.

mod supervisor;
pub(crate) mod worker;

use super::{Admission, Backend, Rejected, RemoteBackend, RemoteJob, RemoteRejected};
use crate::cancel::CancelToken;
use crate::error::Error;
use crate::job::Job;
use crate::pool::Shutdown;
use crate::sync::{Arc, Condvar, Mutex};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::sync::mpsc;
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
    pub(crate) max_worker_memory: Option<u64>,
    pub(crate) nice: Option<i32>,
    pub(crate) rlimits: Vec<(crate::process::Resource, Option<u64>, Option<u64>)>,
    pub(crate) queue_bound: Option<usize>,
    /// Set by `Processes::start`: kills the workers' groups if this process dies.
    pub(crate) guardian: Option<std::sync::Arc<crate::process::Guardian>>,
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
    /// The token of the task each slot runs, so that `CancelPending` can fire it.
    running: Box<[Mutex<Option<CancelToken>>]>,
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
}

/// The process backend. See the [module docs](self).
pub(crate) struct Processes {
    shared: Arc<Shared>,
    config: Arc<ProcessConfig>,
    slots: Mutex<Vec<JoinHandle<()>>>,
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
    pub(crate) fn start(mut config: ProcessConfig) -> Result<Processes, Error> {
        if worker::is_uninitialized_worker() {
            return Err(Error::NotInitialized);
        }
        crate::task::Registry::get().map_err(Error::DuplicateTask)?;
        let n = config.workers;
        // Workers die with this process by their parent-death signal; what their tasks started
        // dies with them through the guardian, which kills every worker's group when this process
        // dies, even by SIGKILL.
        let guardian = crate::process::Guardian::start(n.saturating_mul(2).max(2), GUARDIAN_GRACE)
            .map_err(|e| Error::WorkerStart {
                message: format!("cannot start the guardian process: {e}"),
            })?;
        config.guardian = Some(std::sync::Arc::new(guardian));
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                levels: [VecDeque::new(), VecDeque::new(), VecDeque::new()],
                len: 0,
                bound: config.queue_bound,
                sleeping: 0,
                blocked: 0,
                closed: false,
            }),
            work: Condvar::new(),
            space: Condvar::new(),
            running: (0..n).map(|_| Mutex::new(None)).collect(),
        });
        let config = Arc::new(config);
        let pool = Processes {
            shared,
            config: Arc::clone(&config),
            slots: Mutex::new(Vec::with_capacity(n)),
        };
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), Error>>();
        for index in 0..n {
            let name = format!("{}-{index}", config.name_prefix);
            let shared = Arc::clone(&pool.shared);
            let config = Arc::clone(&config);
            let ready = ready_tx.clone();
            // The slot thread spawns its worker and every replacement, and lives as long as they
            // do: Linux sends a worker its parent-death signal when the spawning *thread* exits.
            let spawned = thread::Builder::new().name(name.clone()).spawn(move || {
                let slot = match Slot::start(index, config, shared) {
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
                    q.len = 0;
                    q.levels.iter_mut().flat_map(|l| l.drain(..)).collect()
                }
            }
        };
        self.shared.work.notify_all();
        self.shared.space.notify_all();
        if mode == Shutdown::CancelPending {
            for slot in self.shared.running.iter() {
                if let Some(token) = slot.lock().as_ref() {
                    token.cancel();
                }
            }
        }
        drop(discarded); // resolves their futures as cancelled
        let slots = std::mem::take(&mut *self.slots.lock());
        for handle in slots {
            let _ = handle.join();
        }
    }

    fn is_shut_down(&self) -> bool {
        self.shared.queue.lock().closed
    }

    fn remote(&self) -> Option<&dyn RemoteBackend> {
        Some(self)
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
