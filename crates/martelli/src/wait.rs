//! Waiting for many futures at once, with Python's semantics: [`as_completed`] and [`wait()`].

use crate::future::Future;
use std::fmt;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Watches futures and reports, by index, each one that finishes.
struct Watch<T> {
    futures: Vec<Option<Future<T>>>,
    finished: Receiver<usize>,
    remaining: usize,
}

impl<T> Watch<T> {
    fn new(futures: impl IntoIterator<Item = Future<T>>) -> Self {
        let (tx, finished) = mpsc::channel();
        let futures: Vec<Option<Future<T>>> = futures.into_iter().map(Some).collect();
        for (index, future) in futures.iter().enumerate() {
            if let Some(future) = future {
                let tx = tx.clone();
                future.add_hook(Box::new(move || {
                    let _ = tx.send(index);
                }));
            }
        }
        let remaining = futures.len();
        Watch {
            futures,
            finished,
            remaining,
        }
    }

    /// The next future to finish, waiting at most until `deadline`.
    fn next_done(&mut self, deadline: Option<Instant>) -> Option<Future<T>> {
        if self.remaining == 0 {
            return None;
        }
        let index = match deadline {
            None => self.finished.recv().ok()?,
            Some(deadline) => {
                let timeout = deadline.saturating_duration_since(Instant::now());
                match self.finished.recv_timeout(timeout) {
                    Ok(index) => index,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
                }
            }
        };
        self.remaining -= 1;
        self.futures.get_mut(index).and_then(Option::take)
    }

    fn into_pending(self) -> Vec<Future<T>> {
        self.futures.into_iter().flatten().collect()
    }
}

/// Yields futures in the order they finish, like Python's `concurrent.futures.as_completed`.
///
/// Each yielded future is done, so its [`wait`](Future::wait) returns at once. With
/// [`timeout`](AsCompleted::timeout) the iteration ends when the time is up; then
/// [`timed_out`](AsCompleted::timed_out) is true and [`into_pending`](AsCompleted::into_pending) gives
/// back the futures that had not finished — nothing is lost.
///
/// ```
/// use martelli::{as_completed, Pool};
///
/// let pool = Pool::threads(4)?;
/// let futures = (1..=8u64)
///     .map(|i| pool.submit(move || i * i))
///     .collect::<Result<Vec<_>, _>>()?;
/// let mut sum = 0;
/// for done in as_completed(futures) {
///     sum += done.wait()?;
/// }
/// assert_eq!(sum, 204);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn as_completed<T>(futures: impl IntoIterator<Item = Future<T>>) -> AsCompleted<T> {
    AsCompleted {
        watch: Watch::new(futures),
        deadline: None,
        timed_out: false,
    }
}

/// The iterator [`as_completed`] returns.
pub struct AsCompleted<T> {
    watch: Watch<T>,
    deadline: Option<Instant>,
    timed_out: bool,
}

impl<T> AsCompleted<T> {
    /// Ends the iteration once `timeout` (from now) has passed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.deadline = Instant::now().checked_add(timeout);
        self
    }

    /// True when the iteration ended because the timeout passed with futures still pending.
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// How many futures have not been yielded yet.
    pub fn remaining(&self) -> usize {
        self.watch.remaining
    }

    /// The futures not yielded yet.
    pub fn into_pending(self) -> Vec<Future<T>> {
        self.watch.into_pending()
    }
}

impl<T> Iterator for AsCompleted<T> {
    type Item = Future<T>;

    fn next(&mut self) -> Option<Future<T>> {
        if self.timed_out {
            return None;
        }
        let next = self.watch.next_done(self.deadline);
        if next.is_none() && self.watch.remaining > 0 {
            self.timed_out = true;
        }
        next
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.watch.remaining))
    }
}

impl<T> fmt::Debug for AsCompleted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompleted")
            .field("remaining", &self.watch.remaining)
            .field("timed_out", &self.timed_out)
            .finish()
    }
}

/// When [`wait()`] returns (Python's `FIRST_COMPLETED`, `FIRST_EXCEPTION`, `ALL_COMPLETED`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WaitMode {
    /// When every future is done.
    #[default]
    All,
    /// When any future is done.
    First,
    /// When any future finishes with an error (of any kind: returned, panic, cancelled, timed out,
    /// worker died, lost), or when every future is done.
    FirstError,
}

/// What [`wait()`] returns: the futures that are done and those that are not, each in the order given.
#[derive(Debug)]
pub struct Waited<T> {
    /// Finished futures: their `wait` returns at once.
    pub done: Vec<Future<T>>,
    /// Futures still queued or running.
    pub pending: Vec<Future<T>>,
}

/// Waits for `futures` as `mode` says, at most `timeout` (None: no limit), and splits them into done and
/// pending, like Python's `concurrent.futures.wait`. No future is lost: every one given comes back in
/// one of the two sets.
///
/// ```
/// use martelli::{wait, Pool, WaitMode};
///
/// let pool = Pool::threads(2)?;
/// let futures = vec![pool.submit(|| 1)?, pool.submit(|| 2)?];
/// let waited = wait(futures, WaitMode::All, None);
/// assert_eq!(waited.done.len(), 2);
/// assert!(waited.pending.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn wait<T>(
    futures: impl IntoIterator<Item = Future<T>>,
    mode: WaitMode,
    timeout: Option<Duration>,
) -> Waited<T> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut watch = Watch::new(futures);
    let total = watch.futures.len();
    let mut done_flags = vec![false; total];
    while watch.remaining > 0 {
        let next = match deadline {
            None => watch.finished.recv().ok(),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                watch.finished.recv_timeout(left).ok()
            }
        };
        let Some(index) = next else { break };
        watch.remaining -= 1;
        done_flags[index] = true;
        let stop = match mode {
            WaitMode::All => false,
            WaitMode::First => true,
            WaitMode::FirstError => watch.futures[index].as_ref().is_some_and(Future::is_error),
        };
        if stop {
            break;
        }
    }
    // Futures that finished after the loop stopped are done too.
    while let Ok(index) = watch.finished.try_recv() {
        done_flags[index] = true;
    }
    let mut done = Vec::new();
    let mut pending = Vec::new();
    for (index, future) in watch.futures.into_iter().enumerate() {
        if let Some(future) = future {
            if done_flags[index] {
                done.push(future);
            } else {
                pending.push(future);
            }
        }
    }
    Waited { done, pending }
}
