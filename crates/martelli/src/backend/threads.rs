//! The thread backend: a fixed set of worker threads serving one queue with three priority levels.
//!
//! # Protocol
//!
//! One mutex guards the queue and the sleep bookkeeping; two condition variables carry the wake-ups:
//! `work` for idle workers, `space` for submitters blocked on a full bounded queue.
//!
//! 1. A worker pops the highest-priority job (high, then normal, then low; FIFO within a level) and runs
//!    it without the lock. With nothing queued it sleeps on `work`, counted in `sleeping`.
//! 2. A submitter pushes under the lock and signals `work` only when some worker sleeps that has not
//!    already been signalled (`sleeping > to_wake`); a woken worker decrements `to_wake`. So a burst of
//!    submissions to busy workers makes no system calls at all. The decision to signal is taken under
//!    the lock, the signal itself is sent after unlocking: the sleeper registered under the lock before
//!    it waited, so the signal cannot be lost, and the system call stays out of the critical section.
//! 3. With a bound, a submitter waits on `space` while `len >= bound`; a worker that pops signals
//!    `space` when a submitter waits.
//! 4. Shutdown sets `closed` and wakes everyone: workers drain the queue (`Wait`) or the queue is
//!    emptied first and the removed jobs are dropped, which resolves their futures as cancelled
//!    (`CancelPending`); workers exit when the queue is empty and `closed` is set.
//! 5. Before sleeping, an idle worker waits a few rounds of [`backoff`] without the lock, watching
//!    `has_work` (kept under the lock: set by the push that makes the queue non-empty, cleared by the
//!    pop that empties it, set by shutdown), then takes the lock and looks again. A submission that
//!    arrives meanwhile costs neither the worker a sleep nor the submitter a wake-up call. The flag
//!    is only a hint: every decision is taken again under the lock, so a stale value costs a round,
//!    never a lost job.

use super::{Admission, Backend, BackendConfig, Rejected};
use crate::cancel::CancelToken;
use crate::error::Error;
use crate::job::Job;
use crate::local::{self, WorkerInfo};
use crate::pool::Shutdown;
use crate::sync::{Arc, AtomicBool, Condvar, Mutex, Ordering};
use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::thread::{self, JoinHandle, ThreadId};

thread_local! {
    /// The id of the thread pool this thread works for (0: none).
    static POOL_OF_THIS_THREAD: Cell<u64> = const { Cell::new(0) };
}

/// How many rounds of [`backoff`] an idle worker waits for work before it sleeps (rule 5). None
/// under loom, whose models would only grow.
const SPIN_ROUNDS: u32 = if cfg!(loom) { 0 } else { 10 };

/// One round of waiting without the lock: busy-spin for the first rounds (1, 2, 4, … pauses), then
/// yield the core, which on a machine with more threads than cores lets the submitter run.
fn backoff(round: u32) {
    if round < 6 {
        for _ in 0..1u32 << round {
            std::hint::spin_loop();
        }
    } else {
        thread::yield_now();
    }
}

struct Queue {
    levels: [VecDeque<Job>; 3],
    len: usize,
    bound: Option<usize>,
    sleeping: usize,
    to_wake: usize,
    blocked_submitters: usize,
    closed: bool,
}

impl Queue {
    fn pop(&mut self) -> Option<Job> {
        let job = self.levels.iter_mut().find_map(VecDeque::pop_front)?;
        self.len -= 1;
        Some(job)
    }
}

struct Inner {
    id: u64,
    queue: Mutex<Queue>,
    /// A hint, read without the lock, that the queue holds jobs: set when a push makes it non-empty,
    /// cleared when a pop empties it (rule 5).
    has_work: AtomicBool,
    work: Condvar,
    space: Condvar,
    /// The token of the task each worker runs, so `CancelPending` can fire it.
    running: Box<[Mutex<Option<CancelToken>>]>,
}

impl Inner {
    /// Takes the next job, sleeping while there is none. `None` once closed and drained.
    fn next_job(&self) -> Option<Job> {
        let mut spins = 0;
        let mut q = self.queue.lock();
        loop {
            if let Some(job) = q.pop() {
                if q.len == 0 {
                    self.has_work.store(false, Ordering::Relaxed);
                }
                let blocked = q.blocked_submitters > 0;
                drop(q);
                if blocked {
                    self.space.notify_one();
                }
                return Some(job);
            }
            if q.closed {
                return None;
            }
            if spins < SPIN_ROUNDS {
                // Rule 5: wait a moment without the lock for a submission before going to sleep.
                drop(q);
                while spins < SPIN_ROUNDS && !self.has_work.load(Ordering::Relaxed) {
                    backoff(spins);
                    spins += 1;
                }
                q = self.queue.lock();
                continue;
            }
            q.sleeping += 1;
            q = self.work.wait(q);
            q.sleeping -= 1;
            q.to_wake = q.to_wake.saturating_sub(1);
            spins = 0;
        }
    }

    fn run(&self, index: usize, job: Job) {
        *self.running[index].lock() = Some(job.task.token().clone());
        job.run();
        *self.running[index].lock() = None;
    }
}

pub(crate) struct Threads {
    inner: Arc<Inner>,
    workers: usize,
    handles: Mutex<Vec<(ThreadId, JoinHandle<()>)>>,
}

impl fmt::Debug for Threads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Threads")
            .field("workers", &self.workers)
            .field("queued", &self.queued())
            .finish()
    }
}

