//! [`Future<T>`]: the handle to one task's result, and the [`Promise`] a backend completes it with.
//!
//! # The state machine
//!
//! A task's shared state moves through these states, under one mutex:
//!
//! ```text
//!   Queued ──start──▶ Running ──complete / expire──▶ Done ──take──▶ Taken
//!     │                  │ cancel: token fires, stays Running
//!     └──cancel / promise dropped unrun──▶ Done(Cancelled)
//! ```
//!
//! Rules the code keeps (the loom models in `loom_models.rs` check them):
//! 1. Done is entered exactly once; the first outcome wins and later ones are dropped.
//! 2. Everything that waits (blocked threads, an async waker, hooks, callbacks) is woken or run exactly
//!    once, after the outcome is fixed: callbacks under the lock in the critical section that enters
//!    Done (they see the outcome by reference), everything else after the outcome is stored.
//! 3. A promise dropped without an outcome (its job was discarded) resolves the future as `Cancelled`, so
//!    no waiter hangs.
//!
//! # Layout
//!
//! A submitted closure's state lives in its task cell (`cell.rs`), one allocation with the closure
//! and the token, and the future holds only the token, through whose host it reaches the state
//! ([`TokenHost::shared`]); an async task's lives in its async cell (`task_future.rs`) in the same
//! way; a [`Promise`]'s state (remote and scoped jobs, `to_thread`) has an `Arc` of its own, which
//! holds the token. So a future is two words either way ([`Repr`]). The state's size is part of the
//! cost of a task too: the state, the count of blocked threads and the outcome share one enum, an
//! error is stored boxed ([`Stage`]), and the async waker and the callbacks are boxed on first use
//! (`Watchers`), which keeps a cell for a small closure and a word-sized result within 128 bytes,
//! the largest size the system allocator recycles through its fast bins, and an async task's cell
//! within the 104 bytes that fit beside tokio's task cell (BENCHMARKS.md).

use crate::cancel::{CancelToken, TokenHost, TokenState};
use crate::error::{TaskError, TaskResult};
use crate::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A task's identity within this process: unique, increasing in submission order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub(crate) u64);

impl TaskId {
    pub(crate) fn next() -> TaskId {
        TaskId(crate::sync::next_id())
    }

    /// The number behind the id.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task-{}", self.0)
    }
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Submitted, not started.
    Queued,
    /// Started on a worker.
    Running,
    /// Finished, in any outcome.
    Done,
}

type Callback<T> = Box<dyn FnOnce(&TaskResult<T>) + Send>;
type Hook = Box<dyn FnOnce() + Send>;

/// Something to run when the task is done.
enum OnDone<T> {
    /// A user callback: sees the outcome (under the lock).
    Callback(Callback<T>),
    /// An internal notification (as_completed, wait, map): runs after the lock is released.
    Hook(Hook),
}

/// Where a task's state machine is, with what each place needs: while the task is not done, whether
/// it started and how many threads are blocked in `wait*` (the condvar is only signalled when there
/// are some); once done, its outcome, the error boxed so that a small value keeps the state small (an
/// error costs an allocation, a value does not). One enum rather than a state, a count and an
/// optional outcome side by side: for a `()` result that is 16 bytes instead of 24, and the state is
/// allocated per task.
enum Stage<T> {
    /// Queued (`running: false`) or running.
    Pending { running: bool, waiters: u32 },
    /// Done with a value.
    Value(T),
    /// Done with an error.
    Error(Box<TaskError>),
    /// Done, and the outcome was moved out by the handle.
    Taken,
}

impl<T> Stage<T> {
    fn done(result: TaskResult<T>) -> Self {
        match result {
            Ok(value) => Stage::Value(value),
            Err(error) => Stage::Error(Box::new(error)),
        }
    }

    fn is_done(&self) -> bool {
        !matches!(self, Stage::Pending { .. })
    }

