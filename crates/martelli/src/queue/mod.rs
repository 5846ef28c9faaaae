//! [`JoinableQueue<T>`]: the second way to hand work over. Producers put items, long-lived workers
//! take them, and [`join`](JoinableQueue::join) waits until every item has been marked done.
//!
//! ```
//! use martelli::JoinableQueue;
//! use std::thread;
//!
//! let queue = JoinableQueue::bounded(16);
//! let worker = {
//!     let queue = queue.clone();
//!     thread::spawn(move || {
//!         let mut sum = 0;
//!         while let Ok(n) = queue.get() {
//!             sum += n;
//!             queue.task_done()?;
//!         }
//!         Ok::<_, martelli::TaskDoneError>(sum)
//!     })
//! };
//! for n in 1..=100 {
//!     queue.put(n)?;
//! }
//! queue.join(); // every item taken *and* marked done
//! queue.close(); // the worker's next get returns Closed
//! assert_eq!(worker.join().unwrap()?, 5050);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The semantics are Python's `queue.Queue` (3.13, with `shutdown`):
//!
//! - every [`put`](JoinableQueue::put) counts one *unfinished* item; every
//!   [`task_done`](JoinableQueue::task_done) marks one done; [`join`](JoinableQueue::join) returns
//!   once none is unfinished. A `task_done` too many is an error ([`TaskDoneError`]), not a silent
//!   miscount. A [`Taken`] guard (from [`take`](JoinableQueue::take)) marks its item done when it drops,
//!   even while a panic unwinds, so a failing consumer cannot hang `join`.
//! - [`close`](JoinableQueue::close) is `shutdown()`: puts fail with the item handed back, gets drain
//!   what is left and then fail with `Closed`, and every blocked caller wakes.
//!   [`close_now`](JoinableQueue::close_now) is `shutdown(immediate=True)`: it also removes what is
//!   queued, counts those items done (so `join` waits only for items already taken) and hands them back.
//!
//! Handles are cheap to clone; every clone is the same queue. Pair a queue with
//! [`Pool::consume`](crate::Pool::consume) to serve it with daemon workers.
//!
//! # Protocol
//!
//! One mutex guards the items, the `closed` flag and the sleep bookkeeping; three condition variables
//! carry the wake-ups: `not_empty` for getters, `not_full` for putters (bounded queues), `all_done` for
//! joiners. The count of unfinished items is an atomic, so `task_done` — once per item, on the hot
//! path — takes no lock unless someone joins. The rules:
//!
//! 1. `put` increments `unfinished` under the lock, before the item is pushed. So the matching
//!    `task_done`, which can only follow a `get` of that item (under the same lock), always finds the
//!    increment, and `unfinished >= len` holds whenever the lock is free.
//! 2. `task_done` decrements `unfinished` with a compare-and-swap that refuses to go below zero: a
//!    miscount is reported and changes nothing.
//! 3. A joiner increments `joiners` and then re-reads `unfinished`, both sequentially consistent and
//!    under the lock, and sleeps on `all_done` while it is not zero. A `task_done` that brings
//!    `unfinished` to zero reads `joiners` afterwards (also `SeqCst`); if any, it takes the lock and
//!    notifies. In the single order of `SeqCst` operations either the joiner sees zero or the
//!    `task_done` sees the joiner; and since the joiner holds the lock from its check until it sleeps,
//!    the notification cannot fall between the two.
//! 4. A getter sleeps on `not_empty` only while there is no item and the queue is open; a putter sleeps
//!    on `not_full` only while the queue is full and open. Each side counts its sleepers and how many
//!    have been signalled but not yet woken: a push (pop) signals one sleeping getter (putter) only when
//!    some sleeper has not been signalled already, so a burst to a busy queue makes no system calls.
//!    A waiter that leaves without acting on a signal it may have consumed (a consumer told to stop)
//!    passes the signal on.
//! 5. `close` sets `closed`, which is never cleared, and wakes every sleeper. `close_now` also removes
//!    every item and subtracts their number from `unfinished` (rule 1 keeps it from underflowing), then
//!    notifies joiners.

