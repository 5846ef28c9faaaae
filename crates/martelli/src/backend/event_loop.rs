//! The event-loop backend, on tokio: the tier of one thread and many waits. Async tasks switch only at
//! their `.await` points, the cheapest task switch there is, so one thread serves thousands of
//! concurrent I/O waits. martelli does not write an event loop; it drives tokio's.
//!
//! - By default the pool starts a **current-thread** runtime on a thread of its own (the loop thread);
//!   with a worker count it starts a **multi-thread** runtime. Built inside an existing tokio runtime, it
//!   uses that runtime instead of starting another.
//! - Synchronous closures given to `submit` run *on* the loop (they block it while they run — use
//!   [`to_thread`] for blocking work); async tasks come through `Pool::submit_async`.
//! - The pool counts its live tasks, so `Shutdown::Wait` waits for them, `CancelPending` fires their
//!   tokens (each is dropped at its next `.await`), and a queue bound limits how many may be in flight.

use super::{Admission, Backend, Rejected};
use crate::cancel::{CancelToken, TokenState};
use crate::error::{Error, TaskResult};
use crate::future::promise;
use crate::job::{Job, Plain, TaskJob};
use crate::local::{self, WorkerInfo};
use crate::options::{Priority, Shutdown};
use crate::sync::{Condvar, Mutex};
use crate::task_future::BoxTask;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use tokio::runtime::{Builder, Handle, Runtime};

/// Live tasks of one event-loop pool.
pub(crate) struct Tracker {
    state: Mutex<Tracked>,
    changed: Condvar,
}

struct Tracked {
    live: usize,
    /// Threads blocked on `changed` (a full bound, or a shutdown waiting for the last task): the
    /// condition variable is signalled only when there are some.
    waiting: usize,
    bound: Option<usize>,
    closed: bool,
    /// The tokens of live tasks. Rule: whoever is given a [`Live`] keeps the token's allocation
    /// alive until that `Live` is dropped (which empties the entry, under the lock).
    tokens: TokenSlab,
}

/// The tokens of live tasks, in a slab whose free list runs through its vacant entries: one word
/// per entry, and nothing else per task (100,000 waiting tasks keep a slab of 100,000 words; a
/// separate list of free keys would grow to as many again as they end). A task's key is its index.
/// A live entry is a thin pointer to the token's state, not a counted token; a vacant one holds the
/// next vacant index, shifted left, with the low bit set (a `TokenState` is aligned to 8, so a
/// pointer never has it).
struct TokenSlab {
    entries: Vec<*const TokenState>,
    /// The first vacant entry, [`TokenSlab::END`] if none.
    free: usize,
}

// SAFETY: the pointers are to `TokenState`s, which are `Sync` (a flag and a lock), kept alive by
// the rule of [`Tracked::tokens`] and only used under the tracker's lock; so the slab may move
// between threads.
unsafe impl Send for TokenSlab {}

impl TokenSlab {
    const END: usize = usize::MAX >> 1;

    fn new() -> Self {
        TokenSlab {
            entries: Vec::new(),
            free: Self::END,
        }
    }

    fn vacant(next: usize) -> *const TokenState {
        std::ptr::without_provenance(next << 1 | 1)
    }

    fn is_live(entry: *const TokenState) -> bool {
        entry.addr() & 1 == 0
    }

    /// Keeps `token`; returns its key.
    fn insert(&mut self, token: &TokenState) -> usize {
        let token = std::ptr::from_ref(token);
        match self.entries.get_mut(self.free) {
            Some(entry) => {
                let key = self.free;
                self.free = entry.addr() >> 1;
                *entry = token;
                key
            }
            None => {
                self.entries.push(token);
                self.entries.len() - 1
            }
        }
    }

    /// Empties entry `key` if it is live.
    fn remove(&mut self, key: usize) {
        if let Some(entry) = self.entries.get_mut(key)
            && Self::is_live(*entry)
        {
            *entry = Self::vacant(self.free);
            self.free = key;
        }
    }

    /// The live entries.
    fn live(&self) -> impl Iterator<Item = *const TokenState> + '_ {
        self.entries.iter().copied().filter(|e| Self::is_live(*e))
    }
}

/// Counts one task as live until dropped.
pub(crate) struct Live {
    tracker: Arc<Tracker>,
    /// The task's index in the tracker's slab (4 billion live tasks would need a terabyte).
    key: u32,
}

