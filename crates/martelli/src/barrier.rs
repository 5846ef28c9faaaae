//! [`Barrier`]: wait until every party arrives — with a timeout, an abort, and a *broken* state that
//! every waiter sees, instead of a hang, when a party times out, aborts or panics (Python's
//! `threading.Barrier` and its `BrokenBarrierError`; std's `Barrier` has none of these).
//!
//! ```
//! use martelli::Barrier;
//! use std::thread;
//!
//! let barrier = Barrier::new(3);
//! let leaders: usize = thread::scope(|s| {
//!     let handles: Vec<_> = (0..3)
//!         .map(|_| s.spawn(|| barrier.wait().map(|w| w.is_leader() as usize)))
//!         .collect();
//!     handles.into_iter().map(|h| h.join().unwrap().unwrap()).sum()
//! });
//! assert_eq!(leaders, 1);
//! ```
//!
//! # Panicking parties
//!
//! A thread that panics before it reaches the barrier would leave the others waiting forever. Hold a
//! [`Participant`] (from [`Barrier::participant`]) instead of calling `wait` on the barrier directly:
//! when it is dropped during a panic, it breaks the barrier, and every waiter gets
//! [`BarrierError::Broken`].
//!
//! # Protocol
//!
//! One mutex guards the phase and the count of threads inside `wait`; one condition variable wakes
//! them. The phases are Python's:
//!
//! 1. **Filling**: parties arrive and wait. The one that makes the count reach `parties` trips the
//!    barrier: the phase becomes Draining and every waiter wakes.
//! 2. **Draining**: waiters leave with their index. New arrivals wait until the last one has left, which
//!    sets the phase back to Filling, so two rounds never mix.
//! 3. **Broken**: set by a timeout, [`abort`](Barrier::abort) or a panicking participant. Every waiter
//!    and every later arrival gets `Broken`, until [`reset`](Barrier::reset).
//! 4. **Resetting**: `reset` while threads wait; they leave with `Broken`, and the last one out sets
//!    the phase to Filling.

use crate::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::fmt;
use std::time::{Duration, Instant};

/// Why a barrier wait returned without the barrier tripping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BarrierError {
    /// The barrier is broken: a party timed out, aborted it or panicked. Call
    /// [`Barrier::reset`] to use it again.
    #[error(
        "the barrier is broken: a party timed out, aborted or panicked (reset it to use it again)"
    )]
    Broken,
    /// This waiter's timeout elapsed before every party arrived; it broke the barrier, so the other
    /// waiters got [`BarrierError::Broken`].
    #[error(
        "timed out waiting at the barrier; the barrier is now broken for every party (some party is \
         slow or missing)"
    )]
    Timeout,
}

impl BarrierError {
    /// True for [`BarrierError::Broken`].
    pub fn is_broken(&self) -> bool {
        matches!(self, BarrierError::Broken)
    }
    /// True for [`BarrierError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, BarrierError::Timeout)
    }
}

/// What a successful [`Barrier::wait`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarrierWaitResult {
    index: usize,
    parties: usize,
}

impl BarrierWaitResult {
    /// The order this party arrived in, from 0 to `parties - 1` (Python's return value).
    pub fn index(&self) -> usize {
        self.index
    }

    /// True for exactly one party of each round: the last to arrive, which tripped the barrier.
    pub fn is_leader(&self) -> bool {
        self.index + 1 == self.parties
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Filling,
    Draining,
    Broken,
    Resetting,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// Threads inside `wait`.
    count: usize,
}

#[derive(Debug)]
struct Shared {
    parties: usize,
    state: Mutex<State>,
    cond: Condvar,
}

/// A barrier for a fixed number of parties that can time out, be aborted, and breaks for every
/// waiter when one party fails. Cheap to clone: every clone is the same barrier.
#[derive(Clone)]
pub struct Barrier {
    shared: Arc<Shared>,
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.lock();
        f.debug_struct("Barrier")
            .field("parties", &self.shared.parties)
            .field("waiting", &state.count)
            .field("phase", &state.phase)
            .finish()
    }
}

impl Barrier {
    /// A barrier that trips when `parties` threads wait on it. Like std's, a barrier of 0 parties
    /// behaves as one of 1 (every wait returns at once).
    pub fn new(parties: usize) -> Self {
        Barrier {
            shared: Arc::new(Shared {
                parties: parties.max(1),
                state: Mutex::new(State {
                    phase: Phase::Filling,
                    count: 0,
                }),
                cond: Condvar::new(),
            }),
        }
    }

    /// The number of parties.
    pub fn parties(&self) -> usize {
        self.shared.parties
    }

    /// Threads waiting now.
    pub fn n_waiting(&self) -> usize {
        let state = self.shared.state.lock();
        match state.phase {
            Phase::Filling => state.count,
            _ => 0,
        }
    }