mod error;
mod store;

pub use error::{
    GetError, GetTimeoutError, JoinTimeoutError, PutError, PutTimeoutError, TaskDoneError,
    TryGetError, TryPutError,
};
pub use store::Order;

use crate::sync::{Arc, AtomicBool, AtomicU64, Condvar, Mutex, MutexGuard, Ordering};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};
use store::Store;

/// A multi-producer, multi-consumer work queue with Python's `task_done`/`join` accounting.
///
/// See the [module documentation](self) for the semantics and the protocol.
pub struct JoinableQueue<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    capacity: Option<usize>,
    not_empty: Condvar,
    not_full: Condvar,
    all_done: Condvar,
    /// Items put and not yet marked done (rules 1–3).
    unfinished: AtomicU64,
    /// Threads inside `join` (rule 3).
    joiners: AtomicU64,
}

struct State<T> {
    items: Store<T>,
    closed: bool,
    getters: Sleepers,
    putters: Sleepers,
}

/// Rule 4's bookkeeping for one condition variable.
#[derive(Debug, Default)]
struct Sleepers {
    sleeping: usize,
    signalled: usize,
}

impl Sleepers {
    /// True when a sleeper should be signalled: one that has not been signalled already.
    #[inline]
    fn claim(&mut self) -> bool {
        if self.sleeping > self.signalled {
            self.signalled += 1;
            true
        } else {
            false
        }
    }

    /// Bookkeeping for a sleeper that woke, for whatever reason.
    #[inline]
    fn woke(&mut self) {
        self.sleeping -= 1;
        self.signalled = self.signalled.saturating_sub(1).min(self.sleeping);
    }
}

/// How long an operation may block.
#[derive(Clone, Copy)]
enum Block {
    Never,
    Until(Instant),
    Forever,
}

impl Block {
    fn after(timeout: Duration) -> Block {
        // A timeout too large for an `Instant` is as good as forever.
        Instant::now()
            .checked_add(timeout)
            .map_or(Block::Forever, Block::Until)
    }
}

/// Why an internal operation did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `Block::Never` and the queue was full (put) or empty (get).
    WouldBlock,
    /// The deadline passed.
    Timeout,
    /// The queue is closed (and, for gets, empty).
    Closed,
    /// The caller's stop flag fired (gets only; a stopped put goes through).
    Stopped,
}

