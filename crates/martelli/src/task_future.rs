//! Async tasks on any backend: the driver that runs a `Future` as a martelli task (cancellation at
//! `.await` points, panics caught per poll, the blocking detector), and a minimal executor that runs such
//! a task on a worker thread when the backend has no event loop.

use crate::cancel::{CancelToken, CurrentTokenGuard, TokenHost, TokenState};
use crate::error::{TaskError, TaskResult};
use crate::future::{Expirer, Shared, TaskId};
use crate::job::Timeout;
use std::cell::UnsafeCell;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// A boxed task future, as backends receive it.
pub(crate) type BoxTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A report of the blocking-call detector: a task ran this long between two `.await` points.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlockingReport {
    /// The task's name, when it was given one ([`TaskOptions::name`](crate::TaskOptions::name)).
    pub task: Option<&'static str>,
    /// The task's id.
    pub id: TaskId,
    /// How long one poll of the task took.
    pub blocked_for: Duration,
}

impl fmt::Display for BlockingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.task.unwrap_or("unnamed");
        write!(
            f,
            "task {name:?} ({}) blocked the event loop for {:?} between two .await points; move \
             blocking or CPU-bound work to martelli::to_thread or a thread pool",
            self.id, self.blocked_for
        )
    }
}

/// The blocking-call detector's settings.
#[derive(Clone)]
pub(crate) struct Detector {
    pub(crate) threshold: Duration,
    pub(crate) report: Arc<dyn Fn(&BlockingReport) + Send + Sync>,
}

impl fmt::Debug for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Detector")
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

/// One async task's state besides its future, in one allocation: the task's token, its future's
/// shared state, and what its driver keeps between polls. The [`Future`](crate::Future) handle and
/// every clone of the token point here (the token's counted pointer keeps it alive, as a task
/// cell's does, `cell.rs`); the driver, which tokio keeps in its own task cell, holds one thin
/// pointer to it and, on an event loop, one to the loop's tracker of live tasks: two words over the
/// user's future, which keep a future of up to 136 bytes in tokio's 256-byte cell. The cell itself
/// asks for at most 104 bytes (a test holds it), which glibc serves from the hole it leaves beside
/// tokio's 128-byte-aligned cell (BENCHMARKS.md, async memory).
///
/// Rules:
/// 1. `driver` is touched only by the task's one [`Driver`] (through its `CellRef`), never by the
///    handle or a token: so it is never reached from two threads at once.
/// 2. The state machine is [`Shared`]'s (`future.rs`): the driver starts the task only by moving
///    it from `Queued` to `Running`.
/// 3. A driver dropped without an outcome (tokio dropped the task, a job was discarded) drops the
///    user's future first, then fires the token and resolves the future as `Cancelled`.
/// 5. The live count is released when the driver is dropped, after the user's future (not when
///    the outcome is delivered: a task cancelled or timed out at an `.await` still holds its
///    future then), so that `Shutdown::Wait` returns only once every task's future is gone.
/// 4. The driver releases its live count (in `CellRef`'s `drop`) while it still holds its reference to the
///    cell, so the event loop's tracker, which keeps a thin pointer to the cell's token, never
///    holds one to a freed cell.
pub(crate) struct AsyncCell<T> {
    token: TokenState,
    shared: Shared<T>,
    /// Wrapped in `AssertUnwindSafe`: it holds no user value, only the driver's bookkeeping.
    driver: AssertUnwindSafe<UnsafeCell<DriverState<T>>>,
}

/// What the driver keeps between polls.
struct DriverState<T> {
    started: bool,
    /// The outcome is delivered (or the task was found cancelled while queued): the driver only
    /// waits to be dropped.
    done: bool,
    /// With the driver's tracker (`CellRef`), the event loop's count of this task as live (`Live`,
    /// in two parts: the key packs beside `started` here, the tracker, the same for every task of
    /// a loop, stays with the driver, which tokio keeps in its own task cell), released when the
    /// driver is dropped.
    #[cfg(feature = "async")]
    live_key: u32,
    /// The rarely used settings, boxed so that a plain task stays small (100,000 waiting tasks
    /// should cost as little memory as possible).
    extras: Option<Box<Extras<T>>>,
}

// SAFETY: `token` and `shared` synchronise themselves (`Sync` when `T: Send`); `driver` is only
// reached by the task's one driver (rule 1), so sharing the cell shares no access to it, and moving
// its contents between threads needs only `T: Send` (the extras and the live guard are `Send`).
unsafe impl<T: Send> Sync for AsyncCell<T> {}

impl<T: Send + 'static> TokenHost for AsyncCell<T> {
    fn state(&self) -> &TokenState {
        &self.token
    }

    fn expire(&self, after: Duration) {
        self.shared.expire(&self.token, after);
    }

    fn shared(&self) -> *const () {
        std::ptr::from_ref(&self.shared).cast()
    }
}

