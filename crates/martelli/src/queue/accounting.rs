//! The `task_done`/`join` accounting and the `closed` flag, packed into one atomic word so that the
//! hot path costs one read-modify-write per `put` landing and one per `task_done`.
//!
//! The word holds, from the top bit down: `CLOSED` (1 bit), `pending` (23 bits: puts that passed the
//! closed check and have not yet landed or given up), and `unfinished` (40 bits: items put and not
//! yet marked done). The rules (numbered as in the [queue module](super)):
//!
//! 1. A put adds one to `unfinished` (and, for the channel flavour, one to `pending`) in a single
//!    `SeqCst` read-modify-write *before* its item becomes visible, and fails if that operation saw
//!    `CLOSED`; it then undoes its addition. So the matching `task_done`, which can only follow a `get`
//!    of the item, always finds the addition, and `unfinished >= len` holds at every quiescent point.
//! 2. `task_done` decrements `unfinished` with a compare-and-swap that refuses to go below zero: a
//!    miscount is reported and changes nothing.
//! 3. A joiner increments `joiners` and then re-reads the word, both `SeqCst`, under `lock`, and sleeps
//!    on `all_done` while `unfinished` is not zero. Whatever brings `unfinished` to zero (`task_done`, an
//!    undone put, `close_now`) then reads `joiners` (also `SeqCst`) and, if any, takes `lock` and
//!    notifies. In the single order of `SeqCst` operations either the joiner sees zero or the other
//!    side sees the joiner; and since the joiner holds `lock` from its check until it sleeps, the
//!    notification cannot fall in between.
//! 4. `CLOSED` is set once and never cleared. Once it is set and `pending` is zero, no item can land
//!    any more: a getter that then finds the queue empty may report `Closed`, and `close_now` may
//!    drain, knowing that nothing will arrive behind it.

use super::Block;
use super::error::{JoinTimeoutError, TaskDoneError};
use crate::sync::{AtomicU64, Condvar, Mutex, Ordering};
use crossbeam_utils::CachePadded;

const CLOSED: u64 = 1 << 63;
const PENDING: u64 = 1 << 40;
const PENDING_MASK: u64 = CLOSED - PENDING;
const COUNT_MASK: u64 = PENDING - 1;

/// The word and the joiner count sit on cache lines of their own: every put and `task_done` writes
/// the word, and nothing else should pay for that traffic.
#[derive(Debug)]
pub(super) struct Accounting {
    word: CachePadded<AtomicU64>,
    joiners: CachePadded<AtomicU64>,
    lock: Mutex<()>,
    all_done: Condvar,
}

impl Accounting {
    pub(super) fn new() -> Self {
        Accounting {
            word: CachePadded::new(AtomicU64::new(0)),
            joiners: CachePadded::new(AtomicU64::new(0)),
            lock: Mutex::new(()),
            all_done: Condvar::new(),
        }
    }

    /// Rule 1 for a put that lands later (channel flavour): counts the item and marks it pending.
    /// False, with nothing counted, when the queue is closed.
    #[inline]
    pub(super) fn begin_put(&self) -> bool {
        let before = self.word.fetch_add(PENDING + 1, Ordering::SeqCst);
        if before & CLOSED != 0 {
            self.abort_put();
            return false;
        }
        true
    }

    /// The pending put landed: its item is visible.
    #[inline]
    pub(super) fn end_put(&self) {
        self.word.fetch_sub(PENDING, Ordering::SeqCst);
    }

    /// The pending put gave up (closed, timed out, would block): undo rule 1's additions.
    pub(super) fn abort_put(&self) {
        let before = self.word.fetch_sub(PENDING + 1, Ordering::SeqCst);
        if before & COUNT_MASK == 1 {
            self.wake_joiners();
        }
    }

    /// Rule 1 for a put made under the flavour's own lock (which also checked `CLOSED`).
    #[inline]
    pub(super) fn count_put(&self) {
        self.word.fetch_add(1, Ordering::SeqCst);
    }

    /// Rule 2.
    #[inline]
    pub(super) fn task_done(&self) -> Result<(), TaskDoneError> {
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            if current & COUNT_MASK == 0 {
                return Err(TaskDoneError);
            }
            match self.word.compare_exchange_weak(
                current,
                current - 1,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        if current & COUNT_MASK == 1 {
            self.wake_joiners();
        }
        Ok(())
    }

    /// `close_now` removed `n` counted items: they count as done.
    pub(super) fn discard(&self, n: usize) {
        if n == 0 {
            return;
        }
        let n = n as u64;
        let before = self.word.fetch_sub(n, Ordering::SeqCst);
        if before & COUNT_MASK == n {
            self.wake_joiners();
        }
    }

    /// Rule 3's second half.
    fn wake_joiners(&self) {
        if self.joiners.load(Ordering::SeqCst) > 0 {
            let _lock = self.lock.lock();
            self.all_done.notify_all();
        }
    }

    /// Sets `CLOSED` (rule 4). Returns whether it was already set.
    pub(super) fn close(&self) -> bool {
        self.word.fetch_or(CLOSED, Ordering::SeqCst) & CLOSED != 0
    }

    pub(super) fn is_closed(&self) -> bool {
        self.word.load(Ordering::SeqCst) & CLOSED != 0
    }

    /// True once closed with no put in flight: nothing can land any more (rule 4).
    pub(super) fn is_sealed(&self) -> bool {
        let word = self.word.load(Ordering::SeqCst);
        word & CLOSED != 0 && word & PENDING_MASK == 0
    }

    pub(super) fn unfinished(&self) -> u64 {
        self.word.load(Ordering::SeqCst) & COUNT_MASK
    }

    /// Rule 3's first half.
    pub(super) fn join(&self, block: Block) -> Result<(), JoinTimeoutError> {
        if self.unfinished() == 0 {
            return Ok(());
        }
        let mut lock = self.lock.lock();
        self.joiners.fetch_add(1, Ordering::SeqCst);
        let result = loop {
            let unfinished = self.unfinished();
            if unfinished == 0 {
                break Ok(());
            }
            let timed_out;
            (lock, timed_out) = match block {
                Block::Forever => (self.all_done.wait(lock), false),
                Block::Until(deadline) => self.all_done.wait_until(lock, deadline),
                Block::Never => (lock, true),
            };
            if timed_out {
                let unfinished = self.unfinished();
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
        drop(lock);
        result
    }
}