impl<T> Shared<T> {
    /// Sleeps on `cond` as rule 4 says, until `block` ends. Returns the guard and whether it timed out.
    fn sleep<'a>(
        &self,
        cond: &Condvar,
        mut state: MutexGuard<'a, State<T>>,
        getter: bool,
        block: Block,
    ) -> (MutexGuard<'a, State<T>>, bool) {
        if getter {
            state.getters.sleeping += 1;
        } else {
            state.putters.sleeping += 1;
        }
        let (mut state, timed_out) = match block {
            Block::Forever => (cond.wait(state), false),
            Block::Until(deadline) => cond.wait_until(state, deadline),
            Block::Never => (state, true),
        };
        if getter {
            state.getters.woke();
        } else {
            state.putters.woke();
        }
        (state, timed_out)
    }

    fn is_full(&self, state: &State<T>) -> bool {
        self.capacity.is_some_and(|cap| state.items.len() >= cap)
    }

    /// Puts `item`, blocking as `block` says. When `stop` fires while the queue is full, the item goes
    /// in anyway (the bound is overrun by one) so that a stopping consumer loses no result.
    fn put(&self, item: T, block: Block, stop: Option<&AtomicBool>) -> Result<(), (T, Refusal)> {
        let mut state = self.state.lock();
        let mut expired = false;
        loop {
            if state.closed {
                return Err((item, Refusal::Closed));
            }
            if !self.is_full(&state) || stop.is_some_and(|s| s.load(Ordering::Acquire)) {
                break;
            }
            match block {
                Block::Never => return Err((item, Refusal::WouldBlock)),
                _ if expired => return Err((item, Refusal::Timeout)),
                _ => {}
            }
            let (guard, timed_out) = self.sleep(&self.not_full, state, false, block);
            state = guard;
            expired = timed_out;
        }
        // Rule 1: count the item before it becomes visible.
        self.unfinished.fetch_add(1, Ordering::Relaxed);
        state.items.push(item);
        if state.getters.claim() {
            self.not_empty.notify_one();
        }
        Ok(())
    }

    /// Gets an item, blocking as `block` says. When `stop` fires, returns `Stopped` without taking one.
    fn get(&self, block: Block, stop: Option<&AtomicBool>) -> Result<T, Refusal> {
        let mut state = self.state.lock();
        let mut expired = false;
        loop {
            if stop.is_some_and(|s| s.load(Ordering::Acquire)) {
                // Rule 4: a signal this getter consumed must not strand an item.
                if state.items.len() > 0 && state.getters.claim() {
                    self.not_empty.notify_one();
                }
                return Err(Refusal::Stopped);
            }
            if let Some(item) = state.items.pop() {
                if self.capacity.is_some() && state.putters.claim() {
                    self.not_full.notify_one();
                }
                return Ok(item);
            }
            if state.closed {
                return Err(Refusal::Closed);
            }
            match block {
                Block::Never => return Err(Refusal::WouldBlock),
                _ if expired => return Err(Refusal::Timeout),
                _ => {}
            }
            let (guard, timed_out) = self.sleep(&self.not_empty, state, true, block);
            state = guard;
            expired = timed_out;
        }
    }

    fn task_done(&self) -> Result<(), TaskDoneError> {
        // Rule 2.
        let mut current = self.unfinished.load(Ordering::Relaxed);
        loop {
            if current == 0 {
                return Err(TaskDoneError);
            }
            match self.unfinished.compare_exchange_weak(
                current,
                current - 1,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        // Rule 3.
        if current == 1 && self.joiners.load(Ordering::SeqCst) > 0 {
            let _state = self.state.lock();
            self.all_done.notify_all();
        }
        Ok(())
    }

    fn join(&self, block: Block) -> Result<(), JoinTimeoutError> {
        if self.unfinished.load(Ordering::SeqCst) == 0 {
            return Ok(());
        }
        let mut state = self.state.lock();
        self.joiners.fetch_add(1, Ordering::SeqCst);
        let result = loop {
            let unfinished = self.unfinished.load(Ordering::SeqCst);
            if unfinished == 0 {
                break Ok(());
            }
            let timed_out;
            (state, timed_out) = match block {
                Block::Forever => (self.all_done.wait(state), false),
                Block::Until(deadline) => self.all_done.wait_until(state, deadline),
                Block::Never => (state, true),
            };
            if timed_out {
                let unfinished = self.unfinished.load(Ordering::SeqCst);
                break if unfinished == 0 {
                    Ok(())
                } else {
                    Err(JoinTimeoutError {
                        unfinished: usize::try_from(unfinished).unwrap_or(usize::MAX),
                    })
                };
            }
        };
        self.joiners.fetch_sub(1, Ordering::SeqCst);
        drop(state);
        result
    }

    fn close(&self, discard: bool) -> Vec<T> {
        let mut state = self.state.lock();
        state.closed = true;
        let discarded = if discard {
            state.items.drain()
        } else {
            Vec::new()
        };
        if !discarded.is_empty() {
            // Rule 5: the discarded items count as done; rule 1 keeps this from underflowing.
            let n = discarded.len() as u64;
            self.unfinished.fetch_sub(n, Ordering::SeqCst);
            self.all_done.notify_all();
        }
        self.not_empty.notify_all();
        self.not_full.notify_all();
        drop(state);
        discarded
    }

    /// Wakes every sleeper so it re-checks its stop flag (the flag is set before this is called).
    fn wake_all(&self) {
        let _state = self.state.lock();
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }
}

impl<T> JoinableQueue<T> {
    /// An unbounded FIFO queue: `put` never blocks.
    pub fn new() -> Self {
        Self::with(None, Store::fifo())
    }

    /// An unbounded FIFO queue (the same as [`new`](JoinableQueue::new)).
    pub fn unbounded() -> Self {
        Self::new()
    }

    /// A FIFO queue that holds at most `capacity` items: `put` blocks while it is full, which slows
    /// producers down to the consumers' pace (backpressure) and bounds memory.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0 (such a queue could never take an item). Use
    /// [`builder`](JoinableQueue::builder) to get an error instead.
    pub fn bounded(capacity: usize) -> Self {
        assert!(
            capacity > 0,
            "JoinableQueue::bounded(0) could never take an item; use a capacity of at least 1"
        );
        Self::with(Some(capacity), Store::fifo())
    }

    /// A builder for the other orderings and for a checked capacity.
    ///
    /// ```
    /// use martelli::{JoinableQueue, Order};
    ///
    /// let stack = JoinableQueue::builder().lifo().capacity(8).build()?;
    /// assert_eq!(stack.order(), Order::Lifo);
    /// stack.put(1)?;
    /// stack.put(2)?;
    /// assert_eq!(stack.get()?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder() -> QueueBuilder<T> {
        QueueBuilder {
            capacity: None,
            store: Store::fifo,
        }
    }

    fn with(capacity: Option<usize>, items: Store<T>) -> Self {
        JoinableQueue {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    items,
                    closed: false,
                    getters: Sleepers::default(),
                    putters: Sleepers::default(),
                }),
                capacity,
                not_empty: Condvar::new(),
                not_full: Condvar::new(),
                all_done: Condvar::new(),
                unfinished: AtomicU64::new(0),
                joiners: AtomicU64::new(0),
            }),
        }
    }

    /// Puts `item`, waiting while the queue is full. Fails, handing the item back, once the queue is
    /// closed — also when it closes while this call waits.
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.shared
            .put(item, Block::Forever, None)
            .map_err(|(item, _)| PutError(item))
    }

    /// Puts `item` if there is room now.
    pub fn try_put(&self, item: T) -> Result<(), TryPutError<T>> {
        self.shared
            .put(item, Block::Never, None)
            .map_err(|(item, why)| match why {
                Refusal::Closed => TryPutError::Closed(item),
                _ => TryPutError::Full(item),
            })
    }

    /// Puts `item`, waiting at most `timeout` for room.
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutTimeoutError<T>> {
        self.shared
            .put(item, Block::after(timeout), None)
            .map_err(|(item, why)| match why {
                Refusal::Closed => PutTimeoutError::Closed(item),
                _ => PutTimeoutError::Timeout(item),
            })
    }

    /// Takes the next item, waiting while the queue is empty. Once the queue is closed, returns what
    /// is left and then [`GetError`]. Call [`task_done`](JoinableQueue::task_done) when the item is
    /// processed (or use [`take`](JoinableQueue::take), which does it for you).
    pub fn get(&self) -> Result<T, GetError> {
        self.shared
            .get(Block::Forever, None)
            .map_err(|_| GetError)
    }

    /// Takes the next item if there is one now.
    pub fn try_get(&self) -> Result<T, TryGetError> {
        self.shared.get(Block::Never, None).map_err(|why| match why {
            Refusal::Closed => TryGetError::Closed,
            _ => TryGetError::Empty,
        })
    }

    /// Takes the next item, waiting at most `timeout` for one.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetTimeoutError> {
        self.shared
            .get(Block::after(timeout), None)
            .map_err(|why| match why {
                Refusal::Closed => GetTimeoutError::Closed,
                _ => GetTimeoutError::Timeout,
            })
    }

    /// [`get`](JoinableQueue::get), with the item in a guard that marks it done when it drops — also
    /// when a panic unwinds through the consumer, so `join` cannot hang on a failed item.
    ///
    /// ```
    /// use martelli::JoinableQueue;
    ///
    /// let queue = JoinableQueue::new();
    /// queue.put("letter".to_string())?;
    /// {
    ///     let doc = queue.take()?;
    ///     assert_eq!(doc.len(), 6);
    /// } // marked done here
    /// queue.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn take(&self) -> Result<Taken<'_, T>, GetError> {
        self.get().map(|item| Taken::new(self, item))
    }

    /// [`try_get`](JoinableQueue::try_get) with a [`Taken`] guard.
    pub fn try_take(&self) -> Result<Taken<'_, T>, TryGetError> {
        self.try_get().map(|item| Taken::new(self, item))
    }

    /// [`get_timeout`](JoinableQueue::get_timeout) with a [`Taken`] guard.
    pub fn take_timeout(&self, timeout: Duration) -> Result<Taken<'_, T>, GetTimeoutError> {
        self.get_timeout(timeout)
            .map(|item| Taken::new(self, item))
    }

    /// Marks one item taken with `get` as done. Fails, changing nothing, when every item put has
    /// already been marked done.
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        self.shared.task_done()
    }

    /// Waits until every item put has been marked done (the barrier of queue-based work). Returns at
    /// once when nothing is unfinished. After [`close_now`](JoinableQueue::close_now), waits only for
    /// the items already taken.
    pub fn join(&self) {
        // `Block::Forever` never times out.
        let _ = self.shared.join(Block::Forever);
    }

    /// [`join`](JoinableQueue::join), giving up after `timeout`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), JoinTimeoutError> {
        self.shared.join(Block::after(timeout))
    }

    /// Closes the queue (Python's `shutdown()`): later puts fail and hand their item back, gets return
    /// the items left and then fail, and every blocked `put`/`get` wakes. Idempotent.
    pub fn close(&self) {
        self.shared.close(false);
    }

    /// Closes the queue and removes every item still queued (Python's `shutdown(immediate=True)`). The
    /// removed items count as done, so `join` returns once the items already taken are done; they are
    /// handed back, in the order gets would have returned them, so nothing is lost.
    pub fn close_now(&self) -> Vec<T> {
        self.shared.close(true)
    }

    /// True once [`close`](JoinableQueue::close) or [`close_now`](JoinableQueue::close_now) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.state.lock().closed
    }

    /// Items waiting to be taken.
    pub fn len(&self) -> usize {
        self.shared.state.lock().items.len()
    }

    /// True when no item waits to be taken.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the queue is bounded and at its capacity.
    pub fn is_full(&self) -> bool {
        self.shared.is_full(&self.shared.state.lock())
    }

    /// The capacity, or `None` when unbounded.
    pub fn capacity(&self) -> Option<usize> {
        self.shared.capacity
    }

    /// The order items leave the queue in.
    pub fn order(&self) -> Order {
        self.shared.state.lock().items.order()
    }

    /// Items put and not yet marked done (queued, or taken and in progress).
    pub fn unfinished(&self) -> usize {
        usize::try_from(self.shared.unfinished.load(Ordering::SeqCst)).unwrap_or(usize::MAX)
    }

    /// True when both handles are the same queue.
    pub fn same_queue(&self, other: &JoinableQueue<T>) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    // The consumer machinery (`Pool::consume`) blocks with a stop flag, so the pool can stop it.

    /// `get` that returns `Stopped` once `stop` fires (after [`wake_all`](Self::wake_all)).
    pub(crate) fn get_or_stop(&self, stop: &AtomicBool) -> Result<T, Refusal> {
        self.shared.get(Block::Forever, Some(stop))
    }

    /// `put` that overruns the capacity by one instead of waiting once `stop` fires.
    pub(crate) fn put_or_stop(&self, item: T, stop: &AtomicBool) -> Result<(), T> {
        self.shared
            .put(item, Block::Forever, Some(stop))
            .map_err(|(item, _)| item)
    }

    /// Wakes every blocked caller so it re-checks its stop flag.
    pub(crate) fn wake_all(&self) {
        self.shared.wake_all();
    }
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Default for JoinableQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.lock();
        f.debug_struct("JoinableQueue")
            .field("order", &state.items.order())
            .field("len", &state.items.len())
            .field("capacity", &self.shared.capacity)
            .field("unfinished", &self.shared.unfinished.load(Ordering::Relaxed))
            .field("closed", &state.closed)
            .finish()
    }
}

