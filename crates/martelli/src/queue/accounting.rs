//! The `task_done`/`join` accounting and the `closed` flag, packed into one atomic word so that the
//! hot path costs one read-modify-write per `put` landing and one per `task_done`.
//!
//! The word holds, from the top bit down: `CLOSED`, `SEALED` and `JOINING` (1 bit each), `pending` (21 bits:
//! puts that passed the closed check and have not yet landed or given up, for the rare put that cannot
//! use a [put fence](super::fence)), and `unfinished` (40 bits: items put and not yet marked done). The
//! rules (numbered as in the [queue module](super)):
//!
//! 1. A put adds one to `unfinished` in a single `SeqCst` read-modify-write *before* its item becomes
//!    visible, and fails if that operation saw `CLOSED`; it then undoes its addition. So the matching
//!    `task_done`, which can only follow a `get` of the item, always finds the addition, and
//!    `unfinished >= len` holds at every quiescent point.
//! 2. `task_done` decrements `unfinished` with a compare-and-swap that refuses to go below zero: a
//!    miscount is reported and changes nothing.
//! 3. Joiners announce themselves in the word itself: under `lock`, the first one sets `JOINING` with a
//!    read-modify-write, and each re-reads the count and sleeps on `all_done` while it is not zero;
//!    the last one to leave clears the bit. Whatever brings the count to zero (`task_done`, an undone
//!    put, `close_now`) does so with a read-modify-write of the same word, and if the value it replaced
//!    had `JOINING` set, it takes `lock` and notifies. All of these are read-modify-writes of one
//!    location, so its modification order puts the count reaching zero either before the bit is set
//!    (the joiner then reads zero) or after (the other side then sees the bit); and since a joiner
//!    holds `lock` from its check until it sleeps, the notification cannot fall in between.
//! 4. `CLOSED` is set once and never cleared. The closer then waits out the puts in flight — those
//!    behind a put fence and those counted as pending — and sets `SEALED`: from then on no item can
//!    land, so a getter that finds the queue empty may report `Closed`, and `close_now` may drain,
//!    knowing that nothing will arrive behind it.

use super::Block;
use super::error::{JoinTimeoutError, TaskDoneError};
use crate::sync::{AtomicU64, Condvar, Mutex, Ordering};
use crossbeam_utils::CachePadded;

const CLOSED: u64 = 1 << 63;
const SEALED: u64 = 1 << 62;
const JOINING: u64 = 1 << 61;
const PENDING: u64 = 1 << 40;
const PENDING_MASK: u64 = JOINING - PENDING;
const COUNT_MASK: u64 = PENDING - 1;

/// The word sits on a cache line of its own: every put and `task_done` writes it, and nothing else
/// should pay for that traffic.
#[derive(Debug)]
pub(super) struct Accounting {
    word: CachePadded<AtomicU64>,
    /// Threads inside `join` (rule 3); they set and clear `JOINING` under this lock.
    lock: Mutex<usize>,
    all_done: Condvar,
}

impl Accounting {
    pub(super) fn new() -> Self {
        Accounting {
            word: CachePadded::new(AtomicU64::new(0)),
            lock: Mutex::new(0),
            all_done: Condvar::new(),
        }
    }

    /// Rule 1 for a put that lands later (channel flavour): counts the item, and marks it pending
    /// unless the put is behind a fence. False, with nothing counted, when the queue is closed.
    #[inline]
    pub(super) fn begin_put(&self, fenced: bool) -> bool {
        let delta = Self::put_delta(fenced);
        let before = self.word.fetch_add(delta, Ordering::SeqCst);
        if before & CLOSED != 0 {
            self.abort_put(fenced);
            return false;
        }
        true
    }

    #[inline]
    fn put_delta(fenced: bool) -> u64 {
        if fenced { 1 } else { PENDING + 1 }
    }

    /// The put landed: its item is visible.
    #[inline]
    pub(super) fn end_put(&self, fenced: bool) {
        if !fenced {
            self.word.fetch_sub(PENDING, Ordering::SeqCst);
        }
    }

    /// The put gave up (closed, timed out, would block): undo rule 1's additions.
    pub(super) fn abort_put(&self, fenced: bool) {
        let before = self
            .word
            .fetch_sub(Self::put_delta(fenced), Ordering::SeqCst);
        self.wake_joiners_if_done(before, 1);
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
        self.wake_joiners_if_done(current, 1);
        Ok(())
    }

    /// `close_now` removed `n` counted items: they count as done.
    pub(super) fn discard(&self, n: usize) {
        if n == 0 {
            return;
        }
        let n = n as u64;
        let before = self.word.fetch_sub(n, Ordering::SeqCst);
        self.wake_joiners_if_done(before, n);
    }

