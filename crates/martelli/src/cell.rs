//! The task cell: one heap allocation per submitted closure.
//!
//! `Pool::submit` puts everything a task needs into one reference-counted [`TaskCell`]: the
//! task's cancellation token, its future's [`Shared`] state (the outcome and what waits for it), its
//! timeout and the closure itself. Three handles point into the cell, all through the one counted
//! pointer a [`CancelToken`] is made of:
//!
//! - the [`Future<T>`] the caller gets (a token, plus a typed pointer to the `Shared<T>` inside);
//! - the [`CellJob`] the backend queues (a token, with the job side of the cell behind
//!   [`TokenHost::as_job`]);
//! - any clone of the task's token (the worker's current token, a shutdown's list of running
//!   tokens, a user's clone).
//!
//! The cell is freed when the last of them is dropped. Before this cell a task cost three
//! allocations (the job box, the future's state, the token).
//!
//! # Rules
//!
//! 1. The closure is touched only through the task's one [`CellJob`] — to run it, to drop it unrun,
//!    or to hand it back when a submission is refused — or by the cell's own destructor, when no
//!    handle is left. There is exactly one `CellJob` per cell, and it is consumed or dropped once.
//! 2. The state machine is [`Shared`]'s (see `future.rs`): the job starts the task only by moving it
//!    from `Queued` to `Running` under the state's lock, so a `cancel` that won the race sees the
//!    closure never called.
//! 3. A `CellJob` dropped without running (a shutdown with `CancelPending`, a refused submission
//!    nobody takes back) drops the closure, fires the token and resolves the future as `Cancelled`.
//! 4. The cell is `'static` (submitted closures and their values are), so a token clone that outlives
//!    the future cannot outlive anything the cell refers to.

use crate::cancel::{CancelToken, CurrentTokenGuard, TokenHost, TokenState};
use crate::error::TaskError;
use crate::future::{Expirer, Future, Shared};
use crate::job::Body;
use crate::watchdog::Watchdog;
use std::cell::UnsafeCell;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

/// A timeout, armed when the task starts. Boxed in the cell: most tasks have none, and the cell's
/// size is part of every task's cost.
pub(crate) struct CellTimeout {
    pub(crate) after: Duration,
    pub(crate) watchdog: Arc<Watchdog>,
}

/// One submitted task: its token, its future's state, its timeout and its closure.
pub(crate) struct TaskCell<B, T> {
    token: TokenState,
    shared: Shared<T>,
    timeout: Option<Box<CellTimeout>>,
    /// The closure until it runs (rule 1). Wrapped in `AssertUnwindSafe`: it is never observed
    /// half-changed after a panic (it is taken whole before it runs), so the cell is unwind-safe
    /// whatever it captures.
    body: AssertUnwindSafe<UnsafeCell<Option<B>>>,
}

// SAFETY: every field but `body` is `Sync` when `B` and `T` are `Send` (the token and the shared
// state synchronise themselves). `body` is only reached through the cell's single `CellJob` or by
// its destructor (rule 1), never from two threads at once, so sharing the cell shares no access to
// it; moving the closure between threads needs only `B: Send`.
unsafe impl<B: Send, T: Send> Sync for TaskCell<B, T> {}

/// The job side of a cell, type-erased for the queue.
pub(crate) trait RunCell: Send + Sync {
    /// Runs the task and completes its future. Never unwinds.
    ///
    /// # Safety
    /// Only the cell's `CellJob` may call it, once (rule 1); `host` is the cell itself.
    unsafe fn run(&self, host: &CancelToken);

    /// Drops the closure unrun and resolves the future as cancelled (rule 3).
    ///
    /// # Safety
    /// As for `run`, and never after it.
    unsafe fn abandon(&self);

    /// Times the task out if it is running (the watchdog, through an [`Expirer`]).
    fn expire(&self, after: Duration);
}

impl<B, T> TokenHost for TaskCell<B, T>
where
    B: Body<T> + 'static,
    T: Send + 'static,
{
    fn state(&self) -> &TokenState {
        &self.token
    }

    fn as_job(&self) -> Option<&dyn RunCell> {
        Some(self)
    }

    fn expire(&self, after: Duration) {
        RunCell::expire(self, after);
    }

    fn shared(&self) -> *const () {
        std::ptr::from_ref(&self.shared).cast()
    }
}