impl Live {
    /// The count as its two parts, which an async task's cell keeps apart to pack them with its
    /// other fields (`task_future.rs`); [`Live::from_parts`] puts them back together.
    pub(crate) fn into_parts(self) -> (Arc<Tracker>, u32) {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped nor used again: the tracker is moved out once.
        (unsafe { std::ptr::read(&this.tracker) }, this.key)
    }

    /// The count made of the parts [`Live::into_parts`] returned.
    pub(crate) fn from_parts(tracker: Arc<Tracker>, key: u32) -> Live {
        Live { tracker, key }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let mut state = self.tracker.state.lock();
        state.live -= 1;
        let key = self.key as usize;
        state.tokens.remove(key);
        if state.waiting > 0 {
            self.tracker.changed.notify_all();
        }
    }
}

enum Refusal {
    Full,
    ShutDown,
}

impl Tracker {
    /// Counts a task as live, its token's state registered for a shutdown with `CancelPending`.
    /// The caller keeps `token`'s allocation alive until the returned `Live` is dropped (the rule
    /// of [`Tracked::tokens`]).
    fn admit(
        self: &Arc<Self>,
        token: &CancelToken,
        admission: Admission,
        on_loop: bool,
    ) -> Result<Live, Refusal> {
        let mut state = self.state.lock();
        loop {
            if state.closed {
                return Err(Refusal::ShutDown);
            }
            match state.bound {
                Some(bound) if state.live >= bound => match admission {
                    Admission::Try => return Err(Refusal::Full),
                    // Waiting on the loop's own thread would stop the tasks that make room.
                    Admission::Wait if on_loop => break,
                    Admission::Wait => {
                        state.waiting += 1;
                        state = self.changed.wait(state);
                        state.waiting -= 1;
                    }
                },
                _ => break,
            }
        }
        state.live += 1;
        let key = state.tokens.insert(token.host().state());
        Ok(Live {
            tracker: Arc::clone(self),
            key: key as u32,
        })
    }
}

enum Owned {
    /// A current-thread runtime driven by a loop thread until `stop` fires.
    CurrentThread {
        thread: JoinHandle<()>,
        stop: CancelToken,
    },
    MultiThread(Runtime),
}

pub(crate) struct EventLoop {
    id: u64,
    handle: Handle,
    owned: Mutex<Option<Owned>>,
    tracker: Arc<Tracker>,
    workers: usize,
}

impl fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLoop")
            .field("workers", &self.workers)
            .field("live", &self.tracker.state.lock().live)
            .finish()
    }
}

