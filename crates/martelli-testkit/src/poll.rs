//! Polling for a condition that nothing can wait on (another process's progress, a file, the
//! kernel's clean-up after a kill).

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
