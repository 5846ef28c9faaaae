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
//! Two flavours sit behind one type, as crossbeam-channel keeps its flavours apart:
//!
//! - FIFO queues move items through a crossbeam channel, lock-free on the fast path
//!   (`channel.rs`).
//! - LIFO and priority queues keep a store under a mutex with two condition variables (`locked.rs`),
//!   which is what their orderings need.
//!
//! Both share one accounting word for `task_done`/`join` and `closed` (`accounting.rs`). The rules,
//! which the code cites by number:
//!
//! 1. A put counts its item as unfinished *before* the item becomes visible, and fails if it finds
//!    the queue closed; so the matching `task_done`, which can only follow a `get` of the item, always
//!    finds the count.
//! 2. `task_done` decrements with a compare-and-swap that refuses to go below zero: a miscount is
//!    reported and changes nothing.
//! 3. A joiner announces itself in the accounting word, then re-reads the count and sleeps while it
//!    is not zero; whatever brings the count to zero does so with a read-modify-write of the same word,
//!    sees the announcement and wakes it (one location, so its modification order decides; and a
//!    lock held by the joiner from its check until it sleeps).
//! 4. `closed` is set once and never cleared. `close` then waits out the puts in flight — each put
//!    publishes the queue it is putting into in a per-thread *put fence* (`fence.rs`) — and seals the
//!    queue: from then on nothing can land, so a getter that finds it empty reports `Closed`, and
//!    `close_now` drains knowing nothing arrives behind it. A put that began before the close may
//!    still land; it is then drained like any other item.
//! 5. (Locked flavour.) Getters sleep only while the store is empty and open, putters only while it
//!    is full and open; a push or pop signals a sleeper only when one has not been signalled already.
//!
//! `accounting.rs`, `channel.rs` and `locked.rs` spell each rule out where it is kept.
//!
//! # Cost
//!
//! A FIFO `put` or `get` is a crossbeam-channel operation plus the accounting: one atomic
//! read-modify-write of the shared word per put (plus two plain stores to the thread's put fence) and
//! one per `task_done`. That shared word is the price of an exact `join`; `BENCHMARKS.md` (*Queues*)
//! has the figures against crossbeam-channel, and against crossbeam-channel with one shared counter
//! added — the least such accounting can cost. A queue counts at most 2⁴⁰ unfinished items at once.
//!
//! # Model checking
//!
//! The accounting word and the locked flavour synchronise through the crate's `sync` module, and loom
//! models in `accounting.rs` and `locked.rs` check rules 1, 2, 3 and 5 in every interleaving up to a
//! preemption bound (`scripts/loom.sh`). The channel flavour relies on crossbeam-channel's own
//! synchronisation and the put fences on `std`'s; the stress tests (`tests/queue_stress.rs`) cover
//! them.

mod accounting;
mod channel;
mod error;
mod fence;
mod locked;
mod store;

pub use error::{
    GetError, GetTimeoutError, JoinTimeoutError, PutError, PutTimeoutError, TaskDoneError,
    TryGetError, TryPutError,
};
pub use store::Order;

use crate::sync::{Arc, AtomicBool, Mutex, Ordering};
use accounting::Accounting;
use channel::Channel;
use crossbeam_channel::{Receiver, Sender};
use locked::Locked;
use std::convert::Infallible;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};
use store::Store;

/// A multi-producer, multi-consumer work queue with Python's `task_done`/`join` accounting.
///
/// See the [module documentation](crate::queue) for the semantics and the protocol.
pub struct JoinableQueue<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    flavor: Flavor<T>,
    capacity: Option<usize>,
    acct: Accounting,
}

enum Flavor<T> {
    Channel(Channel<T>),
    Locked(Locked<T>),
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
    /// The caller's stop signal fired (gets only; a stopped put goes through).
    Stopped,
}

/// Tells a consumer blocked in a queue operation to stop: its get returns `Stopped`, and its put
/// into a full queue goes in over the bound instead of waiting.
pub(crate) struct StopSignal {
    flag: AtomicBool,
    /// Dropped by `fire`, which wakes every channel `Select` that watches `rx`.
    tx: Mutex<Option<Sender<Infallible>>>,
    rx: Receiver<Infallible>,
}

impl StopSignal {
    pub(crate) fn new() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(0);
        StopSignal {
            flag: AtomicBool::new(false),
            tx: Mutex::new(Some(tx)),
            rx,
        }
    }

    /// Fires the signal. The locked flavour also needs [`JoinableQueue::wake_all`] afterwards.
    pub(crate) fn fire(&self) {
        self.flag.store(true, Ordering::SeqCst);
        drop(self.tx.lock().take());
    }

    pub(crate) fn is_fired(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopSignal")
            .field("fired", &self.is_fired())
            .finish()
    }
}

impl<T> Shared<T> {
    fn put(&self, item: T, block: Block, stop: Option<&StopSignal>) -> Result<(), (T, Refusal)> {
        crate::chaos::point();
        match &self.flavor {
            Flavor::Channel(c) => c.put(&self.acct, item, block, stop),
            Flavor::Locked(l) => l.put(&self.acct, self.capacity, item, block, stop),
        }
    }

    fn get(&self, block: Block, stop: Option<&StopSignal>) -> Result<T, Refusal> {
        crate::chaos::point();
        match &self.flavor {
            Flavor::Channel(c) => c.get(&self.acct, block, stop),
            Flavor::Locked(l) => l.get(&self.acct, self.capacity, block, stop),
        }
    }

    fn close(&self, discard: bool) -> Vec<T> {
        match &self.flavor {
            Flavor::Channel(c) => c.close(&self.acct, discard),
            Flavor::Locked(l) => l.close(&self.acct, discard),
        }
    }