    /// Rule 3's second half: `before` is the word a read-modify-write replaced by subtracting
    /// `removed` from the count.
    #[inline]
    fn wake_joiners_if_done(&self, before: u64, removed: u64) {
        if before & COUNT_MASK == removed && before & JOINING != 0 {
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

    /// Puts counted as pending (those without a fence) that have not landed or given up.
    pub(super) fn pending(&self) -> u64 {
        (self.word.load(Ordering::SeqCst) & PENDING_MASK) / PENDING
    }

    /// Rule 4: every put in flight at the close has landed or given up.
    pub(super) fn seal(&self) {
        self.word.fetch_or(SEALED, Ordering::SeqCst);
    }

    /// True once sealed: nothing can land any more (rule 4).
    pub(super) fn is_sealed(&self) -> bool {
        self.word.load(Ordering::SeqCst) & SEALED != 0
    }

    pub(super) fn unfinished(&self) -> u64 {
        self.word.load(Ordering::SeqCst) & COUNT_MASK
    }

    /// Rule 3's first half.
    pub(super) fn join(&self, block: Block) -> Result<(), JoinTimeoutError> {
        if self.unfinished() == 0 {
            return Ok(());
        }
        let mut joiners = self.lock.lock();
        *joiners += 1;
        if *joiners == 1 {
            self.word.fetch_or(JOINING, Ordering::SeqCst);
        }
        let result = loop {
            let unfinished = self.unfinished();
            if unfinished == 0 {
                break Ok(());
            }
            let timed_out;
            (joiners, timed_out) = match block {
                Block::Forever => (self.all_done.wait(joiners), false),
                Block::Until(deadline) => self.all_done.wait_until(joiners, deadline),
                Block::Never => (joiners, true),
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
        *joiners -= 1;
        if *joiners == 0 {
            self.word.fetch_and(!JOINING, Ordering::SeqCst);
        }
        drop(joiners);
        result
    }
}

/// loom models of rules 1 to 3 (run by `scripts/loom.sh`, which selects tests named `loom_models`).
#[cfg(all(test, loom))]
mod loom_models {
    use super::{Accounting, Block};
    use loom::sync::Arc;
    use loom::thread;

    /// Rule 3: a joiner is always woken by the `task_done` that brings the count to zero.
    #[test]
    fn join_is_woken_by_the_last_task_done() {
        loom::model(|| {
            let acct = Arc::new(Accounting::new());
            acct.count_put();
            acct.count_put();
            let worker = {
                let acct = Arc::clone(&acct);
                thread::spawn(move || {
                    acct.task_done().expect("two items were put");
                    acct.task_done().expect("two items were put");
                })
            };
            acct.join(Block::Forever).expect("no timeout");
            assert_eq!(acct.unfinished(), 0);
            worker.join().expect("no panic");
        });
    }

    /// Rule 3 with two joiners: the first sets `JOINING`, the last clears it, and neither misses the
    /// wake-up.
    #[test]
    fn two_joiners_are_both_woken() {
        loom::model(|| {
            let acct = Arc::new(Accounting::new());
            acct.count_put();
            let joiner = {
                let acct = Arc::clone(&acct);
                thread::spawn(move || acct.join(Block::Forever).expect("no timeout"))
            };
            let worker = {
                let acct = Arc::clone(&acct);
                thread::spawn(move || acct.task_done().expect("one item was put"))
            };
            acct.join(Block::Forever).expect("no timeout");
            joiner.join().expect("no panic");
            worker.join().expect("no panic");
        });
    }

    /// Rule 2: with one item put, exactly one of two racing `task_done`s succeeds.
    #[test]
    fn one_task_done_too_many_is_refused() {
        loom::model(|| {
            let acct = Arc::new(Accounting::new());
            acct.count_put();
            let other = {
                let acct = Arc::clone(&acct);
                thread::spawn(move || acct.task_done().is_ok())
            };
            let mine = acct.task_done().is_ok();
            let theirs = other.join().expect("no panic");
            assert!(mine ^ theirs, "exactly one task_done succeeds");
            assert_eq!(acct.unfinished(), 0);
        });
    }

    /// Rules 1 and 3: a put refused by a racing close undoes its count and still wakes the joiner.
    #[test]
    fn a_put_refused_by_close_does_not_strand_join() {
        loom::model(|| {
            let acct = Arc::new(Accounting::new());
            let putter = {
                let acct = Arc::clone(&acct);
                thread::spawn(move || {
                    let landed = acct.begin_put(true);
                    if landed {
                        acct.end_put(true);
                        acct.task_done().expect("the put was counted");
                    }
                })
            };
            acct.close();
            acct.join(Block::Forever).expect("no timeout");
            putter.join().expect("no panic");
            assert_eq!(acct.unfinished(), 0);
        });
    }
}
