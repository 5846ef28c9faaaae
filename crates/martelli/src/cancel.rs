//! Cooperative cancellation: a thread is never killed, it is asked to stop.

use crate::sync::{Arc, AtomicBool, Mutex, Ordering};
use std::cell::RefCell;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

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
    inner: Arc<TokenInner>,
}

#[derive(Default)]
struct TokenInner {
    flag: AtomicBool,
    /// Async waiters of [`CancelToken::cancelled`].
    wakers: Mutex<Wakers>,
}

/// Usually one task waits on a token: its waker is kept inline, without an allocation.
#[derive(Default)]
struct Wakers {
    first: Option<Waker>,
    /// Boxed so that a token nobody else waits on stays one pointer smaller: tokens exist per task,
    /// and 100,000 waiting tasks should cost as little memory as possible.
    #[allow(clippy::box_collection)]
    rest: Option<Box<Vec<Waker>>>,
}

impl Wakers {
    fn register(&mut self, waker: &Waker) {
        match &self.first {
            None => self.first = Some(waker.clone()),
            Some(w) if w.will_wake(waker) => {}
            Some(_) => {
                let rest = self.rest.get_or_insert_with(Default::default);
                if !rest.iter().any(|w| w.will_wake(waker)) {
                    rest.push(waker.clone());
                }
            }
        }
    }

    fn wake_all(self) {
        let rest = self.rest.map(|b| *b).unwrap_or_default();
        for waker in self.first.into_iter().chain(rest) {
            waker.wake();
        }
    }
}

impl CancelToken {
    /// A new token that has not fired.
    pub fn new() -> Self {
        CancelToken::default()
    }

    /// True once the token has fired.
    pub fn is_cancelled(&self) -> bool {
        self.inner.flag.load(Ordering::Acquire)
    }

    /// Fires the token. Idempotent.
    pub fn cancel(&self) {
        if !self.inner.flag.swap(true, Ordering::AcqRel) {
            let wakers = std::mem::take(&mut *self.inner.wakers.lock());
            wakers.wake_all();
        }
    }

    /// A future that completes when the token fires: `select!` on it to stop async work at its next
    /// `.await`.
    pub fn cancelled(&self) -> Cancelled<'_> {
        Cancelled { token: self }
    }
}

/// The future [`CancelToken::cancelled`] returns.
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Cancelled<'a> {
    token: &'a CancelToken,
}

impl std::future::Future for Cancelled<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.token.is_cancelled() {
            return Poll::Ready(());
        }
        self.token.inner.wakers.lock().register(cx.waker());
        // Checked again after registering: a `cancel` in between has either seen the waker or set
        // the flag before this load.
        if self.token.is_cancelled() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
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