/// A capacity that a queue cannot have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a queue capacity of 0 could never take an item; use a capacity of at least 1, or no bound")]
pub struct QueueConfigError;

/// Configures a [`JoinableQueue`]: its [`Order`] and its capacity.
pub struct QueueBuilder<T> {
    capacity: Option<usize>,
    store: fn() -> Store<T>,
}

impl<T> fmt::Debug for QueueBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueBuilder")
            .field("capacity", &self.capacity)
            .field("order", &(self.store)().order())
            .finish()
    }
}

impl<T> QueueBuilder<T> {
    /// Bounds the queue at `capacity` items (unbounded by default).
    pub fn capacity(self, capacity: usize) -> Self {
        self.bound(Some(capacity))
    }

    /// Bounds the queue, or not (`None`).
    pub fn bound(mut self, capacity: Option<usize>) -> Self {
        self.capacity = capacity;
        self
    }

    /// First in, first out (the default).
    pub fn fifo(mut self) -> Self {
        self.store = Store::fifo;
        self
    }

    /// Last in, first out.
    pub fn lifo(mut self) -> Self {
        self.store = Store::lifo;
        self
    }

    /// Smallest item first, earliest first among equal items (Python's `PriorityQueue`). Wrap items
    /// in [`std::cmp::Reverse`] for largest first.
    ///
    /// ```
    /// use martelli::JoinableQueue;
    ///
    /// let urgent_first = JoinableQueue::builder().priority().build()?;
    /// urgent_first.put((2, "tidy up"))?;
    /// urgent_first.put((0, "fire"))?;
    /// urgent_first.put((1, "answer mail"))?;
    /// assert_eq!(urgent_first.get()?, (0, "fire"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn priority(mut self) -> Self
    where
        T: Ord + Send + 'static,
    {
        self.store = Store::priority;
        self
    }