impl<T> AsyncCell<T> {
    /// The driver's state.
    ///
    /// # Safety
    /// Only the task's driver calls it (rule 1), and never holds two of these at once.
    #[allow(clippy::mut_from_ref)] // exclusive by rule 1
    unsafe fn driver(&self) -> &mut DriverState<T> {
        // SAFETY: by the caller's contract no other reference to the state exists.
        unsafe { &mut *self.driver.0.get() }
    }
}

/// The driver's counted reference to its cell, and on an event loop the loop's tracker of live
/// tasks. Dropped without [`complete`](CellRef::complete), it resolves the future as cancelled
/// (rule 3); dropped either way, it releases the driver's settings and live count (rule 5).
struct CellRef<T: Send + 'static> {
    cell: Arc<AsyncCell<T>>,
    /// With the cell's `live_key`, the task's `Live` count (rule 4: released before `cell`).
    #[cfg(feature = "async")]
    tracker: Option<Arc<crate::backend::event_loop::Tracker>>,
}

impl<T: Send + 'static> CellRef<T> {
    /// Delivers the outcome (it loses to an earlier cancel or timeout), once; the driver's
    /// settings go with it, its live count when the driver is dropped (rule 5).
    fn complete(&self, result: TaskResult<T>) {
        // SAFETY: the driver's own reference (rule 1); the borrow ends before any other.
        let state = unsafe { self.cell.driver() };
        if state.done {
            return;
        }
        state.done = true;
        state.extras = None;
        self.cell.shared.complete(result);
    }

    /// True once the outcome is delivered.
    fn is_done(&self) -> bool {
        // SAFETY: as in `complete`.
        unsafe { self.cell.driver() }.done
    }
}

impl<T: Send + 'static> Drop for CellRef<T> {
    fn drop(&mut self) {
        if !self.is_done() {
            self.cell.shared.abandon(&self.cell.token);
        }
        // SAFETY: the driver's own reference, dropped here (rule 1).
        let state = unsafe { self.cell.driver() };
        state.extras = None;
        // Rule 4: the count leaves the tracker while `self.cell` still keeps the token alive.
        #[cfg(feature = "async")]
        if let Some(tracker) = self.tracker.take() {
            drop(crate::backend::event_loop::Live::from_parts(
                tracker,
                state.live_key,
            ));
        }
    }
}

pin_project_lite::pin_project! {
    /// Runs one async task: starts it (unless it was cancelled while queued), arms its timeout,
    /// polls the user's future with the task's token current — catching panics and timing each poll
    /// for the detector — and completes the future. On the event loop tokio's task cell holds the
    /// driver as it is; other backends box it ([`BoxTask`]).
    pub(crate) struct Driver<F: Future>
    where
        F::Output: Send,
        F::Output: 'static,
    {
        // Structurally pinned. Declared first, so that it is dropped before `cell` resolves the
        // future (rule 3).
        #[pin]
        fut: F,
        // `None` once the outcome is delivered.
        cell: Option<CellRef<F::Output>>,
    }
}

impl<F: Future> Future for Driver<F>
where
    F::Output: Send + 'static,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let Some(cell_ref) = this.cell.as_ref() else {
            return Poll::Ready(());
        };
        if cell_ref.is_done() {
            return Poll::Ready(());
        }
        let cell = Arc::clone(&cell_ref.cell);
        // SAFETY: this is the task's driver (rule 1); the reference ends before any other.
        let state = unsafe { cell.driver() };
        if !state.started {
            state.started = true;
            if !cell.shared.start() {
                // Cancelled while queued: the future is already resolved.
                state.done = true;
                return Poll::Ready(());
            }
            if let Some(t) = state.extras.as_mut().and_then(|e| e.timeout.take()) {
                let host: Arc<dyn TokenHost> = cell.clone();
                t.watchdog
                    .arm(t.after, Expirer::Cell(Arc::downgrade(&host)));
            }
        }
        let detector = state
            .extras
            .as_ref()
            .and_then(|e| e.detector.clone().map(|d| (d, e.name)));
        let token = CancelToken::hosted(cell.clone());
        if token.is_cancelled() {
            return finish(this.cell, Err(TaskError::Cancelled));
        }
        let before = detector.as_ref().map(|_| Instant::now());
        let polled = {
            let _current = CurrentTokenGuard::enter(&token);
            let fut = this.fut;
            catch_unwind(AssertUnwindSafe(|| fut.poll(cx)))
        };
        if let (Some((detector, name)), Some(before)) = (detector, before) {
            let blocked_for = before.elapsed();
            if blocked_for >= detector.threshold {
                (detector.report)(&BlockingReport {
                    task: name,
                    id: cell.shared.id(),
                    blocked_for,
                });
            }
        }
        match polled {
            Ok(Poll::Ready(value)) => finish(this.cell, Ok(value)),
            Err(payload) => finish(this.cell, Err(TaskError::panicked(payload))),
            Ok(Poll::Pending) => {
                // The token may fire while the task waits (cancel, timeout, shutdown): be woken for
                // it. The driver is the token's owner: its registration stays across polls.
                if token.host().state().poll_owner(cx.waker()).is_ready() {
                    return finish(this.cell, Err(TaskError::Cancelled));
                }
                Poll::Pending
            }
        }
    }
}

