//! The thread backend: a fixed set of worker threads serving a queue with three priority levels.
//!
//! # Protocol
//!
//! The queue has two halves, each under its own mutex, so that submitters and workers do not take the
//! same lock for every job: submitters push into the *inbox*; workers pop from the *outbox*, and move
//! the whole inbox into it when they need more. Two condition variables, used with the inbox's mutex,
//! carry the wake-ups: `work` for idle workers, `space` for submitters blocked on a full bounded queue.
//! Locks are always taken outbox first, then inbox.
//!
//! 1. A worker pops the highest-priority job of the outbox (high, then normal, then low; FIFO within a
//!    level) and runs it without a lock. When the outbox is empty, or the `inbox_has` hint says the inbox
//!    holds a level above the outbox's best, it takes the inbox's lock too and moves every inbox job to
//!    the end of its level in the outbox (so FIFO within a level and priority across levels hold, and a
//!    high-priority submission still overtakes every queued lower one). With both halves empty it
//!    sleeps on `work`, counted in `sleeping`, having released the outbox but not the inbox, so no
//!    submission can slip in between its look and its sleep.
//! 2. A submitter pushes into the inbox under its lock and signals `work` only when some worker sleeps
//!    that has not already been signalled (`sleeping > to_wake`); a woken worker decrements `to_wake`.
//!    So a burst of submissions to busy workers makes no system calls at all. The decision to signal is
//!    taken under the lock, the signal itself is sent after unlocking: the sleeper registered under the
//!    lock before it waited, so the signal cannot be lost, and the system call stays out of the
//!    critical section.
//! 3. With a bound, a submitter counts itself in `blocked` and then reads the queue's length (the
//!    inbox's, under its lock, plus `outbox_len`); while it is at the bound it waits on `space`. A
//!    worker of a bounded queue stores `outbox_len` after each pop and then reads `blocked` (an
//!    unbounded queue skips both: no submitter ever waits for room); when a submitter waits, it
//!    takes the inbox's lock and signals `space`. A worker that moves the inbox over stores the
//!    outbox's new length before it releases the inbox's lock, so the moved jobs are always counted. Both sides write, then read, sequentially consistent
//!    atomics, so at least one sees the other: the submitter sees the room, or the worker sees the
//!    submitter and wakes it.
//! 4. Shutdown sets `closed` and wakes everyone: workers drain the queue (`Wait`) or both halves are
//!    emptied first and the removed jobs are dropped, which resolves their futures as cancelled
//!    (`CancelPending`); workers exit when both halves are empty and `closed` is set.
//! 5. Before sleeping, an idle worker waits a few rounds of [`backoff`] without a lock, watching
//!    `has_work` (kept under the inbox's lock: set by the push that makes the inbox non-empty, cleared
//!    by the move that empties it, set by shutdown), then looks again under the locks. A submission
//!    that arrives meanwhile costs neither the worker a sleep nor the submitter a wake-up call.
//!    `has_work` and `inbox_has` are only hints: every decision is taken again under the locks, so a
//!    stale value costs a round, never a lost job.
//! 6. A worker publishes the token state of the job it runs in its `running` slot (a pointer, without
//!    a reference count of its own) and keeps the job's own reference to that state until after it
//!    has cleared the slot. A `CancelPending` shutdown takes `firing_lock`, sets `firing`, then reads
//!    every slot and fires what it finds; a worker clears its slot, then reads `firing`, and if it is
//!    set takes `firing_lock` (waiting out the shutdown) before it lets the reference go. Both sides
//!    write, then read, sequentially consistent atomics, so either the shutdown reads the cleared
//!    slot, or the worker sees `firing` and waits: the shutdown never reads a freed token. The
//!    common case costs one atomic exchange per job and no lock.

use super::{Admission, Backend, BackendConfig, Rejected};
use crate::cancel::{CancelToken, TokenState};
use crate::cell::CellJob;
use crate::error::Error;
use crate::job::{Job, Runnable};
use crate::local::{self, WorkerInfo};
use crate::options::{Priority, Shutdown};
use crate::sync::{Arc, AtomicBool, AtomicPtr, AtomicUsize, Condvar, Mutex, MutexGuard, Ordering};
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