    /// Builds the queue; fails on a capacity of 0.
    pub fn build(self) -> Result<JoinableQueue<T>, QueueConfigError> {
        if self.capacity == Some(0) {
            return Err(QueueConfigError);
        }
        Ok(JoinableQueue::with(self.capacity, (self.store)()))
    }
}

/// An item taken from a [`JoinableQueue`] with [`take`](JoinableQueue::take): it dereferences to the
/// item and marks it done when it drops, also during a panic.
pub struct Taken<'q, T> {
    queue: &'q JoinableQueue<T>,
    item: T,
    done: bool,
}

impl<'q, T> Taken<'q, T> {
    fn new(queue: &'q JoinableQueue<T>, item: T) -> Self {
        Taken {
            queue,
            item,
            done: false,
        }
    }

    /// Marks the item done now and reports a miscount (a `task_done` called elsewhere for an item
    /// this code never took), which dropping the guard cannot report.
    pub fn done(mut self) -> Result<(), TaskDoneError> {
        self.done = true;
        self.queue.task_done()
    }
}

impl<T> Deref for Taken<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.item
    }
}

impl<T> DerefMut for Taken<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.item
    }
}

impl<T> Drop for Taken<'_, T> {
    fn drop(&mut self) {
        if !self.done {
            // A drop cannot return an error; `done()` is the way to see a miscount.
            let _ = self.queue.task_done();
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Taken<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Taken").field(&self.item).finish()
    }
}