    fn len(&self) -> usize {
        match &self.flavor {
            Flavor::Channel(c) => c.len(),
            Flavor::Locked(l) => l.len(),
        }
    }
}

impl<T> JoinableQueue<T> {
    /// An unbounded FIFO queue: `put` never blocks.
    pub fn new() -> Self {
        Self::with(None, Flavor::fifo(None))
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
        Self::with(Some(capacity), Flavor::fifo(Some(capacity)))
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
            order: Order::Fifo,
            flavor: Flavor::fifo,
        }
    }

    fn with(capacity: Option<usize>, flavor: Flavor<T>) -> Self {
        JoinableQueue {
            shared: Arc::new(Shared {
                flavor,
                capacity,
                acct: Accounting::new(),
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
        self.shared.get(Block::Forever, None).map_err(|_| GetError)
    }

    /// Takes the next item if there is one now.
    pub fn try_get(&self) -> Result<T, TryGetError> {
        self.shared
            .get(Block::Never, None)
            .map_err(|why| match why {
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
        self.get_timeout(timeout).map(|item| Taken::new(self, item))
    }

    /// Marks one item taken with `get` as done. Fails, changing nothing, when every item put has
    /// already been marked done.
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        crate::chaos::point();
        self.shared.acct.task_done()
    }

    /// Waits until every item put has been marked done (the barrier of queue-based work). Returns at
    /// once when nothing is unfinished. After [`close_now`](JoinableQueue::close_now), waits only for
    /// the items already taken.
    pub fn join(&self) {
        // `Block::Forever` never times out.
        let _ = self.shared.acct.join(Block::Forever);
    }

    /// [`join`](JoinableQueue::join), giving up after `timeout`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), JoinTimeoutError> {
        self.shared.acct.join(Block::after(timeout))
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
        self.shared.acct.is_closed()
    }

    /// Items waiting to be taken.
    pub fn len(&self) -> usize {
        self.shared.len()
    }

    /// True when no item waits to be taken.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the queue is bounded and at its capacity.
    pub fn is_full(&self) -> bool {
        self.shared
            .capacity
            .is_some_and(|cap| self.shared.len() >= cap)
    }

    /// The capacity, or `None` when unbounded.
    pub fn capacity(&self) -> Option<usize> {
        self.shared.capacity
    }

    /// The order items leave the queue in.
    pub fn order(&self) -> Order {
        match &self.shared.flavor {
            Flavor::Channel(_) => Order::Fifo,
            Flavor::Locked(l) => l.order(),
        }
    }

    /// Items put and not yet marked done (queued, or taken and in progress).
    pub fn unfinished(&self) -> usize {
        usize::try_from(self.shared.acct.unfinished()).unwrap_or(usize::MAX)
    }

    /// True when both handles are the same queue.
    pub fn same_queue(&self, other: &JoinableQueue<T>) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    // The consumer machinery (`Pool::consume`) blocks with a stop signal, so the pool can stop it.

    /// `get` that returns `Stopped` once `stop` fires (the locked flavour also needs
    /// [`wake_all`](Self::wake_all)).
    pub(crate) fn get_or_stop(&self, stop: &StopSignal) -> Result<T, Refusal> {
        self.shared.get(Block::Forever, Some(stop))
    }

    /// `put` that goes in over the bound instead of waiting once `stop` fires. Fails only when the
    /// queue is closed, handing the item back.
    pub(crate) fn put_or_stop(&self, item: T, stop: &StopSignal) -> Result<(), T> {
        self.shared
            .put(item, Block::Forever, Some(stop))
            .map_err(|(item, _)| item)
    }

    /// Wakes every caller blocked in the locked flavour so it re-checks its stop signal (the channel
    /// flavour's waits watch the signal themselves).
    pub(crate) fn wake_all(&self) {
        if let Flavor::Locked(l) = &self.shared.flavor {
            l.wake_all();
        }
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
        f.debug_struct("JoinableQueue")
            .field("order", &self.order())
            .field("len", &self.len())
            .field("capacity", &self.shared.capacity)
            .field("unfinished", &self.unfinished())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<T> Flavor<T> {
    fn fifo(capacity: Option<usize>) -> Self {
        Flavor::Channel(Channel::new(capacity))
    }

    fn lifo(_capacity: Option<usize>) -> Self {
        Flavor::Locked(Locked::new(Store::lifo()))
    }

    fn priority(_capacity: Option<usize>) -> Self
    where
        T: Ord + Send + 'static,
    {
        Flavor::Locked(Locked::new(Store::priority()))
    }
}

/// A capacity that a queue cannot have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "a queue capacity of 0 could never take an item; use a capacity of at least 1, or no bound"
)]
pub struct QueueConfigError;

/// Configures a [`JoinableQueue`]: its [`Order`] and its capacity.
pub struct QueueBuilder<T> {
    capacity: Option<usize>,
    order: Order,
    flavor: fn(Option<usize>) -> Flavor<T>,
}

impl<T> fmt::Debug for QueueBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueBuilder")
            .field("capacity", &self.capacity)
            .field("order", &self.order)
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
        self.order = Order::Fifo;
        self.flavor = Flavor::fifo;
        self
    }

    /// Last in, first out.
    pub fn lifo(mut self) -> Self {
        self.order = Order::Lifo;
        self.flavor = Flavor::lifo;
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
        self.order = Order::Priority;
        self.flavor = Flavor::priority;
        self
    }

    /// Builds the queue; fails on a capacity of 0.
    pub fn build(self) -> Result<JoinableQueue<T>, QueueConfigError> {
        if self.capacity == Some(0) {
            return Err(QueueConfigError);
        }
        Ok(JoinableQueue::with(
            self.capacity,
            (self.flavor)(self.capacity),
        ))
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
