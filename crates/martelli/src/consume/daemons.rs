//! The consumer groups of a pool ([`Daemons`]) and the handle of one started group ([`Consumers`]).

use super::{ConsumeError, Counters, Group};
use crate::future::Future;
use crate::sync::{Arc, Mutex, Ordering};
use std::fmt;

/// A consumer group as the pool's registry sees it, whatever its item types.
pub(super) trait Daemon: Send + Sync {
    fn stop(&self);
    /// Waits for consumers on threads of their own (after `stop`).
    fn join(&self);
    fn live(&self) -> usize;
    fn reserve(&self, consumers: usize);
}

pub(super) struct GroupHandle<T, R>(pub(super) Arc<Group<T, R>>);

impl<T: Send + 'static, R: Send> Daemon for GroupHandle<T, R> {
    fn stop(&self) {
        self.0.stop();
    }

    fn join(&self) {
        self.0.join();
    }

    fn live(&self) -> usize {
        usize::try_from(self.0.counters.live.load(Ordering::Acquire)).unwrap_or(usize::MAX)
    }

    fn reserve(&self, consumers: usize) {
        self.0
            .counters
            .live
            .fetch_add(consumers as u64, Ordering::AcqRel);
    }
}

/// The consumer groups of one pool, so that the pool's shutdown can stop them (a consumer waiting on
/// an empty queue would otherwise keep the shutdown waiting forever) and so that a pool never gets
/// more consumers than workers.
#[derive(Default)]
pub(crate) struct Daemons {
    inner: Mutex<DaemonsInner>,
}

#[derive(Default)]
struct DaemonsInner {
    pub(super) groups: Vec<Box<dyn Daemon>>,
    pub(super) stopped: bool,
}

impl fmt::Debug for Daemons {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("Daemons")
            .field("groups", &inner.groups.len())
            .field("stopped", &inner.stopped)
            .finish()
    }
}

impl Daemons {
    /// Reserves workers for a new group and registers it; returns how many consumers to start.
    pub(super) fn register(
        &self,
        workers: usize,
        asked: Option<usize>,
        handle: impl FnOnce() -> Box<dyn Daemon>,
    ) -> Result<usize, ConsumeError> {
        let mut inner = self.inner.lock();
        if inner.stopped {
            return Err(ConsumeError::ShutDown);
        }
        inner.groups.retain(|g| g.live() > 0);
        let busy: usize = inner.groups.iter().map(|g| g.live()).sum();
        let free = workers.saturating_sub(busy);
        let n = asked.unwrap_or(free);
        if n == 0 || n > free {
            return Err(ConsumeError::NotEnoughWorkers {
                asked: n.max(1),
                free,
                workers,
            });
        }
        let handle = handle();
        // Reserve before unlocking, so two concurrent `start`s cannot both take the same workers.
        handle.reserve(n);
        inner.groups.push(handle);
        Ok(n)
    }

    /// Stops every group, now and for good (the pool is shutting down), and waits for the consumers
    /// that run on threads of their own: each finishes the item in hand, whose task still runs
    /// because the backend shuts down only after this.
    pub(crate) fn stop_all(&self) {
        let groups = {
            let mut inner = self.inner.lock();
            inner.stopped = true;
            std::mem::take(&mut inner.groups)
        };
        for group in &groups {
            group.stop();
        }
        for group in &groups {
            group.join();
        }
    }
}

/// Running daemon consumers of one queue, from [`Consume::start`](super::Consume::start).
///
/// Dropping the handle leaves the consumers running: they serve the queue for the life of the pool.
pub struct Consumers {
    pub(super) handle: Box<dyn Daemon>,
    pub(super) counters: Arc<Counters>,
    pub(super) futures: Vec<Future<()>>,
}

impl fmt::Debug for Consumers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumers")
            .field("count", &self.count())
            .field("running", &self.running())
            .field("processed", &self.processed())
            .field("failed", &self.failed())
            .finish()
    }
}

impl Consumers {
    /// How many consumers were started.
    pub fn count(&self) -> usize {
        self.futures.len()
    }

    /// How many have not returned yet.
    pub fn running(&self) -> usize {
        self.handle.live()
    }

    /// Items processed so far, failed ones included.
    pub fn processed(&self) -> u64 {
        self.counters.processed.load(Ordering::Relaxed)
    }

    /// Items that failed so far.
    pub fn failed(&self) -> u64 {
        self.counters.failed.load(Ordering::Relaxed)
    }

    /// Asks the consumers to stop: each finishes the item in hand and takes no more. Returns at once;
    /// [`wait`](Consumers::wait) for them to return.
    pub fn stop(&self) {
        self.handle.stop();
    }

    /// Waits until every consumer has returned: after the queue was closed and drained, after
    /// [`stop`](Consumers::stop), or after the pool's shutdown began.
    pub fn wait(self) {
        for future in self.futures {
            // A consumer catches every panic of the task, so its own outcome carries nothing.
            let _ = future.wait();
        }
    }
}