impl<B, T> RunCell for TaskCell<B, T>
where
    B: Body<T> + 'static,
    T: Send + 'static,
{
    unsafe fn run(&self, host: &CancelToken) {
        // SAFETY: the caller is the cell's only job handle (rule 1).
        let body = unsafe { self.take_body() };
        if !self.shared.start() {
            return; // cancelled while queued (rule 2): the closure is dropped unrun
        }
        let Some(body) = body else {
            // Unreachable: the closure is only taken by this job, and only once.
            self.shared.complete(Err(TaskError::Cancelled));
            return;
        };
        if let Some(t) = &self.timeout {
            let weak = Arc::downgrade(host.host());
            t.watchdog.arm(t.after, Expirer::Cell(weak));
        }
        let result = {
            let _current = CurrentTokenGuard::enter(host);
            match catch_unwind(AssertUnwindSafe(|| body.call())) {
                Ok(result) => result,
                Err(payload) => Err(TaskError::panicked(payload)),
            }
        };
        // Dropping a value can panic too; it must not unwind through the worker.
        let _ = catch_unwind(AssertUnwindSafe(|| self.shared.complete(result)));
    }

    unsafe fn abandon(&self) {
        /// Resolves the future when dropped, so that it resolves even if dropping the closure
        /// panics.
        struct Resolve<'a, T>(&'a Shared<T>, &'a TokenState);

        impl<T> Drop for Resolve<'_, T> {
            fn drop(&mut self) {
                self.0.abandon(self.1);
            }
        }

        // SAFETY: the caller is the cell's only job handle (rule 1).
        let body = unsafe { self.take_body() };
        let _resolve = Resolve(&self.shared, &self.token);
        // The closure goes first, as a discarded job's did: what it captured is released before
        // the future resolves.
        drop(body);
    }

    fn expire(&self, after: Duration) {
        self.shared.expire(&self.token, after);
    }
}

impl<B, T> TaskCell<B, T> {
    /// Takes the closure out.
    ///
    /// # Safety
    /// The caller is the cell's only job handle, or owns the cell outright (rule 1).
    unsafe fn take_body(&self) -> Option<B> {
        // SAFETY: by the caller's contract no other thread reaches `body` now.
        unsafe { (*self.body.0.get()).take() }
    }
}

/// A new cell for `body`: the job to queue and the future to hand back.
pub(crate) fn new_task<B, T>(body: B, timeout: Option<CellTimeout>) -> (CellJob, Future<T>)
where
    B: Body<T> + 'static,
    T: Send + 'static,
{
    let cell = Arc::new(TaskCell {
        token: TokenState::default(),
        shared: Shared::new(),
        timeout: timeout.map(Box::new),
        body: AssertUnwindSafe(UnsafeCell::new(Some(body))),
    });
    let host: Arc<dyn TokenHost> = cell;
    let token = CancelToken::hosted(host);
    let job = CellJob {
        token: token.clone(),
    };
    // SAFETY: the token's host is the cell, whose `shared` is a `Shared<T>` (`TokenHost::shared`).
    let future = unsafe { Future::hosted(token) };
    (job, future)
}

/// The one job handle of a task cell (rule 1): what a backend queues and runs.
pub(crate) struct CellJob {
    /// The cell, as its token: `token.host().as_job()` is always `Some`.
    token: CancelToken,
}

impl CellJob {
    /// The task's token (a shutdown with `CancelPending` fires it while the task runs).
    pub(crate) fn token(&self) -> &CancelToken {
        &self.token
    }

    fn job(&self) -> &dyn RunCell {
        match self.token.host().as_job() {
            Some(job) => job,
            None => unreachable!("a CellJob is made from a task cell"),
        }
    }

    /// Runs the task and completes its future. Never unwinds.
    pub(crate) fn run(self) {
        release(self.run_keeping_token());
    }