thread_local! {
    /// The id of the event-loop pool whose runtime drives this thread (0: none).
    static LOOP_OF_THIS_THREAD: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl EventLoop {
    /// Starts (or joins) a runtime. `threads`: None for a current-thread runtime, Some(n) for a
    /// multi-thread one with n workers.
    pub(crate) fn start(
        threads: Option<usize>,
        name_prefix: &str,
        queue_bound: Option<usize>,
    ) -> Result<EventLoop, Error> {
        let id = crate::sync::next_id();
        let tracker = Arc::new(Tracker {
            state: Mutex::new(Tracked {
                live: 0,
                waiting: 0,
                bound: queue_bound,
                closed: false,
                tokens: TokenSlab::new(),
            }),
            changed: Condvar::new(),
        });
        let runtime_error = |source: std::io::Error| Error::Spawn {
            name: format!("{name_prefix}-loop"),
            source,
        };
        if let Ok(handle) = Handle::try_current() {
            let workers = match handle.runtime_flavor() {
                tokio::runtime::RuntimeFlavor::CurrentThread => 1,
                _ => handle.metrics().num_workers(),
            };
            return Ok(EventLoop {
                id,
                handle,
                owned: Mutex::new(None),
                tracker,
                workers,
            });
        }
        let prefix = name_prefix.to_owned();
        let (handle, owned, workers) = match threads {
            None => {
                let runtime = Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(runtime_error)?;
                let handle = runtime.handle().clone();
                let stop = CancelToken::new();
                let loop_stop = stop.clone();
                let name = format!("{prefix}-loop");
                let info = WorkerInfo::new(0, name.clone(), "async");
                let thread = std::thread::Builder::new()
                    .name(name)
                    .spawn(move || {
                        LOOP_OF_THIS_THREAD.with(|l| l.set(id));
                        let _worker = local::enter_worker(info);
                        runtime.block_on(loop_stop.cancelled());
                    })
                    .map_err(runtime_error)?;
                (handle, Owned::CurrentThread { thread, stop }, 1)
            }
            Some(n) => {
                let n = n.max(1);
                let counter = std::sync::Arc::new(AtomicU64::new(0));
                let runtime = Builder::new_multi_thread()
                    .worker_threads(n)
                    .thread_name_fn({
                        let prefix = prefix.clone();
                        let counter = std::sync::Arc::clone(&counter);
                        move || format!("{prefix}-{}", counter.fetch_add(1, Ordering::Relaxed))
                    })
                    .on_thread_start(move || LOOP_OF_THIS_THREAD.with(|l| l.set(id)))
                    .enable_all()
                    .build()
                    .map_err(runtime_error)?;
                (runtime.handle().clone(), Owned::MultiThread(runtime), n)
            }
        };
        Ok(EventLoop {
            id,
            handle,
            owned: Mutex::new(Some(owned)),
            tracker,
            workers,
        })
    }

    /// True on a thread that drives a tokio runtime (this pool's or any other).
    fn on_a_runtime_thread(&self) -> bool {
        LOOP_OF_THIS_THREAD.with(|l| l.get()) == self.id || Handle::try_current().is_ok()
    }
}

/// A boxed task on the runtime (`Backend::spawn_task`), counted as live until tokio drops it.
/// `submit_async` does not come this way: it spawns its driver with [`EventLoop::spawn_driver`].
struct Counted<F> {
    /// Structurally pinned: only reached through `Pin::map_unchecked_mut` in `poll`.
    fut: F,
    _live: Live,
    /// The task's token, kept until `_live` (declared before it, so dropped before it) has left
    /// the tracker's slab.
    _token: CancelToken,
}

impl<F: std::future::Future<Output = ()>> std::future::Future for Counted<F> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        // SAFETY: `fut` is pinned whenever `self` is: it is never moved out of `Counted`, which has
        // no `Drop` of its own and is not `Unpin` by hand, so it is dropped in place.
        unsafe { self.map_unchecked_mut(|counted| &mut counted.fut) }.poll(cx)
    }
}

impl EventLoop {
    /// Spawns `fut` on the runtime once the pool admits it; `token` is the task's, fired by a
    /// shutdown with `CancelPending`.
    pub(crate) fn spawn_future<F>(&self, fut: F, token: CancelToken) -> Result<(), Error>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let live = self
            .tracker
            .admit(&token, Admission::Wait, self.on_a_runtime_thread())
            .map_err(|_| Error::ShutDown)?;
        drop(self.handle.spawn(Counted {
            fut,
            _live: live,
            _token: token,
        }));
        crate::chaos::point();
        Ok(())
    }

    /// Spawns an async task's driver once the pool admits it: the driver lives in tokio's task
    /// cell as it is, and the task's live count in the driver's own state (a word of tokio's cell
    /// for everything martelli keeps per task).
    pub(crate) fn spawn_driver<F>(
        &self,
        mut driver: crate::task_future::Driver<F>,
        token: CancelToken,
    ) -> Result<(), Error>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        // The driver's cell holds the token's state, and the driver releases its `Live` before it
        // lets the cell go (`task_future.rs`): the tracker's rule holds.
        let live = self
            .tracker
            .admit(&token, Admission::Wait, self.on_a_runtime_thread())
            .map_err(|_| Error::ShutDown)?;
        drop(token);
        driver.set_live(live);
        drop(self.handle.spawn(driver));
        crate::chaos::point();
        Ok(())
    }
}