    /// The outcome, leaving `Taken` in its place; `None` if there is none (not done, or taken).
    fn take(&mut self) -> Option<TaskResult<T>> {
        match std::mem::replace(self, Stage::Taken) {
            Stage::Value(value) => Some(Ok(value)),
            Stage::Error(error) => Some(Err(*error)),
            Stage::Taken => None,
            pending @ Stage::Pending { .. } => {
                *self = pending;
                None
            }
        }
    }
}

struct Slot<T> {
    stage: Stage<T>,
    /// The async waker and the completion callbacks, allocated only when one is registered: most
    /// tasks have neither, and the state is allocated per task.
    watchers: Option<Box<Watchers<T>>>,
}

/// What waits for a task other than blocked threads.
struct Watchers<T> {
    waker: Option<Waker>,
    on_done: Vec<OnDone<T>>,
}

impl<T> Slot<T> {
    fn watchers(&mut self) -> &mut Watchers<T> {
        self.watchers.get_or_insert_with(|| {
            Box::new(Watchers {
                waker: None,
                on_done: Vec::new(),
            })
        })
    }
}

/// The state a task's future and its producer share: a task's outcome and everything that waits
/// for it. It lives in the task's cell (`cell.rs`) for a submitted closure, or in an `Arc` of its
/// own for a [`Promise`].
pub(crate) struct Shared<T> {
    id: TaskId,
    slot: Mutex<Slot<T>>,
    cond: Condvar,
}

impl<T> Shared<T> {
    pub(crate) fn new() -> Self {
        Shared {
            id: TaskId::next(),
            slot: Mutex::new(Slot {
                stage: Stage::Pending {
                    running: false,
                    waiters: 0,
                },
                watchers: None,
            }),
            cond: Condvar::new(),
        }
    }

    /// The task's id.
    pub(crate) fn id(&self) -> TaskId {
        self.id
    }

    /// Marks the task running. False when it was cancelled while queued: then the task must not run.
    pub(crate) fn start(&self) -> bool {
        crate::chaos::point();
        let mut slot = self.slot.lock();
        match &mut slot.stage {
            Stage::Pending { running, .. } if !*running => {
                *running = true;
                true
            }
            _ => false,
        }
    }

    /// Stores the task's outcome. Returns whether it won (it loses to an earlier cancel or timeout).
    pub(crate) fn complete(&self, result: TaskResult<T>) -> bool {
        crate::chaos::point();
        self.finish(result)
    }

    /// Rule 3: a task discarded without an outcome resolves as cancelled, and its token fires.
    pub(crate) fn abandon(&self, token: &TokenState) {
        token.cancel();
        self.finish(Err(TaskError::Cancelled));
    }

    /// Times the task out if it is still running: its token fires and it resolves as `TimedOut`.
    pub(crate) fn expire(&self, token: &TokenState, after: Duration) {
        let slot = self.slot.lock();
        if matches!(slot.stage, Stage::Pending { running: true, .. }) {
            token.cancel();
            self.settle(slot, Err(TaskError::TimedOut { after }));
        }
    }

    /// Stores the outcome if none is stored yet (rule 1), then wakes everything (rule 2).
    /// Returns whether this outcome won.
    fn finish(&self, result: TaskResult<T>) -> bool {
        self.settle(self.slot.lock(), result)
    }

    /// `finish` with the lock already held, so that a caller's check of the state and the transition
    /// are one atomic step.
    fn settle(&self, slot: MutexGuard<'_, Slot<T>>, result: TaskResult<T>) -> bool {
        let Stage::Pending { waiters, .. } = slot.stage else {
            return false;
        };
        self.wake_all(slot, waiters, result);
        true
    }