/// Rounds of [`backoff`] that busy-spin (1, 2, 4, 8 pauses: 15 in all); the rest yield the core.
///
/// The cost of a `pause` differs tenfold between CPUs (about 10 cycles on older Intel cores, 65 on
/// AMD Zen 3, 140 on Intel Xeon since Skylake), and under KVM a run of pauses longer than the
/// hypervisor's pause-loop window (4,096 cycles by default on Intel hosts) makes the virtual CPU
/// exit to the host, which deschedules it. Fifteen pauses stay under that window on every CPU
/// above (≈ 2,100 cycles at 140 each); 63, as before, did not on a recent Xeon (≈ 8,800).
const PAUSE_ROUNDS: u32 = 4;

/// One round of waiting without the lock: busy-spin for the first rounds, then yield the core,
/// which on a machine with more threads than cores lets the submitter run.
fn backoff(round: u32) {
    if round < PAUSE_ROUNDS {
        for _ in 0..1u32 << round {
            std::hint::spin_loop();
        }
    } else {
        thread::yield_now();
    }
}

/// Set only for the self-check of the instruction-count guard (`scripts/inscount.sh --self-check`):
/// a library built with `MARTELLI_INSCOUNT_SLOWDOWN` in its compile-time environment does about a
/// thousand extra instructions per submission, which the guard must catch. Ordinary builds compile
/// the extra work out entirely.
const SLOWDOWN: bool = option_env!("MARTELLI_INSCOUNT_SLOWDOWN").is_some();

/// Keeps what one side writes often off the cache lines the other side reads (128 bytes: x86 fetches
/// lines in pairs).
#[repr(align(128))]
struct Padded<T>(T);

/// A queued job: a task cell's (`Pool::submit`: one allocation per task) or a boxed one (scoped
/// jobs, async tasks, consumers).
enum Work {
    Cell(CellJob),
    Boxed(Box<dyn Runnable>),
}

impl Work {
    fn run(self) {
        match self {
            Work::Cell(job) => job.run(),
            Work::Boxed(job) => job.run(),
        }
    }

    fn token(&self) -> &CancelToken {
        match self {
            Work::Cell(job) => job.token(),
            Work::Boxed(job) => job.token(),
        }
    }

    /// A refused job, handed back as it came.
    fn into_job(self, priority: Priority) -> Job {
        let task: Box<dyn Runnable> = match self {
            Work::Boxed(task) => task,
            Work::Cell(job) => Box::new(job),
        };
        Job { priority, task }
    }

    /// A refused cell job, handed back as it came.
    fn into_cell(self) -> CellJob {
        match self {
            Work::Cell(job) => job,
            // Unreachable: a cell job is pushed as `Work::Cell` and refused as it is.
            Work::Boxed(_) => unreachable!("a refused cell job comes back as a cell job"),
        }
    }
}

/// Jobs in priority levels (0: high).
#[derive(Default)]
struct Levels {
    levels: [VecDeque<Work>; 3],
    len: usize,
}

impl Levels {
    fn push(&mut self, level: usize, job: Work) {
        self.levels[level].push_back(job);
        self.len += 1;
    }

    fn pop(&mut self) -> Option<Work> {
        let job = self.levels.iter_mut().find_map(VecDeque::pop_front)?;
        self.len -= 1;
        Some(job)
    }

    /// The highest level that holds a job (3: none).
    fn best(&self) -> usize {
        self.levels
            .iter()
            .position(|l| !l.is_empty())
            .unwrap_or(self.levels.len())
    }

    /// Moves every job of `from` to the end of its level here.
    fn take_all(&mut self, from: &mut Levels) {
        for (to, from) in self.levels.iter_mut().zip(from.levels.iter_mut()) {
            if to.is_empty() {
                std::mem::swap(to, from);
            } else {
                to.append(from);
            }
        }
        self.len += from.len;
        from.len = 0;
    }