    /// Runs the task like [`run`](CellJob::run) and returns the job's reference to the cell, as
    /// its token, so that the caller decides when the cell may be freed: with [`release`].
    pub(crate) fn run_keeping_token(self) -> CancelToken {
        let this = ManuallyDrop::new(self);
        // SAFETY: `this` is the cell's one job handle (rule 1), consumed here: it is never dropped
        // (so `abandon` never follows), and its token is read out exactly once, below.
        unsafe { this.job().run(&this.token) };
        // SAFETY: `this` is not used again; the token is moved out to the caller.
        unsafe { std::ptr::read(&this.token) }
    }

    /// The closure back, when the cell holds a `B` that has not run (a refused `try_submit`). The
    /// future's state stays `Queued`; the caller drops the future.
    pub(crate) fn into_body<B, T>(self) -> Option<B>
    where
        B: Body<T> + 'static,
        T: Send + 'static,
    {
        let any: Arc<dyn std::any::Any + Send + Sync> = self.token.host().clone();
        // A cell of other types: `self` is dropped unrun (rule 3).
        let cell = any.downcast::<TaskCell<B, T>>().ok()?;
        let this = ManuallyDrop::new(self);
        // SAFETY: as in `run`: the handle is consumed here and its token read out once, to drop it.
        drop(unsafe { std::ptr::read(&this.token) });
        // SAFETY: this was the cell's one job handle (rule 1), and it is gone now.
        unsafe { cell.take_body() }
    }
}

/// Drops a job's reference to its cell. When it is the last one (the future is gone), the task's
/// value is dropped here, and a value whose `Drop` panics must not unwind through a worker.
pub(crate) fn release(token: CancelToken) {
    let _ = catch_unwind(AssertUnwindSafe(move || drop(token)));
}

impl Drop for CellJob {
    fn drop(&mut self) {
        // SAFETY: the cell's one job handle, dropped without running (rule 3).
        unsafe { self.job().abandon() };
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::job::Plain;

    /// The layout note in `future.rs`: a cell for a closure that captures a word and returns one,
    /// with the `Arc` counts and the allocator's size word, fits a 128-byte chunk.
    #[test]
    fn a_small_task_cell_fits_128_bytes() {
        type Small = TaskCell<Plain<fn() -> u64>, u64>;
        let arc_inner = 2 * size_of::<usize>() + size_of::<Small>();
        assert!(arc_inner + size_of::<usize>() <= 128, "{arc_inner} bytes");
    }

    #[test]
    fn a_job_dropped_unrun_cancels_its_future_and_drops_its_closure() {
        let captured = Arc::new(());
        let held = Arc::clone(&captured);
        let (job, future) = new_task(Plain(move || drop(held)), None);
        drop(job);
        assert_eq!(Arc::strong_count(&captured), 1);
        assert!(future.token().is_cancelled());
        assert!(matches!(future.wait(), Err(TaskError::Cancelled)));
    }

    #[test]
    fn a_refused_job_hands_its_closure_back() {
        let (job, future) = new_task(Plain(|| 7u8), None);
        let body = job.into_body::<Plain<fn() -> u8>, u8>();
        assert!(
            body.is_none(),
            "a different closure type is not handed back"
        );
        assert!(matches!(future.wait(), Err(TaskError::Cancelled)));

        fn seven() -> u8 {
            7
        }
        let (job, future) = new_task(Plain(seven as fn() -> u8), None);
        let Some(Plain(f)) = job.into_body::<Plain<fn() -> u8>, u8>() else {
            panic!("the closure comes back");
        };
        assert_eq!(f(), 7);
        assert!(!future.is_done());
    }

    #[test]
    fn the_last_handle_frees_the_cell_and_its_outcome() {
        let value = Arc::new(());
        let (job, future) = new_task(
            Plain({
                let value = Arc::clone(&value);
                move || value
            }),
            None,
        );
        let token = future.token().clone();
        job.run();
        drop(future);
        assert_eq!(Arc::strong_count(&value), 2, "the token keeps the outcome");
        drop(token);
        assert_eq!(Arc::strong_count(&value), 1);
    }
}