    /// Runs the callbacks with `result`, stores it (entering Done), and wakes everything else (rule
    /// 2); `waiters` threads are blocked in `wait*`.
    fn wake_all(&self, mut slot: MutexGuard<'_, Slot<T>>, waiters: u32, result: TaskResult<T>) {
        let Some(watchers) = slot.watchers.take() else {
            // Nothing but blocked threads (if any) waits: the common case.
            slot.stage = Stage::done(result);
            if waiters > 0 {
                self.cond.notify_all();
            }
            return;
        };
        let Watchers { waker, on_done } = *watchers;
        // Callbacks see the outcome by reference, so they run under the lock: the handle cannot take the
        // outcome meanwhile. They cannot reach this lock themselves (a callback cannot capture the
        // handle it is registered on), so this cannot deadlock. Hooks run after the lock is released.
        let mut hooks = Vec::new();
        for item in on_done {
            match item {
                OnDone::Callback(callback) => run_guarded(|| callback(&result)),
                OnDone::Hook(hook) => hooks.push(hook),
            }
        }
        slot.stage = Stage::done(result);
        if waiters > 0 {
            self.cond.notify_all();
        }
        drop(slot);
        if let Some(waker) = waker {
            waker.wake();
        }
        for hook in hooks {
            run_guarded(hook);
        }
    }
}

/// Runs user callbacks so that a panic in one cannot unwind through a worker.
fn run_guarded(f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        eprintln!(
            "martelli: a Future::on_done callback panicked: {}",
            crate::error::panic_message(payload.as_ref())
        );
    }
}

/// The producing side of a [`Future`] whose state is not in a task cell: owned by the job (an async
/// task's driver, a remote sink, a scoped job) that completes it.
pub(crate) struct Promise<T> {
    /// Shared with the future, which reaches the token through it.
    state: Arc<PromiseState<T>>,
    /// Set by `complete`, so that the drop leaves the outcome alone (rule 3).
    completed: bool,
}

/// A promise's state, shared with its future: the future reaches its token through it, so that a
/// future is two words whichever kind it is.
struct PromiseState<T> {
    token: CancelToken,
    shared: Shared<T>,
}

impl<T> Promise<T> {
    /// Marks the task running. False when it was cancelled while queued: then the task must not run.
    pub(crate) fn start(&self) -> bool {
        self.state.shared.start()
    }

    pub(crate) fn id(&self) -> TaskId {
        self.state.shared.id
    }

    pub(crate) fn token(&self) -> &CancelToken {
        &self.state.token
    }

    /// Completes the future. Returns whether this outcome won (it loses to an earlier cancel or timeout).
    pub(crate) fn complete(mut self, result: TaskResult<T>) -> bool {
        self.completed = true;
        self.state.shared.complete(result)
    }
}

impl<T: Send + 'static> Promise<T> {
    /// A handle to time the task out from elsewhere (the timeout watchdog).
    #[cfg(loom)]
    pub(crate) fn expirer(&self) -> Expirer {
        // Timeouts are not part of the loom models; loom's Arc has no weak references.
        Expirer::Nothing
    }

    /// A handle to time the task out from elsewhere (the timeout watchdog).
    #[cfg(not(loom))]
    pub(crate) fn expirer(&self) -> Expirer {
        let arc: Arc<dyn ExpireShared> = self.state.clone();
        Expirer::Promise {
            shared: Arc::downgrade(&arc),
            token: self.state.token.clone(),
        }
    }
}

impl<T> Drop for Promise<T> {
    fn drop(&mut self) {
        // Rule 3: a job discarded without running resolves as cancelled.
        if !self.completed {
            self.state.shared.abandon(self.state.token.host().state());
        }
    }
}

/// A promise's shared state, typed away, for the timeout watchdog.
pub(crate) trait ExpireShared: Send + Sync {
    fn expire(&self, token: &TokenState, after: Duration);
}

impl<T: Send> ExpireShared for PromiseState<T> {
    fn expire(&self, token: &TokenState, after: Duration) {
        self.shared.expire(token, after);
    }
}