    fn drain(&mut self) -> Vec<Work> {
        self.len = 0;
        self.levels.iter_mut().flat_map(|l| l.drain(..)).collect()
    }
}

/// The submitters' half of the queue, and the bookkeeping that goes with their lock.
struct Inbox {
    jobs: Levels,
    bound: Option<usize>,
    sleeping: usize,
    to_wake: usize,
    closed: bool,
}

/// The workers' half of the queue.
struct Outbox {
    jobs: Levels,
}

/// Hints and counters read without a lock.
struct Hints {
    /// The inbox holds jobs (rule 5).
    has_work: AtomicBool,
    /// The inbox holds jobs of this level (rule 1).
    inbox_has: [AtomicBool; 3],
    /// Submitters waiting for room (rule 3).
    blocked: AtomicUsize,
}

struct Inner {
    id: u64,
    outbox: Padded<Mutex<Outbox>>,
    /// The outbox's length, stored by workers under its lock (rule 3).
    outbox_len: Padded<AtomicUsize>,
    inbox: Padded<Mutex<Inbox>>,
    hints: Padded<Hints>,
    work: Condvar,
    space: Condvar,
    /// The token state of the task each worker runs (null: none), so `CancelPending` can fire it
    /// (rule 6). Padded: each worker writes its own twice per job.
    running: Box<[Padded<AtomicPtr<TokenState>>]>,
    /// Set by a `CancelPending` shutdown before it reads `running` (rule 6).
    firing: AtomicBool,
    /// Held by the shutdown while it fires the tokens in `running` (rule 6).
    firing_lock: Mutex<()>,
    /// The queue has a bound: only then do workers publish `outbox_len` and look for blocked
    /// submitters (rule 3), which costs a sequentially consistent store per job on a shared line.
    bounded: bool,
}

impl Inner {
    fn new(workers: usize, bound: Option<usize>) -> Inner {
        let n = workers;
        Inner {
            id: crate::sync::next_id(),
            outbox: Padded(Mutex::new(Outbox {
                jobs: Levels::default(),
            })),
            outbox_len: Padded(AtomicUsize::new(0)),
            inbox: Padded(Mutex::new(Inbox {
                jobs: Levels::default(),
                bound,
                sleeping: 0,
                to_wake: 0,
                closed: false,
            })),
            hints: Padded(Hints {
                has_work: AtomicBool::new(false),
                inbox_has: [
                    AtomicBool::new(false),
                    AtomicBool::new(false),
                    AtomicBool::new(false),
                ],
                blocked: AtomicUsize::new(0),
            }),
            work: Condvar::new(),
            space: Condvar::new(),
            running: (0..n)
                .map(|_| Padded(AtomicPtr::new(std::ptr::null_mut())))
                .collect(),
            firing: AtomicBool::new(false),
            firing_lock: Mutex::new(()),
            bounded: bound.is_some(),
        }
    }

