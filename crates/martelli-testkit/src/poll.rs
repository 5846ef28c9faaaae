//! Bounding a wait: polling for a condition that nothing can wait on (another process's progress,
//! a file, the kernel's clean-up after a kill), and running a call that might hang on a thread of
//! its own so that a hang fails the test instead of stalling it.

use std::fmt::Debug;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long to sleep between two checks.
const POLL: Duration = Duration::from_millis(10);

/// Polls `done` until it holds; panics, naming `what`, if it does not within `limit`.
#[track_caller]
pub fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// Polls `done` until it holds or `limit` passes; true if it held.
pub fn holds_within(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Reads a value with `read` until `ready` holds for it, and returns that value; panics, naming
/// `what` and showing the last value read, if none is ready within `limit`.
#[track_caller]
pub fn read_until<T: Debug>(
    what: &str,
    limit: Duration,
    mut read: impl FnMut() -> T,
    mut ready: impl FnMut(&T) -> bool,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let value = read();
        if ready(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}; last read: {value:#?}"
        );
        std::thread::sleep(POLL);
    }
}

/// Runs `f` on a thread of its own and returns what it returns; panics if it has not returned
/// within `limit`, so that a call that hangs (a lost wake-up, a join that never ends) fails the
/// test where it is called instead of stalling the test run. The thread that hangs is left
/// behind; the test process ends with the failure.
#[track_caller]
pub fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("hung: the call did not return within {limit:?}")
        }
        // The thread ended without sending: `f` panicked, and its message is printed above.
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the call panicked"),
    }
}

/// What a call run by [`within_each`] reports its progress with.
#[derive(Debug)]
pub struct Progress {
    ticks: mpsc::Sender<()>,
}

impl Progress {
    /// One more step done: the next one has the whole limit again.
    pub fn tick(&self) {
        let _ = self.ticks.send(());
    }
}

/// Runs `f` on a thread of its own, as [`within`] does, but bounds each of its steps instead of the
/// whole: `f` calls [`Progress::tick`] after each step, and the test panics if no step ends within
/// `limit`. For a test of many short runs (thousands of races), whose total time grows with the
/// machine's load while a hang is one run that never ends: a limit on the total is a speed check.
#[track_caller]
pub fn within_each<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce(&Progress) -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let (ticks, ticked) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f(&Progress { ticks }));
    });
    loop {
        match ticked.recv_timeout(limit) {
            Ok(()) => continue,
            // `f` returned (its `Progress` was dropped with it), or panicked.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("hung: no step ended within {limit:?}")
            }
        }
    }
    match rx.recv_timeout(limit) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("hung: the call did not return"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the call panicked"),
    }
}