/// A weak handle to a running task, used by the timeout watchdog: it does not keep the task's
/// outcome alive.
pub(crate) enum Expirer {
    /// Nothing to time out (a promise under loom, whose `Arc` has no weak references).
    #[cfg(loom)]
    Nothing,
    /// A promise's state (and its token, which is small and separate).
    #[cfg_attr(loom, allow(dead_code))] // loom's Arc has no weak references
    Promise {
        shared: std::sync::Weak<dyn ExpireShared>,
        token: CancelToken,
    },
    /// A task cell or an async task's cell (either holds its token).
    Cell(std::sync::Weak<dyn TokenHost>),
}

impl Expirer {
    pub(crate) fn expire(&self, after: Duration) {
        match self {
            #[cfg(loom)]
            Expirer::Nothing => {}
            Expirer::Promise { shared, token } => {
                if let Some(shared) = shared.upgrade() {
                    shared.expire(token.host().state(), after);
                }
            }
            Expirer::Cell(cell) => {
                if let Some(cell) = cell.upgrade() {
                    cell.expire(after);
                }
            }
        }
    }
}

/// A new promise and the future it completes.
pub(crate) fn promise<T>() -> (Promise<T>, Future<T>) {
    let state = Arc::new(PromiseState {
        token: CancelToken::new(),
        shared: Shared::new(),
    });
    (
        Promise {
            state: state.clone(),
            completed: false,
        },
        Future {
            repr: Repr::Promise(state),
        },
    )
}

/// How a future reaches its task's state and token.
enum Repr<T> {
    /// The state lives in the token's host (a task cell, `cell.rs`, or an async task's cell,
    /// `task_future.rs`), at the address [`TokenHost::shared`] gives; the token's counted pointer
    /// keeps it alive.
    Hosted(CancelToken),
    /// A promise's state, which holds the token.
    Promise(Arc<PromiseState<T>>),
}

/// The result of a task that will finish later.
///
/// Get the result by blocking ([`wait`](Future::wait), [`wait_timeout`](Future::wait_timeout)), by
/// polling ([`try_get`](Future::try_get)), by a callback ([`on_done`](Future::on_done)) or with `.await`
/// from any async runtime: `Future<T>` implements [`std::future::Future`] and never blocks the runtime's
/// thread. Dropping a `Future` does not stop its task; [`cancel`](Future::cancel) does.
///
/// ```
/// use martelli::Pool;
///
/// let pool = Pool::threads(2)?;
/// let fut = pool.submit(|| 6 * 7)?;
/// assert_eq!(fut.wait()?, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Future<T> {
    /// Two words either way (the token's pointer is never null, which tells the kinds apart): a
    /// program that keeps 100,000 futures keeps 100,000 of these.
    repr: Repr<T>,
}

impl<T> Future<T> {
    /// A future whose state lives in its token's host.
    ///
    /// # Safety
    /// `token`'s host must hold a `Shared<T>`, of this `T`, at the address its
    /// [`TokenHost::shared`] returns, for as long as the host lives.
    pub(crate) unsafe fn hosted(token: CancelToken) -> Self {
        debug_assert!(!token.host().shared().is_null());
        Future {
            repr: Repr::Hosted(token),
        }
    }

    fn shared(&self) -> &Shared<T> {
        match &self.repr {
            // SAFETY: `hosted`'s contract: the host holds a `Shared<T>` at this address, and the
            // token, which `self` holds for its whole life, keeps the host alive.
            Repr::Hosted(token) => unsafe { &*token.host().shared().cast::<Shared<T>>() },
            Repr::Promise(state) => &state.shared,
        }
    }

    /// The task's id (unique in this process, increasing in submission order).
    pub fn id(&self) -> TaskId {
        self.shared().id
    }

    /// Where the task is now.
    pub fn status(&self) -> Status {
        match self.shared().slot.lock().stage {
            Stage::Pending { running: false, .. } => Status::Queued,
            Stage::Pending { running: true, .. } => Status::Running,
            Stage::Value(_) | Stage::Error(_) | Stage::Taken => Status::Done,
        }
    }

