//! The timeout watchdog: one thread per pool, started on the first task with a timeout, that resolves
//! tasks which outlive their deadline as `TimedOut` and fires their cancel tokens.

use crate::future::Expirer;
use crate::sync::{Condvar, Mutex};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

struct Entry {
    at: Instant,
    seq: u64,
    after: Duration,
    target: Expirer,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // The heap is a max-heap; the earliest deadline must come out first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Entry>,
    seq: u64,
    stop: bool,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
pub(crate) struct Watchdog {
    state: Mutex<State>,
    cond: Condvar,
}

impl fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watchdog").finish_non_exhaustive()
    }
}

impl Watchdog {
    /// Expires `target` once `after` has passed, unless it finished first.
    pub(crate) fn arm(self: &Arc<Self>, after: Duration, target: Expirer) {
        let Some(at) = Instant::now().checked_add(after) else {
            return; // a timeout beyond the end of time never fires
        };
        let mut state = self.state.lock();
        if state.stop {
            return;
        }
        if state.thread.is_none() {
            let me = Arc::clone(self);
            match std::thread::Builder::new()
                .name("martelli-watchdog".into())
                .spawn(move || me.serve())
            {
                Ok(handle) => state.thread = Some(handle),
                Err(err) => {
                    eprintln!(
                        "martelli: could not start the timeout watchdog ({err}); task timeouts will not fire"
                    );
                    return;
                }
            }
        }
        state.seq += 1;
        let seq = state.seq;
        let earliest = state.heap.peek().is_none_or(|e| at < e.at);
        state.heap.push(Entry {
            at,
            seq,
            after,
            target,
        });
        if earliest {
            self.cond.notify_one();
        }
    }

    fn serve(&self) {
        let mut state = self.state.lock();
        loop {
            if state.stop {
                return;
            }
            let now = Instant::now();
            match state.heap.peek() {
                Some(entry) if entry.at <= now => {
                    if let Some(entry) = state.heap.pop() {
                        drop(state);
                        entry.target.expire(entry.after);
                        state = self.state.lock();
                    }
                }
                Some(entry) => {
                    let at = entry.at;
                    state = self.cond.wait_until(state, at).0;
                }
                None => state = self.cond.wait(state),
            }
        }
    }

    /// Stops the watchdog thread (pending timeouts are dropped) and joins it.
    pub(crate) fn stop(&self) {
        let thread = {
            let mut state = self.state.lock();
            state.stop = true;
            state.heap.clear();
            state.thread.take()
        };
        self.cond.notify_all();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}
