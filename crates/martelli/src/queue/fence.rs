//! Put fences: each thread publishes which queue it is putting into, so that `close` can wait out the
//! puts in flight (rule 4) without every put paying a second read-modify-write on the shared word.
//!
//! Every thread that puts has a slot in a process-wide registry. A put stores the queue's identity in
//! its slot (a plain store) *before* its read-modify-write of the accounting word, and clears it (a
//! release store) once its item has landed or it gave up. `close` sets `CLOSED` with a read-modify-write
//! of the same word, then waits until no registered slot names the queue:
//!
//! - if the put's read-modify-write comes first in the word's modification order, the close's
//!   read-modify-write reads from its release sequence, so the slot's store happens before the
//!   close's scan, which therefore sees the queue's identity (or the clearing store, after which the
//!   item has landed);
//! - otherwise the put's read-modify-write sees `CLOSED` and the put gives up.
//!
//! A thread registers (under the registry's lock) before its first put, so a thread that registers
//! after a close's scan began cannot have a put in flight from before it. A thread whose
//! thread-locals are being destroyed cannot use its slot; its puts fall back to counting themselves
//! as pending in the accounting word.
//!
//! The registry is process-wide and uses `std`'s primitives directly: it is not part of a queue's
//! state machine, and its lock is taken only when a thread starts or ends and on `close`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// One thread's slot: the identity of the queue it is putting into, or 0.
#[derive(Debug, Default)]
struct Slot {
    queue: AtomicUsize,
}

static REGISTRY: Mutex<Vec<Arc<Slot>>> = Mutex::new(Vec::new());

/// A thread's registration, removed when the thread ends.
struct Registered(Arc<Slot>);

impl Registered {
    fn new() -> Self {
        let slot = Arc::new(Slot::default());
        REGISTRY
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&slot));
        Registered(slot)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        REGISTRY
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|slot| !Arc::ptr_eq(slot, &self.0));
    }
}

thread_local! {
    static SLOT: Registered = Registered::new();
}

/// Marks this thread as putting into `queue` (a nonzero identity). False when the thread can no longer
/// use its slot (it is ending); the caller then counts its put as pending instead.
#[inline]
pub(super) fn enter(queue: usize) -> bool {
    SLOT.try_with(|r| r.0.queue.store(queue, Ordering::Relaxed))
        .is_ok()
}

/// Marks this thread's put as over: its item has landed or it gave up.
#[inline]
pub(super) fn leave() {
    let _ = SLOT.try_with(|r| r.0.queue.store(0, Ordering::Release));
}

/// Waits until no thread is putting into `queue`. Call after setting `CLOSED`.
pub(super) fn wait_out(queue: usize) {
    let slots: Vec<Arc<Slot>> = REGISTRY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for slot in slots {
        while slot.queue.load(Ordering::Acquire) == queue {
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    #[test]
    fn wait_out_waits_for_a_put_in_flight_and_only_for_its_queue() {
        const QUEUE: usize = 0x1000;
        let (entered_tx, entered_rx) = mpsc::channel();
        let (leave_tx, leave_rx) = mpsc::channel::<()>();
        let putter = thread::spawn(move || {
            assert!(enter(QUEUE));
            entered_tx.send(()).unwrap();
            leave_rx.recv().unwrap();
            leave();
        });
        entered_rx.recv().unwrap();
        wait_out(QUEUE + 1); // another queue: returns at once
        let (done_tx, done_rx) = mpsc::channel();
        let closer = thread::spawn(move || {
            wait_out(QUEUE);
            done_tx.send(()).unwrap();
        });
        // The closer must still be waiting while the put is in flight.
        assert!(done_rx.recv_timeout(Duration::from_millis(50)).is_err());
        leave_tx.send(()).unwrap();
        done_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("wait_out returned once the put left");
        putter.join().unwrap();
        closer.join().unwrap();
    }

    #[test]
    fn a_finished_thread_leaves_the_registry() {
        let mine = thread::spawn(|| {
            enter(0x3000);
            leave();
            SLOT.with(|r| Arc::clone(&r.0))
        })
        .join()
        .unwrap();
        let registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(!registry.iter().any(|slot| Arc::ptr_eq(slot, &mine)));
    }
}