    /// True when the task has finished (in any outcome); [`wait`](Future::wait) then returns at once.
    pub fn is_done(&self) -> bool {
        self.status() == Status::Done
    }

    /// True while the task runs on a worker.
    pub fn is_running(&self) -> bool {
        self.status() == Status::Running
    }

    /// The task's cancellation token (it fires on [`cancel`](Future::cancel) and on timeout).
    pub fn token(&self) -> &CancelToken {
        match &self.repr {
            Repr::Hosted(token) => token,
            Repr::Promise(state) => &state.token,
        }
    }

    /// Cancels the task. Returns true when it was still queued: it will not run, and the future resolves
    /// as [`TaskError::Cancelled`] now. A running task on threads is not stopped (a thread is never
    /// killed): its [`CancelToken`] fires, and the task may check it and return early; then `cancel`
    /// returns false. On a process pool a running task's worker is killed, and the future resolves as
    /// `Cancelled` (`cancel` still returns false: the task was not removed from a queue).
    /// A finished task is left as it is.
    pub fn cancel(&self) -> bool {
        let slot = self.shared().slot.lock();
        match slot.stage {
            Stage::Pending { running: false, .. } => {
                // Checked and settled under one lock: a worker cannot start the task in between.
                self.token().cancel();
                self.shared().settle(slot, Err(TaskError::Cancelled))
            }
            Stage::Pending { running: true, .. } => {
                drop(slot);
                self.token().cancel();
                false
            }
            Stage::Value(_) | Stage::Error(_) | Stage::Taken => false,
        }
    }

    /// Blocks until the task finishes and returns its outcome.
    pub fn wait(self) -> TaskResult<T> {
        crate::chaos::point();
        let mut slot = self.shared().slot.lock();
        while count_waiter(&mut slot, 1) {
            slot = self.shared().cond.wait(slot);
            count_waiter(&mut slot, -1);
        }
        take(&mut slot)
    }

    /// Blocks until the task finishes or `timeout` elapses. On time-out the future is handed back
    /// unchanged (the task goes on), as `Err(self)`.
    pub fn wait_timeout(self, timeout: Duration) -> Result<TaskResult<T>, Future<T>> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.wait_deadline(deadline),
            None => Ok(self.wait()),
        }
    }

    /// Blocks until the task finishes or `deadline` passes; like [`wait_timeout`](Future::wait_timeout).
    pub fn wait_deadline(self, deadline: Instant) -> Result<TaskResult<T>, Future<T>> {
        {
            let mut slot = self.shared().slot.lock();
            loop {
                if !count_waiter(&mut slot, 1) {
                    return Ok(take(&mut slot));
                }
                let (guard, timed_out) = self.shared().cond.wait_until(slot, deadline);
                slot = guard;
                if count_waiter(&mut slot, -1) && timed_out {
                    break;
                }
            }
        }
        Err(self)
    }

    /// The outcome if the task has finished, otherwise the future back as `Err(self)`. Never blocks.
    pub fn try_get(self) -> Result<TaskResult<T>, Future<T>> {
        {
            let mut slot = self.shared().slot.lock();
            if slot.stage.is_done() {
                return Ok(take(&mut slot));
            }
        }
        Err(self)
    }

    /// Runs `callback` with the outcome when the task finishes: on the thread that finishes it, or at
    /// once on this thread if it already has. Keep callbacks short; a panicking callback is reported on
    /// stderr and does not harm the worker.
    pub fn on_done<F>(&self, callback: F)
    where
        F: FnOnce(&TaskResult<T>) + Send + 'static,
    {
        let mut slot = self.shared().slot.lock();
        if !slot.stage.is_done() {
            slot.watchers()
                .on_done
                .push(OnDone::Callback(Box::new(callback)));
        } else if let Some(result) = slot.stage.take() {
            run_guarded(|| callback(&result));
            slot.stage = Stage::done(result);
        }
    }

    /// Runs `hook` once the task is done (at once if it is). Used by `as_completed`, `wait` and `map`.
    pub(crate) fn add_hook(&self, hook: Hook) {
        let mut slot = self.shared().slot.lock();
        if slot.stage.is_done() {
            drop(slot);
            hook();
        } else {
            slot.watchers().on_done.push(OnDone::Hook(hook));
        }
    }

    /// True when the task finished with an error of any kind.
    pub(crate) fn is_error(&self) -> bool {
        let slot = self.shared().slot.lock();
        matches!(slot.stage, Stage::Error(_))
    }
}

