//! Cooperative cancellation: a thread is never killed, it is asked to stop.

use crate::sync::{Arc, AtomicBool, Ordering};
use std::cell::RefCell;
use std::fmt;

/// A flag that tells a running task it should stop.
///
/// A task on a thread cannot be killed (a killed thread would leave locks held and data half-written),
/// so martelli fires the task's token instead, when the task is cancelled, when it times out, or when the
/// pool shuts down with [`Shutdown::CancelPending`](crate::Shutdown::CancelPending). A long task checks
/// [`is_cancelled`] (or its token) between steps and returns early.
///
/// ```
/// use martelli::Pool;
///
/// let pool = Pool::threads(1)?;
/// let (started_tx, started) = std::sync::mpsc::channel();
/// let fut = pool.submit(move || {
///     let _ = started_tx.send(());
///     let mut steps = 0u64;
///     while !martelli::is_cancelled() {
///         steps += 1;
///         std::thread::yield_now();
///     }
///     steps
/// })?;
/// started.recv()?;
/// assert!(!fut.cancel()); // already running: not removed, but its token fires…
/// assert!(fut.wait().is_ok()); // …and the task returns early, with what it had
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct CancelToken {
    flag: Arc<AtomicBool>,
}

impl CancelToken {
    /// A new token that has not fired.
    pub fn new() -> Self {
        CancelToken {
            flag: Arc::new(AtomicBool::new(false)),
        }
    }

    /// True once the token has fired.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Fires the token. Idempotent.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Release);
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

thread_local! {
    static CURRENT: RefCell<Option<CancelToken>> = const { RefCell::new(None) };
}

/// Makes `token` the current task's token for the life of the guard.
pub(crate) struct CurrentTokenGuard {
    previous: Option<CancelToken>,
}

impl CurrentTokenGuard {
    pub(crate) fn enter(token: &CancelToken) -> Self {
        let previous = CURRENT.with(|c| c.replace(Some(token.clone())));
        CurrentTokenGuard { previous }
    }
}

impl Drop for CurrentTokenGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// The token of the task running on this thread, if a martelli task is running here.
pub fn cancel_token() -> Option<CancelToken> {
    CURRENT.with(|c| c.borrow().clone())
}

/// True when the task running on this thread has been asked to stop (cancelled, timed out, or its pool
/// is shutting down with `CancelPending`). False outside a task.
pub fn is_cancelled() -> bool {
    CURRENT.with(|c| c.borrow().as_ref().is_some_and(CancelToken::is_cancelled))
}