/// Delivers a driver's outcome, once. The driver keeps its reference to the cell until it is
/// dropped, after the user's future (rule 5).
fn finish<T: Send + 'static>(cell: &mut Option<CellRef<T>>, outcome: TaskResult<T>) -> Poll<()> {
    if let Some(cell) = cell.as_ref() {
        cell.complete(outcome);
    }
    Poll::Ready(())
}

impl<F: Future> Driver<F>
where
    F::Output: Send + 'static,
{
    /// Counts the task as live on an event loop until it ends (`Live` is released with the
    /// driver's state, not when the handle lets the cell go).
    #[cfg(feature = "async")]
    pub(crate) fn set_live(&mut self, live: crate::backend::event_loop::Live) {
        match &mut self.cell {
            Some(cell) => {
                // SAFETY: `self` is the task's driver (rule 1), not yet spawned.
                let state = unsafe { cell.cell.driver() };
                let (tracker, key) = live.into_parts();
                cell.tracker = Some(tracker);
                state.live_key = key;
            }
            None => drop(live),
        }
    }
}

struct Extras<T> {
    timeout: Option<Timeout<T>>,
    detector: Option<Arc<Detector>>,
    name: Option<&'static str>,
}

/// An async task: its driver (to spawn), its future (for the caller) and its token (for the
/// backend's shutdown), all around one [`AsyncCell`].
pub(crate) fn async_task<F>(
    fut: F,
    timeout: Option<Timeout<F::Output>>,
    detector: Option<Arc<Detector>>,
    name: Option<&'static str>,
) -> (Driver<F>, crate::Future<F::Output>, CancelToken)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let extras = (timeout.is_some() || detector.is_some() || name.is_some()).then(|| {
        Box::new(Extras {
            timeout,
            detector,
            name,
        })
    });
    let cell = Arc::new(AsyncCell {
        token: TokenState::default(),
        shared: Shared::new(),
        driver: AssertUnwindSafe(UnsafeCell::new(DriverState {
            started: false,
            done: false,
            #[cfg(feature = "async")]
            live_key: 0,
            extras,
        })),
    });
    let token = CancelToken::hosted(cell.clone());
    // SAFETY: the token's host is the cell, whose `shared` is a `Shared<T>` (`TokenHost::shared`).
    let future = unsafe { crate::Future::hosted(token.clone()) };
    let driver = Driver {
        fut,
        cell: Some(CellRef {
            cell,
            #[cfg(feature = "async")]
            tracker: None,
        }),
    };
    (driver, future, token)
}

/// Wakes a parked thread.
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `fut` to completion on this thread, parking between polls. Used to run async tasks on backends
/// without an event loop: the worker thread is held for the task's whole life, awaits included.
pub(crate) fn block_on_here<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(value) = fut.as_mut().poll(&mut cx) {
            return value;
        }
        std::thread::park();
    }
}

/// A job that runs an async task to completion on the worker thread that takes it.
pub(crate) struct FutureJob {
    pub(crate) task: BoxTask,
    pub(crate) token: CancelToken,
}

impl crate::job::Runnable for FutureJob {
    fn run(self: Box<Self>) {
        block_on_here(self.task);
    }

    fn into_any(self: Box<Self>) -> Option<Box<dyn std::any::Any + Send>> {
        None
    }

    fn token(&self) -> &CancelToken {
        &self.token
    }
}

#[cfg(all(test, not(loom), target_pointer_width = "64"))]
mod tests {
    use super::*;

    /// What an async task's cell asks of the allocator: the `Arc`'s two counts and the cell. At most
    /// 104 bytes it fits the hole glibc leaves beside tokio's 128-byte-aligned task cell; at 112 it
    /// costs 64 bytes more per task (BENCHMARKS.md, "What the allocator charges per async task").
    #[test]
    fn an_async_cell_fits_the_allocators_112_byte_chunk() {
        assert_eq!(size_of::<TokenState>(), 24, "the token's state");
        assert_eq!(
            size_of::<Shared<()>>(),
            48,
            "the future's state for a () result"
        );
        let request = 2 * size_of::<usize>() + size_of::<AsyncCell<()>>();
        assert!(request <= 104, "the async cell asks for {request} bytes");
    }

    /// The driver is what tokio keeps in its own cell beside the user's future: 16 bytes over it keep
    /// a 136-byte future (a task that first awaits a token) in tokio's 256-byte cell; 24 do not.
    #[test]
    fn the_driver_adds_at_most_16_bytes_to_the_users_future() {
        let seven = 7u64;
        let fut = async move { seven };
        let inner = size_of_val(&fut);
        assert_eq!(
            inner % 8,
            0,
            "an 8-aligned future, as the ones that matter are"
        );
        let (driver, _future, _token) = async_task(fut, None, None, None);
        assert!(size_of_val(&driver) <= inner + 16);
    }
}