impl Backend for EventLoop {
    fn kind(&self) -> &'static str {
        "async"
    }

    fn workers(&self) -> usize {
        self.workers
    }

    fn execute(&self, job: Job, admission: Admission) -> Result<(), Rejected> {
        let token = job.task.token().clone();
        let live = match self
            .tracker
            .admit(&token, admission, self.on_a_runtime_thread())
        {
            Ok(live) => live,
            Err(Refusal::Full) => return Err(Rejected::Full(job)),
            Err(Refusal::ShutDown) => return Err(Rejected::ShutDown(job)),
        };
        self.handle.spawn(async move {
            // Dropped in reverse order: the count leaves the slab before the token goes.
            let _token = token;
            let _live = live;
            job.run();
        });
        Ok(())
    }

    fn spawn_task(
        &self,
        task: BoxTask,
        token: CancelToken,
        _priority: Priority,
    ) -> Result<(), Error> {
        self.spawn_future(task, token)
    }

    fn event_loop(&self) -> Option<&EventLoop> {
        Some(self)
    }

    fn queued(&self) -> usize {
        0
    }

    fn help_one(&self) -> bool {
        false
    }

    fn hosts_daemons(&self) -> Result<(), &'static str> {
        Err("on its event-loop thread")
    }

    fn shutdown(&self, mode: Shutdown) {
        {
            let mut state = self.tracker.state.lock();
            state.closed = true;
            if mode == Shutdown::CancelPending {
                for token in state.tokens.live() {
                    // SAFETY: an entry is emptied, under this lock, before its token's allocation
                    // may go (the rule of `Tracked::tokens`), so it points to a live token.
                    unsafe { &*token }.cancel();
                }
            }
        }
        self.tracker.changed.notify_all();
        // Waiting for the tasks from a thread that drives a runtime would stop the very tasks waited
        // for; there the tasks are left to finish on their runtime.
        if !self.on_a_runtime_thread() {
            let mut state = self.tracker.state.lock();
            while state.live > 0 {
                state.waiting += 1;
                state = self.tracker.changed.wait(state);
                state.waiting -= 1;
            }
        }
        let owned = self.owned.lock().take();
        match owned {
            Some(Owned::CurrentThread { thread, stop }) => {
                stop.cancel();
                if thread.thread().id() != std::thread::current().id() {
                    let _ = thread.join();
                }
            }
            Some(Owned::MultiThread(runtime)) => runtime.shutdown_background(),
            None => {}
        }
    }

    fn is_shut_down(&self) -> bool {
        self.tracker.state.lock().closed
    }
}

/// Runs blocking or CPU-bound `f` on a thread and awaits its outcome without stalling the event loop:
/// Python's `asyncio.to_thread`. Inside a tokio runtime it uses tokio's blocking-thread pool; elsewhere a
/// new thread. A panic in `f` is the outcome [`TaskError::Panicked`](crate::TaskError::Panicked).
///
/// ```
/// # let rt = tokio::runtime::Builder::new_current_thread().build()?;
/// # rt.block_on(async {
/// let digest = martelli::to_thread(|| (0..1_000_000u64).sum::<u64>()).await?;
/// assert_eq!(digest, 499_999_500_000);
/// # Ok::<(), martelli::TaskError>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub async fn to_thread<F, T>(f: F) -> TaskResult<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (promise, future) = promise::<T>();
    let job = TaskJob {
        body: Plain(f),
        promise,
        timeout: None,
    };
    let started = match Handle::try_current() {
        Ok(handle) => {
            drop(handle.spawn_blocking(move || job.run()));
            Ok(())
        }
        Err(_) => std::thread::Builder::new()
            .name("martelli-to-thread".into())
            .spawn(move || job.run())
            .map(drop),
    };
    if let Err(err) = started {
        return Err(crate::TaskError::Failed(crate::TaskFailure::from_message(
            format!("could not start a thread for to_thread: {err}"),
        )));
    }
    future.await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_slab_reuses_vacant_entries_and_lists_only_live_ones() {
        let states: Vec<TokenState> = (0..4).map(|_| TokenState::default()).collect();
        let mut slab = TokenSlab::new();
        let keys: Vec<usize> = states.iter().map(|s| slab.insert(s)).collect();
        assert_eq!(keys, [0, 1, 2, 3]);
        slab.remove(1);
        slab.remove(3);
        slab.remove(3); // twice: the second does nothing
        slab.remove(99); // no such entry
        let live: Vec<*const TokenState> = slab.live().collect();
        assert_eq!(
            live,
            [
                std::ptr::from_ref(&states[0]),
                std::ptr::from_ref(&states[2])
            ]
        );
        // The last vacated entry is reused first, then the one before; then the slab grows.
        assert_eq!(slab.insert(&states[3]), 3);
        assert_eq!(slab.insert(&states[1]), 1);
        assert_eq!(slab.insert(&states[1]), 4);
        assert_eq!(slab.live().count(), 5);
        assert_eq!(slab.entries.len(), 5);
    }
}