    /// True while the barrier is broken.
    pub fn is_broken(&self) -> bool {
        self.shared.state.lock().phase == Phase::Broken
    }

    /// Waits until every party has arrived, or the barrier breaks.
    pub fn wait(&self) -> Result<BarrierWaitResult, BarrierError> {
        self.wait_until(None)
    }

    /// Waits at most `timeout`; when it elapses, breaks the barrier (every other waiter gets
    /// [`BarrierError::Broken`]) and returns [`BarrierError::Timeout`].
    pub fn wait_timeout(&self, timeout: Duration) -> Result<BarrierWaitResult, BarrierError> {
        // A timeout too large for an `Instant` is as good as none.
        self.wait_until(Instant::now().checked_add(timeout))
    }

    /// Breaks the barrier: every waiter, and every later one until [`reset`](Barrier::reset), gets
    /// [`BarrierError::Broken`]. Use it when a party cannot arrive.
    pub fn abort(&self) {
        let mut state = self.shared.state.lock();
        self.break_barrier(&mut state);
    }

    /// Returns the barrier to its initial state. Threads waiting now get [`BarrierError::Broken`].
    pub fn reset(&self) {
        let mut state = self.shared.state.lock();
        if state.count > 0 {
            match state.phase {
                // Rule 4: the last waiter out completes the reset.
                Phase::Filling | Phase::Broken => state.phase = Phase::Resetting,
                // Draining or already resetting: the last one out sets Filling anyway.
                Phase::Draining | Phase::Resetting => {}
            }
        } else {
            state.phase = Phase::Filling;
        }
        self.shared.cond.notify_all();
    }

    /// A handle for one party that breaks the barrier if it is dropped during a panic, so the other
    /// parties see [`BarrierError::Broken`] instead of waiting forever.
    ///
    /// ```
    /// use martelli::Barrier;
    /// use std::thread;
    ///
    /// let barrier = Barrier::new(2);
    /// let party = barrier.clone();
    /// let crashed = thread::spawn(move || {
    ///     let _party = party.participant();
    ///     panic!("failed before reaching the barrier");
    /// });
    /// let err = barrier.participant().wait().unwrap_err();
    /// assert!(err.is_broken());
    /// assert!(crashed.join().is_err());
    /// ```
    pub fn participant(&self) -> Participant {
        Participant {
            barrier: self.clone(),
        }
    }

    fn break_barrier(&self, state: &mut MutexGuard<'_, State>) {
        state.phase = Phase::Broken;
        self.shared.cond.notify_all();
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<BarrierWaitResult, BarrierError> {
        let shared = &*self.shared;
        let mut state = shared.state.lock();
        // Rule 2: do not mix with a round that is still draining or resetting.
        while matches!(state.phase, Phase::Draining | Phase::Resetting) {
            state = shared.cond.wait(state);
        }
        if state.phase == Phase::Broken {
            return Err(BarrierError::Broken);
        }
        let index = state.count;
        state.count += 1;
        let result = if index + 1 == shared.parties {
            // Rule 1: trip.
            state.phase = Phase::Draining;
            shared.cond.notify_all();
            Ok(())
        } else {
            let mut timed_out = false;
            while state.phase == Phase::Filling && !timed_out {
                (state, timed_out) = match deadline {
                    None => (shared.cond.wait(state), false),
                    Some(deadline) => shared.cond.wait_until(state, deadline),
                };
            }
            match state.phase {
                Phase::Filling => {
                    // Rule 3: a timeout breaks the barrier for everyone.
                    self.break_barrier(&mut state);
                    Err(BarrierError::Timeout)
                }
                Phase::Draining => Ok(()),
                Phase::Broken | Phase::Resetting => Err(BarrierError::Broken),
            }
        };
        state.count -= 1;
        if state.count == 0 && matches!(state.phase, Phase::Draining | Phase::Resetting) {
            state.phase = Phase::Filling;
            shared.cond.notify_all();
        }
        result.map(|()| BarrierWaitResult {
            index,
            parties: shared.parties,
        })
    }
}

/// One party of a [`Barrier`] that breaks it when dropped during a panic. Made by
/// [`Barrier::participant`].
#[derive(Debug)]
pub struct Participant {
    barrier: Barrier,
}

impl Participant {
    /// [`Barrier::wait`].
    pub fn wait(&self) -> Result<BarrierWaitResult, BarrierError> {
        self.barrier.wait()
    }

    /// [`Barrier::wait_timeout`].
    pub fn wait_timeout(&self, timeout: Duration) -> Result<BarrierWaitResult, BarrierError> {
        self.barrier.wait_timeout(timeout)
    }

    /// The barrier.
    pub fn barrier(&self) -> &Barrier {
        &self.barrier
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.barrier.abort();
        }
    }
}
