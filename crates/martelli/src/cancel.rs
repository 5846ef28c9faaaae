//! Cooperative cancellation: a thread is never killed, it is asked to stop.

use crate::sync::{AtomicBool, Mutex, Ordering};
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::ptr::NonNull;
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
#[derive(Clone)]
pub struct CancelToken {
    /// The allocation that holds the token's state: a token of its own, or the cell of the task
    /// it belongs to (one allocation per task holds the task's closure, its future's state and its
    /// token; see `cell.rs`). Reference counting is not part of the state machine, so this is the
    /// standard `Arc` even under loom; the flag and the wakers go through the `sync` shim.
    host: std::sync::Arc<dyn TokenHost>,
}

impl Default for CancelToken {
    fn default() -> Self {
        CancelToken {
            host: std::sync::Arc::new(TokenState::default()),
        }
    }
}

/// What a [`CancelToken`] points to: something that holds a [`TokenState`]. Unwind-safe, so that a
/// token (and a [`Future`](crate::Future), which holds one) stays `UnwindSafe` and `RefUnwindSafe`
/// as it was when a token was an `Arc` of its own.
pub(crate) trait TokenHost:
    std::any::Any + Send + Sync + std::panic::UnwindSafe + std::panic::RefUnwindSafe
{
    /// The token's state.
    fn state(&self) -> &TokenState;

    /// The host as a task cell's job side, when it is one (see `cell.rs`).
    fn as_job(&self) -> Option<&dyn crate::cell::RunCell> {
        None
    }

    /// Times the host's task out if it is running (the timeout watchdog): a task cell or an async
    /// task's cell does; a token of its own has no task.
    fn expire(&self, _after: std::time::Duration) {}
}

/// The state of a token: the flag and its async waiters.
#[derive(Default)]
pub(crate) struct TokenState {
    flag: AtomicBool,
    /// Async waiters of [`CancelToken::cancelled`], allocated when the first one registers: a token
    /// lives in every task's cell, and most are never awaited.
    wakers: Mutex<Option<Box<Wakers>>>,
}

impl TokenHost for TokenState {
    fn state(&self) -> &TokenState {
        self
    }
}

impl TokenState {
    /// True once the token has fired.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Fires the token. Idempotent.
    pub(crate) fn cancel(&self) {
        if !self.flag.swap(true, Ordering::AcqRel) {
            let wakers = self.wakers.lock().take();
            if let Some(wakers) = wakers {
                wakers.wake_all();
            }
        }
    }
}

/// Usually one task waits on a token (an async task's driver on its own token): its waker is kept
/// without a second allocation, and the list of the others is allocated only when there are some,
/// so that the usual case costs 24 bytes.
#[derive(Default)]
struct Wakers {
    first: Option<Waker>,
    #[allow(clippy::box_collection)] // one word instead of a `Vec`'s three: most lists stay empty
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
        let rest = self.rest.map(|rest| *rest).unwrap_or_default();
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

    /// A token whose state lives in `host` (a task's cell).
    pub(crate) fn hosted(host: std::sync::Arc<dyn TokenHost>) -> Self {
        CancelToken { host }
    }

    /// The allocation behind the token.
    pub(crate) fn host(&self) -> &std::sync::Arc<dyn TokenHost> {
        &self.host
    }

    /// True once the token has fired.
    pub fn is_cancelled(&self) -> bool {
        self.host.state().is_cancelled()
    }

    /// Fires the token. Idempotent.
    pub fn cancel(&self) {
        self.host.state().cancel();
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
        self.token
            .host
            .state()
            .wakers
            .lock()
            .get_or_insert_with(Default::default)
            .register(cx.waker());
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
    /// The token of the task running on this thread: borrowed from a live [`CurrentTokenGuard`], so
    /// that entering a task costs no reference count.
    static CURRENT: Cell<Option<NonNull<CancelToken>>> = const { Cell::new(None) };
}

/// Makes `token` the current task's token for the life of the guard.
///
/// Guards live on the stack of the thread that entered them (`!Send`) and are dropped in reverse
/// order of entering, each restoring the token it replaced; so the pointer in `CURRENT` is always
/// that of a token borrowed by a guard still alive on this thread.
pub(crate) struct CurrentTokenGuard<'a> {
    previous: Option<NonNull<CancelToken>>,
    _token: PhantomData<&'a CancelToken>,
    _not_send: PhantomData<*const ()>,
}

impl<'a> CurrentTokenGuard<'a> {
    pub(crate) fn enter(token: &'a CancelToken) -> Self {
        let previous = CURRENT.with(|c| c.replace(Some(NonNull::from(token))));
        CurrentTokenGuard {
            previous,
            _token: PhantomData,
            _not_send: PhantomData,
        }
    }
}

impl Drop for CurrentTokenGuard<'_> {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

/// Calls `f` with the current task's token, if a task runs on this thread.
fn with_current<R>(f: impl FnOnce(Option<&CancelToken>) -> R) -> R {
    let current = CURRENT.with(Cell::get);
    // SAFETY: the pointer is that of a token borrowed by a guard still alive on this thread (see
    // `CurrentTokenGuard`), so it is valid for this call, which cannot outlive the guard.
    f(current.map(|token| unsafe { token.as_ref() }))
}

/// The token of the task running on this thread, if a martelli task is running here.
pub fn cancel_token() -> Option<CancelToken> {
    with_current(|token| token.cloned())
}

/// True when the task running on this thread has been asked to stop (cancelled, timed out, or its pool
/// is shutting down with `CancelPending`). False outside a task.
pub fn is_cancelled() -> bool {
    with_current(|token| token.is_some_and(CancelToken::is_cancelled))
}