    /// With the outbox locked: pops the next job, moving the inbox over first when the outbox is empty
    /// or the inbox holds a higher level (rule 1). Returns the inbox's guard when it had to look there
    /// and found nothing, so that the caller can sleep without letting a submission slip by.
    fn pop<'a>(&'a self, outbox: &mut Outbox) -> Result<Work, MutexGuard<'a, Inbox>> {
        let best = outbox.jobs.best();
        let higher_waiting = self.hints.0.inbox_has[..best]
            .iter()
            .any(|h| h.load(Ordering::Acquire));
        if !higher_waiting {
            if let Some(job) = outbox.jobs.pop() {
                self.popped(outbox);
                return Ok(job);
            }
        }
        let mut inbox = self.inbox.0.lock();
        if inbox.jobs.len > 0 {
            outbox.jobs.take_all(&mut inbox.jobs);
            // Published before the inbox's lock is released, so that a submitter never counts the
            // moved jobs in neither half (rule 3).
            if self.bounded {
                self.outbox_len.0.store(outbox.jobs.len, Ordering::SeqCst);
            }
            for hint in &self.hints.0.inbox_has {
                hint.store(false, Ordering::Relaxed);
            }
            self.hints.0.has_work.store(false, Ordering::Relaxed);
        }
        match outbox.jobs.pop() {
            Some(job) => {
                drop(inbox);
                self.popped(outbox);
                Ok(job)
            }
            None => Err(inbox),
        }
    }

    /// Pushes a job into the inbox (rules 2 and 3).
    fn submit(
        &self,
        job: Work,
        priority: Priority,
        admission: Admission,
    ) -> Result<(), Rejected<Work>> {
        if SLOWDOWN {
            for i in 0..256u32 {
                std::hint::black_box(i);
            }
        }
        let inner = self;
        let hints = &inner.hints.0;
        let mut q = inner.inbox.0.lock();
        loop {
            if q.closed {
                return Err(Rejected::ShutDown(job));
            }
            let Some(bound) = q.bound else { break };
            // Rule 3: count ourselves as waiting before reading the length.
            hints.blocked.fetch_add(1, Ordering::SeqCst);
            let len = q.jobs.len + inner.outbox_len.0.load(Ordering::SeqCst);
            if len < bound {
                hints.blocked.fetch_sub(1, Ordering::SeqCst);
                break;
            }
            if admission == Admission::Try {
                hints.blocked.fetch_sub(1, Ordering::SeqCst);
                return Err(Rejected::Full(job));
            }
            if POOL_OF_THIS_THREAD.with(Cell::get) == inner.id {
                // A worker submitting to its own full pool would wait for itself: run the job here
                // instead (the queue's bound still holds).
                hints.blocked.fetch_sub(1, Ordering::SeqCst);
                drop(q);
                job.run();
                return Ok(());
            }
            q = inner.space.wait(q);
            hints.blocked.fetch_sub(1, Ordering::SeqCst);
        }
        let level = priority.level();
        q.jobs.push(level, job);
        if !hints.inbox_has[level].load(Ordering::Relaxed) {
            hints.inbox_has[level].store(true, Ordering::Release);
        }
        if q.jobs.len == 1 {
            hints.has_work.store(true, Ordering::Relaxed);
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

    /// Closes the queue (rule 4): no more submissions; with `CancelPending` the queued jobs are taken
    /// out and returned (dropping them cancels their futures); every sleeper is woken and running
    /// tasks' tokens fire.
    fn close(&self, mode: Shutdown) -> Vec<Work> {
        let discarded: Vec<Work> = {
            let mut outbox = self.outbox.0.lock();
            let mut inbox = self.inbox.0.lock();
            inbox.closed = true;
            match mode {
                Shutdown::Wait => Vec::new(),
                Shutdown::CancelPending => {
                    let mut jobs = outbox.jobs.drain();
                    jobs.extend(inbox.jobs.drain());
                    self.outbox_len.0.store(0, Ordering::SeqCst);
                    jobs
                }
            }
        };
        // Ends the spinning of idle workers at once: they take the locks and see `closed`.
        self.hints.0.has_work.store(true, Ordering::Relaxed);
        self.work.notify_all();
        self.space.notify_all();
        if mode == Shutdown::CancelPending {
            // Rule 6: announce, then read the slots, all while holding `firing_lock`.
            let _firing = self.firing_lock.lock();
            self.firing.store(true, Ordering::SeqCst);
            for Padded(slot) in self.running.iter() {
                let state = slot.load(Ordering::SeqCst);
                // SAFETY: a non-null slot points to the token state of a job its worker runs or has
                // just run; the worker keeps the job's reference to that state until it has cleared
                // the slot and, seeing `firing` set, waited for `firing_lock`, which this thread
                // holds (rule 6). So the state is alive here.
                if let Some(state) = unsafe { state.as_ref() } {
                    state.cancel();
                }
            }
        }
        discarded
    }

    /// After a pop: publishes the outbox's length and wakes a submitter waiting for room (rule 3).
    fn popped(&self, outbox: &Outbox) {
        if !self.bounded {
            return;
        }
        self.outbox_len.0.store(outbox.jobs.len, Ordering::SeqCst);
        if self.hints.0.blocked.load(Ordering::SeqCst) > 0 {
            let _inbox = self.inbox.0.lock();
            self.space.notify_one();
        }
    }

    /// Takes the next job, sleeping while there is none. `None` once closed and drained.
    fn next_job(&self) -> Option<Work> {
        let mut spins = 0;
        loop {
            let mut outbox = self.outbox.0.lock();
            let mut inbox = match self.pop(&mut outbox) {
                Ok(job) => return Some(job),
                Err(inbox) => inbox,
            };
            drop(outbox);
            if inbox.closed {
                return None;
            }
            if spins < SPIN_ROUNDS {
                // Rule 5: wait a moment without the locks for a submission before going to sleep.
                drop(inbox);
                while spins < SPIN_ROUNDS && !self.hints.0.has_work.load(Ordering::Relaxed) {
                    backoff(spins);
                    spins += 1;
                }
                continue;
            }
            inbox.sleeping += 1;
            inbox = self.work.wait(inbox);
            inbox.sleeping -= 1;
            inbox.to_wake = inbox.to_wake.saturating_sub(1);
            spins = 0;
        }
    }

    /// Runs `job` on worker `index`, published in its `running` slot meanwhile (rule 6).
    fn run(&self, index: usize, job: Work) {
        let slot = &self.running[index].0;
        let state: *const TokenState = job.token().host().state();
        slot.store(state.cast_mut(), Ordering::Release);
        // The job's reference to its cell (or a clone, for a boxed job) keeps `state` alive until
        // the slot is cleared below.
        let keep = match job {
            Work::Cell(job) => job.run_keeping_token(),
            Work::Boxed(job) => {
                let token = job.token().clone();
                job.run();
                token
            }
        };
        slot.store(std::ptr::null_mut(), Ordering::SeqCst);
        if self.firing.load(Ordering::SeqCst) {
            // A shutdown may be reading the slot's old value: wait until it has fired the tokens.
            drop(self.firing_lock.lock());
        }
        crate::cell::release(keep);
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
        let inner = Arc::new(Inner::new(n, config.queue_bound));
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
        let Job { priority, task } = job;
        self.inner
            .submit(Work::Boxed(task), priority, admission)
            .map_err(|rejected| match rejected {
                Rejected::Full(work) => Rejected::Full(work.into_job(priority)),
                Rejected::ShutDown(work) => Rejected::ShutDown(work.into_job(priority)),
            })
    }

    fn execute_cell(
        &self,
        job: CellJob,
        priority: Priority,
        admission: Admission,
    ) -> Result<(), Rejected<CellJob>> {
        self.inner
            .submit(Work::Cell(job), priority, admission)
            .map_err(|rejected| match rejected {
                Rejected::Full(work) => Rejected::Full(work.into_cell()),
                Rejected::ShutDown(work) => Rejected::ShutDown(work.into_cell()),
            })
    }

    fn queued(&self) -> usize {
        let outbox = self.inner.outbox.0.lock();
        let inbox = self.inner.inbox.0.lock();
        outbox.jobs.len + inbox.jobs.len
    }

    fn help_one(&self) -> bool {
        if POOL_OF_THIS_THREAD.with(Cell::get) != self.inner.id {
            return false;
        }
        let job = {
            let mut outbox = self.inner.outbox.0.lock();
            self.inner.pop(&mut outbox)
        };
        match job {
            Ok(job) => {
                job.run();
                true
            }
            Err(_) => false,
        }
    }

    fn hosts_daemons(&self) -> Result<(), &'static str> {
        Ok(())
    }

    fn shutdown(&self, mode: Shutdown) {
        let discarded = self.inner.close(mode);
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
        self.inner.inbox.0.lock().closed
    }
}

#[cfg(all(test, not(loom)))]
mod tests;

/// loom models of the protocol above: every interleaving of a worker and its submitters, up to the
/// preemption bound of `scripts/loom.sh`.
#[cfg(all(test, loom))]
mod loom_models;