impl Threads {
    /// Starts the workers and runs each one's initializer; fails if a thread cannot start or an
    /// initializer panics (then the workers already started are stopped).
    pub(crate) fn start(config: &BackendConfig) -> Result<Threads, Error> {
        let n = config.workers;
        let inner = Arc::new(Inner {
            id: crate::sync::next_id(),
            queue: Mutex::new(Queue {
                levels: [VecDeque::new(), VecDeque::new(), VecDeque::new()],
                len: 0,
                bound: config.queue_bound,
                sleeping: 0,
                to_wake: 0,
                blocked_submitters: 0,
                closed: false,
            }),
            has_work: AtomicBool::new(false),
            work: Condvar::new(),
            space: Condvar::new(),
            running: (0..n).map(|_| Mutex::new(None)).collect(),
        });
        let pool = Threads {
            inner,
            workers: n,
            handles: Mutex::new(Vec::with_capacity(n)),
        };
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        for index in 0..n {
            let name = format!("{}-{index}", config.name_prefix);
            let mut builder = thread::Builder::new().name(name.clone());
            if let Some(size) = config.stack_size {
                builder = builder.stack_size(size);
            }
            let inner = Arc::clone(&pool.inner);
            let init = config.initializer.clone();
            let ready = ready_tx.clone();
            let info = WorkerInfo::new(index, name.clone(), "threads");
            let spawned = builder.spawn(move || {
                POOL_OF_THIS_THREAD.with(|p| p.set(inner.id));
                let _worker = local::enter_worker(info.clone());
                let init_result = match init {
                    Some(init) => catch_unwind(AssertUnwindSafe(|| init(&info)))
                        .map_err(|p| crate::error::panic_message(p.as_ref())),
                    None => Ok(()),
                };
                let ok = init_result.is_ok();
                let _ = ready.send(init_result);
                drop(ready);
                if !ok {
                    return;
                }
                while let Some(job) = inner.next_job() {
                    crate::chaos::point();
                    inner.run(index, job);
                }
            });
            match spawned {
                Ok(handle) => pool.handles.lock().push((handle.thread().id(), handle)),
                Err(source) => {
                    pool.shutdown(Shutdown::CancelPending);
                    return Err(Error::Spawn { name, source });
                }
            }
        }
        drop(ready_tx);
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(message)) => {
                    pool.shutdown(Shutdown::CancelPending);
                    return Err(Error::Initializer { message });
                }
                Err(_) => break,
            }
        }
        Ok(pool)
    }
}

impl Backend for Threads {
    fn kind(&self) -> &'static str {
        "threads"
    }

    fn workers(&self) -> usize {
        self.workers
    }

    fn execute(&self, job: Job, admission: Admission) -> Result<(), Rejected> {
        let inner = &*self.inner;
        let mut q = inner.queue.lock();
        loop {
            if q.closed {
                return Err(Rejected::ShutDown(job));
            }
            match q.bound {
                Some(bound) if q.len >= bound => {
                    if admission == Admission::Try {
                        return Err(Rejected::Full(job));
                    }
                    if POOL_OF_THIS_THREAD.with(Cell::get) == inner.id {
                        // A worker submitting to its own full pool would wait for itself: run the job
                        // here instead (the queue's bound still holds).
                        drop(q);
                        job.run();
                        return Ok(());
                    }
                    q.blocked_submitters += 1;
                    q = inner.space.wait(q);
                    q.blocked_submitters -= 1;
                }
                _ => break,
            }
        }
        q.levels[job.priority.level()].push_back(job);
        q.len += 1;
        if q.len == 1 {
            inner.has_work.store(true, Ordering::Relaxed);
        }
        let wake = q.sleeping > q.to_wake;
        if wake {
            q.to_wake += 1;
        }
        drop(q);
        // Signalled after unlocking (rule 2), so the woken worker does not wake into a held lock.
        if wake {
            inner.work.notify_one();
        }
        crate::chaos::point();
        Ok(())
    }

    fn queued(&self) -> usize {
        self.inner.queue.lock().len
    }

    fn help_one(&self) -> bool {
        if POOL_OF_THIS_THREAD.with(Cell::get) != self.inner.id {
            return false;
        }
        let job = {
            let mut q = self.inner.queue.lock();
            let job = q.pop();
            if q.len == 0 {
                self.inner.has_work.store(false, Ordering::Relaxed);
            }
            if job.is_some() && q.blocked_submitters > 0 {
                self.inner.space.notify_one();
            }
            job
        };
        match job {
            Some(job) => {
                job.run();
                true
            }
            None => false,
        }
    }

    fn shutdown(&self, mode: Shutdown) {
        let discarded: Vec<Job> = {
            let mut q = self.inner.queue.lock();
            q.closed = true;
            match mode {
                Shutdown::Wait => Vec::new(),
                Shutdown::CancelPending => {
                    q.len = 0;
                    q.levels.iter_mut().flat_map(|l| l.drain(..)).collect()
                }
            }
        };
        // Ends the spinning of idle workers at once: they take the lock and see `closed`.
        self.inner.has_work.store(true, Ordering::Relaxed);
        self.inner.work.notify_all();
        self.inner.space.notify_all();
        if mode == Shutdown::CancelPending {
            for slot in self.inner.running.iter() {
                if let Some(token) = slot.lock().as_ref() {
                    token.cancel();
                }
            }
        }
        // Dropping the discarded jobs resolves their futures as cancelled.
        drop(discarded);
        let me = thread::current().id();
        let handles = std::mem::take(&mut *self.handles.lock());
        for (id, handle) in handles {
            if id != me {
                let _ = handle.join();
            }
        }
    }

    fn is_shut_down(&self) -> bool {
        self.inner.queue.lock().closed
    }
}