/// Adds `delta` to the count of blocked threads if the task is not done; returns whether it is not.
fn count_waiter<T>(slot: &mut Slot<T>, delta: i32) -> bool {
    match &mut slot.stage {
        Stage::Pending { waiters, .. } => {
            *waiters = waiters.wrapping_add_signed(delta);
            true
        }
        _ => false,
    }
}

/// The outcome of a done task, taken by its one handle.
fn take<T>(slot: &mut Slot<T>) -> TaskResult<T> {
    // `None` is unreachable through the public API: only the single handle takes, and it is
    // consumed; a task not done is never taken.
    slot.stage.take().unwrap_or(Err(TaskError::Cancelled))
}

impl<T> std::future::Future for Future<T> {
    type Output = TaskResult<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.shared().slot.lock();
        match slot.stage {
            Stage::Value(_) | Stage::Error(_) => Poll::Ready(take(&mut slot)),
            Stage::Taken => panic!("martelli::Future polled after it returned its result"),
            Stage::Pending { .. } => {
                let watchers = slot.watchers();
                match &watchers.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => watchers.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

impl<T> fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Future")
            .field("id", &self.shared().id)
            .field("status", &self.status())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_round_trips() {
        assert_eq!(
            Stage::done(Ok::<u8, TaskError>(7)).take().map(|r| r.ok()),
            Some(Some(7))
        );
        let mut error = Stage::<u8>::done(Err(TaskError::Cancelled));
        assert!(matches!(error.take(), Some(Err(TaskError::Cancelled))));
        assert!(error.take().is_none(), "an outcome is taken once");
        let mut pending = Stage::<u8>::Pending {
            running: true,
            waiters: 2,
        };
        assert!(pending.take().is_none());
        assert!(matches!(
            pending,
            Stage::Pending {
                running: true,
                waiters: 2
            }
        ));
    }

    /// A program that keeps 100,000 futures keeps 100,000 of these (`sleepers queued`, BENCHMARKS.md).
    #[cfg(all(not(loom), target_pointer_width = "64"))]
    #[test]
    fn a_future_is_two_words_whichever_kind() {
        assert_eq!(size_of::<Future<()>>(), 16);
        assert_eq!(size_of::<Future<Vec<u8>>>(), 16);
    }

    #[test]
    fn a_promise_futures_token_is_the_promises() {
        let (promise, future) = promise::<u8>();
        assert!(future.cancel(), "queued: the cancel settles it");
        assert!(promise.token().is_cancelled());
        assert!(future.token().is_cancelled());
        drop(promise);
        assert!(matches!(future.wait(), Err(TaskError::Cancelled)));
    }

    #[test]
    fn on_done_after_done_sees_the_error_and_keeps_it() {
        let (promise, future) = promise::<u8>();
        assert!(promise.complete(Err(TaskError::Cancelled)));
        let (tx, rx) = std::sync::mpsc::channel();
        future.on_done(move |r| {
            let _ = tx.send(matches!(r, Err(TaskError::Cancelled)));
        });
        assert_eq!(rx.recv().ok(), Some(true));
        assert!(future.is_error());
        assert!(matches!(future.wait(), Err(TaskError::Cancelled)));
    }
}
