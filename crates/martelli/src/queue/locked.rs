//! The LIFO and priority flavours: a store under one mutex, with two condition variables —
//! `not_empty` for getters and `not_full` for putters — and the [`Accounting`] word for
//! `task_done`/`join` and `closed`.
//!
//! 5. A getter sleeps on `not_empty` only while there is no item and the queue is open; a putter sleeps
//!    on `not_full` only while the queue is full and open. Puts and gets check `CLOSED` under the
//!    lock, and `close` sets it under the lock, so no item lands after a close. Each side counts its
//!    sleepers and how many were signalled but have not woken yet: a push (pop) signals a sleeping
//!    getter (putter) only when some sleeper has not been signalled already, so a burst to a busy
//!    queue makes no system calls. A getter that leaves without an item while items remain (a
//!    consumer told to stop) passes the signal on.

use super::accounting::Accounting;
use super::store::{Order, Store};
use super::{Block, Refusal, StopSignal};
use crate::sync::{Condvar, Mutex, MutexGuard};

pub(super) struct Locked<T> {
    state: Mutex<State<T>>,
    not_empty: Condvar,
    not_full: Condvar,
}

struct State<T> {
    items: Store<T>,
    getters: Sleepers,
    putters: Sleepers,
}

/// Rule 5's bookkeeping for one condition variable.
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

impl<T> Locked<T> {
    pub(super) fn new(items: Store<T>) -> Self {
        Locked {
            state: Mutex::new(State {
                items,
                getters: Sleepers::default(),
                putters: Sleepers::default(),
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.state.lock().items.len()
    }

    pub(super) fn order(&self) -> Order {
        self.state.lock().items.order()
    }

    /// Sleeps on `cond` until `block` ends; returns the guard and whether it timed out.
    fn sleep<'a>(
        cond: &Condvar,
        state: MutexGuard<'a, State<T>>,
        block: Block,
    ) -> (MutexGuard<'a, State<T>>, bool) {
        match block {
            Block::Forever => (cond.wait(state), false),
            Block::Until(deadline) => cond.wait_until(state, deadline),
            Block::Never => (state, true),
        }
    }

    pub(super) fn put(
        &self,
        acct: &Accounting,
        capacity: Option<usize>,
        item: T,
        block: Block,
        stop: Option<&StopSignal>,
    ) -> Result<(), (T, Refusal)> {
        let mut state = self.state.lock();
        let mut expired = false;
        loop {
            if acct.is_closed() {
                return Err((item, Refusal::Closed));
            }
            let full = capacity.is_some_and(|cap| state.items.len() >= cap);
            // A stopping consumer's result goes in over the bound rather than being lost.
            if !full || stop.is_some_and(StopSignal::is_fired) {
                break;
            }
            match block {
                Block::Never => return Err((item, Refusal::WouldBlock)),
                _ if expired => return Err((item, Refusal::Timeout)),
                _ => {}
            }
            state.putters.sleeping += 1;
            let (guard, timed_out) = Self::sleep(&self.not_full, state, block);
            state = guard;
            state.putters.woke();
            expired = timed_out;
        }
        acct.count_put();
        state.items.push(item);
        if state.getters.claim() {
            self.not_empty.notify_one();
        }
        Ok(())
    }

    pub(super) fn get(
        &self,
        acct: &Accounting,
        capacity: Option<usize>,
        block: Block,
        stop: Option<&StopSignal>,
    ) -> Result<T, Refusal> {
        let mut state = self.state.lock();
        let mut expired = false;
        loop {
            if stop.is_some_and(StopSignal::is_fired) {
                if state.items.len() > 0 && state.getters.claim() {
                    self.not_empty.notify_one();
                }
                return Err(Refusal::Stopped);
            }
            if let Some(item) = state.items.pop() {
                if capacity.is_some() && state.putters.claim() {
                    self.not_full.notify_one();
                }
                return Ok(item);
            }
            if acct.is_closed() {
                return Err(Refusal::Closed);
            }
            match block {
                Block::Never => return Err(Refusal::WouldBlock),
                _ if expired => return Err(Refusal::Timeout),
                _ => {}
            }
            state.getters.sleeping += 1;
            let (guard, timed_out) = Self::sleep(&self.not_empty, state, block);
            state = guard;
            state.getters.woke();
            expired = timed_out;
        }
    }

    pub(super) fn close(&self, acct: &Accounting, discard: bool) -> Vec<T> {
        let mut state = self.state.lock();
        acct.close();
        let discarded = if discard {
            state.items.drain()
        } else {
            Vec::new()
        };
        self.not_empty.notify_all();
        self.not_full.notify_all();
        drop(state);
        acct.discard(discarded.len());
        discarded
    }

    /// Wakes every sleeper so it re-checks its stop signal (fired before this is called).
    pub(super) fn wake_all(&self) {
        let _state = self.state.lock();
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }
}
