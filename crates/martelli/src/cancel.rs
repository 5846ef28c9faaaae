//! Cooperative cancellation: a thread is never killed, it is asked to stop.

use crate::sync::Ordering;
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
    /// standard `Arc` even under loom; the flag goes through the `sync` shim, the waiters through a lock that is loom's under loom.
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

    /// The address of the task state (`Shared<T>`, of the task's result type) a task's host keeps
    /// for the task's [`Future`](crate::Future); null for a token of its own.
    fn shared(&self) -> *const () {
        std::ptr::null()
    }
}

/// The state of a token: the flag and its async waiters, in 24 bytes. A token lives in every
/// task's cell, so its size is part of the cost of a task: the one waker most tokens ever hold (an
/// async task's driver on its own token) is kept inline, a list is allocated only for a second one,
/// and the lock is a byte beside the flag (`parking_lot`'s; a standard `Mutex` around the waiters
/// would take 8 more bytes, which would push an async task's cell out of the allocator's 112-byte
/// chunks, see BENCHMARKS.md).
pub(crate) struct TokenState {
    /// The flag and the waiters, in one struct so that the flag packs beside the lock's byte.
    inner: WaitersLock,
}

impl Default for TokenState {
    fn default() -> Self {
        TokenState {
            inner: WaitersLock::new(),
        }
    }
}

/// Who waits for a token to fire, in 16 bytes (the waker's non-null vtable tells the two apart).
enum Waiters {
    /// One registration, kept inline: the owner (the driver of the token's task, see
    /// [`TokenState::poll_owner`]) or, on a token without a driver, its first lasting registration
    /// ([`TokenState::wake_on_cancel`]).
    One(Waker),
    /// Nobody yet (`None`), or the list allocated when a second waiter came.
    #[allow(clippy::box_collection)] // one word: most tokens never have a list
    List(Option<Box<Wakers>>),
}

impl Waiters {
    const NONE: Waiters = Waiters::List(None);

    /// The list, allocated now if there was none: the inline waker, if any, takes the owner's place
    /// in it.
    fn list(&mut self) -> &mut Wakers {
        if !matches!(self, Waiters::List(Some(_))) {
            let owner = match std::mem::replace(self, Waiters::NONE) {
                Waiters::One(waker) => Some(waker),
                Waiters::List(_) => None,
            };
            *self = Waiters::List(Some(Box::new(Wakers {
                owner,
                others: None,
            })));
        }
        match self {
            Waiters::List(Some(list)) => list,
            // Just made so.
            _ => unreachable!("the waiters were just made a list"),
        }
    }

    fn wake_all(self) {
        match self {
            Waiters::One(waker) => waker.wake(),
            Waiters::List(Some(list)) => list.wake_all(),
            Waiters::List(None) => {}
        }
    }
}

#[cfg(not(loom))]
mod waiters_lock {
    use super::Waiters;
    use crate::sync::AtomicBool;
    use parking_lot::lock_api::RawMutex as _;
    use std::cell::UnsafeCell;
    use std::ops::{Deref, DerefMut};
    use std::panic::AssertUnwindSafe;

    /// The token's flag, and [`Waiters`] behind a one-byte lock: 24 bytes.
    pub(super) struct WaitersLock {
        pub(super) flag: AtomicBool,
        lock: parking_lot::RawMutex,
        /// Wrapped in `AssertUnwindSafe`: only this module's guard reaches it, and every change is a
        /// single assignment made after anything that could panic (cloning a waker), so an unwind
        /// leaves the waiters as they were.
        waiters: AssertUnwindSafe<UnsafeCell<Waiters>>,
    }

    // SAFETY: the waiters are only reached through a guard, which holds the lock; `Waker` is
    // `Send + Sync`, so the waiters may be used from any thread that holds it.
    unsafe impl Sync for WaitersLock {}
    // SAFETY: as above; `Waiters` itself is `Send`.
    unsafe impl Send for WaitersLock {}

    impl WaitersLock {
        pub(super) fn new() -> Self {
            WaitersLock {
                flag: AtomicBool::new(false),
                lock: parking_lot::RawMutex::INIT,
                waiters: AssertUnwindSafe(UnsafeCell::new(Waiters::NONE)),
            }
        }

        pub(super) fn lock(&self) -> Guard<'_> {
            self.lock.lock();
            Guard(self)
        }
    }

    /// Holds the lock; unlocks when dropped (also when unwinding).
    pub(super) struct Guard<'a>(&'a WaitersLock);

    impl Deref for Guard<'_> {
        type Target = Waiters;
        fn deref(&self) -> &Waiters {
            // SAFETY: the guard holds the lock, so no other reference to the waiters exists.
            unsafe { &*self.0.waiters.get() }
        }
    }

    impl DerefMut for Guard<'_> {
        fn deref_mut(&mut self) -> &mut Waiters {
            // SAFETY: as in `deref`; `&mut self` makes this the guard's only reference.
            unsafe { &mut *self.0.waiters.get() }
        }
    }

    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            // SAFETY: this guard locked it (`WaitersLock::lock`) and unlocks it once.
            unsafe { self.0.lock.unlock() };
        }
    }
}

/// Under loom the waiters sit in a loom mutex, so that the models explore the lock's interleavings
/// (the size does not matter there).
#[cfg(loom)]
mod waiters_lock {
    use super::Waiters;
    use crate::sync::AtomicBool;

    pub(super) struct WaitersLock {
        pub(super) flag: AtomicBool,
        waiters: crate::sync::Mutex<Waiters>,
    }

    impl WaitersLock {
        pub(super) fn new() -> Self {
            WaitersLock {
                flag: AtomicBool::new(false),
                waiters: crate::sync::Mutex::new(Waiters::NONE),
            }
        }

        pub(super) fn lock(&self) -> crate::sync::MutexGuard<'_, Waiters> {
            self.waiters.lock()
        }
    }
}

use waiters_lock::WaitersLock;

impl TokenHost for TokenState {
    fn state(&self) -> &TokenState {
        self
    }
}

impl TokenState {
    /// True once the token has fired.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.inner.flag.load(Ordering::Acquire)
    }

    /// Fires the token. Idempotent.
    pub(crate) fn cancel(&self) {
        if !self.inner.flag.swap(true, Ordering::AcqRel) {
            let waiters = std::mem::replace(&mut *self.inner.lock(), Waiters::NONE);
            waiters.wake_all();
        }
    }

    /// Registers `waker` as the token's owner (the driver of the task the token belongs to), or
    /// replaces the owner's waker if it would not wake the same task. One owner per token; the
    /// registration stays across polls, so re-polling costs one `will_wake`. Ready once fired.
    pub(crate) fn poll_owner(&self, waker: &Waker) -> Poll<()> {
        self.register_waiter(waker, |list| match &mut list.owner {
            Some(w) if w.will_wake(waker) => {}
            Some(w) => {
                // The owner's place may hold a lasting registration (`wake_on_cancel`) rather than
                // an earlier waker of this driver: it moves to the slab, never dropped. A stale
                // waker of the driver kept there costs at most one spurious wake; the driver's
                // executors (tokio, `block_on_here`) give it the same waker on every poll.
                let previous = std::mem::replace(w, waker.clone());
                list.others
                    .get_or_insert_with(Default::default)
                    .insert(previous);
            }
            None => list.owner = Some(waker.clone()),
        })
    }

    /// The part of `poll_owner` and `wake_on_cancel` that is the same: `Ready` if the token has
    /// fired; else `waker` is kept inline when nothing waits yet (or is there already, the inline
    /// waker waking the same), and otherwise `in_list` registers it in the list, under the lock.
    fn register_waiter(&self, waker: &Waker, in_list: impl FnOnce(&mut Wakers)) -> Poll<()> {
        if self.is_cancelled() {
            return Poll::Ready(());
        }
        let mut waiters = self.inner.lock();
        // Checked under the lock: `cancel` sets the flag before it takes the waiters, so either it
        // is seen here or `cancel` takes them after this registration. Nothing registers once they
        // have been taken, so no list is allocated again.
        if self.is_cancelled() {
            return Poll::Ready(());
        }
        match &mut *waiters {
            Waiters::List(None) => *waiters = Waiters::One(waker.clone()),
            Waiters::One(w) if w.will_wake(waker) => {}
            _ => in_list(waiters.list()),
        }
        Poll::Pending
    }
}

impl TokenState {
    /// Registers `waker` to be woken when the token fires, for as long as the token lives: unlike a
    /// [`Cancelled`] future, which leaves the list when it is dropped, this registration is not
    /// tied to any value. For callers that ask once and then go on (a sender that writes a
    /// tombstone when the token fires, a process slot that drops a queued job). Ready if the token
    /// has fired already (then `waker` is not kept).
    ///
    /// The registration takes the owner's place when it is free (a job's token has no driver), so
    /// that it costs no allocation; the list is allocated only for a second registration. A registration of a waker that the list holds already (one that
    /// would wake the same) is not repeated.
    pub(crate) fn wake_on_cancel(&self, waker: &Waker) -> Poll<()> {
        self.register_waiter(waker, |list| match &list.owner {
            None => list.owner = Some(waker.clone()),
            Some(w) if w.will_wake(waker) => {}
            Some(_) => {
                list.register(None, waker);
            }
        })
    }
}

/// The waiters of a token once there are two or more ([`Waiters::List`]): the owner's place, and
/// the slab of the others, allocated only when there are some.
#[derive(Default)]
struct Wakers {
    /// The driver of the token's task (see [`TokenState::poll_owner`]), or, on a token without
    /// a driver, its first lasting registration ([`TokenState::wake_on_cancel`]).
    owner: Option<Waker>,
    /// The [`Cancelled`] futures: each remembers its slot, so registering, re-registering and
    /// removing one are O(1) however many wait.
    #[allow(clippy::box_collection)]
    // one word instead of a slab's four: most lists stay empty
    others: Option<Box<Slab>>,
}

/// A slab of wakers with a free list: a removed slot is reused by the next registration.
struct Slab {
    slots: Vec<Slot>,
    /// The first vacant slot, `NONE` if there is none.
    free: usize,
}

const NONE: usize = usize::MAX;

enum Slot {
    Taken(Waker),
    /// Vacant; the next vacant slot, `NONE` at the end of the free list.
    Vacant(usize),
}

impl Default for Slab {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: NONE,
        }
    }
}

impl Slab {
    fn insert(&mut self, waker: Waker) -> usize {
        match self.slots.get(self.free) {
            Some(&Slot::Vacant(next)) => {
                let key = self.free;
                self.free = next;
                self.slots[key] = Slot::Taken(waker);
                key
            }
            _ => {
                self.slots.push(Slot::Taken(waker));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, key: usize) {
        if let Some(slot @ Slot::Taken(_)) = self.slots.get_mut(key) {
            *slot = Slot::Vacant(self.free);
            self.free = key;
        }
    }
}

impl Wakers {
    /// Registers `waker` in slot `key` if it has one, else in a new slot, whose key it returns.
    fn register(&mut self, key: Option<usize>, waker: &Waker) -> usize {
        let slab = self.others.get_or_insert_with(Default::default);
        // A slot that is not taken is not ours any more (cannot happen: only its `Cancelled`
        // removes a slot, and nothing registers after `cancel` took the list): register afresh.
        if let Some(key) = key
            && let Some(Slot::Taken(w)) = slab.slots.get_mut(key)
        {
            if !w.will_wake(waker) {
                *w = waker.clone();
            }
            return key;
        }
        slab.insert(waker.clone())
    }

    fn wake_all(self) {
        if let Some(owner) = self.owner {
            owner.wake();
        }
        for slot in self.others.map(|slab| slab.slots).unwrap_or_default() {
            if let Slot::Taken(waker) = slot {
                waker.wake();
            }
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
        Cancelled {
            token: self,
            slot: None,
        }
    }
}

/// The future [`CancelToken::cancelled`] returns.
///
/// It keeps its place in the token's list of waiters from its first poll until it is dropped (or
/// the token fires): polling it again, or dropping it, costs the same however many wait.
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Cancelled<'a> {
    token: &'a CancelToken,
    /// Its slot in the token's waker list, once registered.
    slot: Option<usize>,
}

impl std::future::Future for Cancelled<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let state = self.token.host.state();
        if state.is_cancelled() {
            return Poll::Ready(());
        }
        let mut waiters = state.inner.lock();
        // Checked under the lock, as in `poll_owner`: once `cancel` has taken the waiters nothing
        // registers, so a slot always refers to the one list of the token.
        if state.is_cancelled() {
            return Poll::Ready(());
        }
        let slot = waiters.list().register(self.slot, cx.waker());
        drop(waiters);
        self.slot = Some(slot);
        Poll::Pending
    }
}

impl Drop for Cancelled<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let mut waiters = self.token.host.state().inner.lock();
            if let Waiters::List(Some(list)) = &mut *waiters
                && let Some(slab) = list.others.as_mut()
            {
                slab.remove(slot);
            }
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::future::Future as _;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn slots(token: &CancelToken) -> usize {
        match &*token.host.state().inner.lock() {
            Waiters::List(Some(list)) => list.others.as_ref().map_or(0, |slab| slab.slots.len()),
            _ => 0,
        }
    }

    #[test]
    fn a_dropped_waiter_frees_its_slot_for_the_next() {
        let token = CancelToken::new();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        // A loop that re-creates `cancelled()` every turn keeps one slot, not one per turn.
        for _ in 0..1000 {
            let mut c = std::pin::pin!(token.cancelled());
            assert!(c.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(slots(&token), 1);
        // Re-polling a waiter keeps its slot.
        let mut kept = std::pin::pin!(token.cancelled());
        for _ in 0..10 {
            assert!(kept.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(slots(&token), 1);
    }

    #[test]
    fn cancel_wakes_each_waiter_once_and_not_the_dropped_ones() {
        let token = CancelToken::new();
        let counts: Vec<Arc<Count>> = (0..100)
            .map(|_| Arc::new(Count(AtomicUsize::new(0))))
            .collect();
        let wakers: Vec<Waker> = counts.iter().map(|c| Waker::from(c.clone())).collect();
        let mut waiters: Vec<Pin<Box<Cancelled<'_>>>> =
            (0..100).map(|_| Box::pin(token.cancelled())).collect();
        for (w, waker) in waiters.iter_mut().zip(&wakers) {
            assert!(
                w.as_mut()
                    .poll(&mut Context::from_waker(waker))
                    .is_pending()
            );
        }
        // The owner registers beside them, and re-registering it with the same waker is a no-op.
        let owner = Arc::new(Count(AtomicUsize::new(0)));
        let owner_waker = Waker::from(owner.clone());
        assert!(token.host.state().poll_owner(&owner_waker).is_pending());
        assert!(token.host.state().poll_owner(&owner_waker).is_pending());
        // Every odd waiter goes away before the token fires.
        let mut kept = Vec::new();
        for (i, w) in waiters.into_iter().enumerate() {
            if i % 2 == 0 {
                kept.push(w);
            }
        }
        assert_eq!(slots(&token), 100);
        token.cancel();
        token.cancel();
        for (i, c) in counts.iter().enumerate() {
            let expected = usize::from(i % 2 == 0);
            assert_eq!(
                c.0.load(std::sync::atomic::Ordering::SeqCst),
                expected,
                "waiter {i}"
            );
        }
        assert_eq!(owner.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        for w in &mut kept {
            assert!(
                w.as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()))
                    .is_ready()
            );
        }
        assert!(token.host.state().poll_owner(&owner_waker).is_ready());
        assert_eq!(slots(&token), 0, "nothing registers once the token fired");
    }

    #[test]
    fn lasting_registrations_and_an_owner_that_changes_its_waker_are_all_woken() {
        let token = CancelToken::new();
        let counts: Vec<Arc<Count>> = (0..4)
            .map(|_| Arc::new(Count(AtomicUsize::new(0))))
            .collect();
        let wakers: Vec<Waker> = counts.iter().map(|c| Waker::from(c.clone())).collect();
        let state = token.host.state();
        // The first lasting registration takes the owner's place: no slab yet.
        assert!(state.wake_on_cancel(&wakers[0]).is_pending());
        assert!(state.wake_on_cancel(&wakers[0]).is_pending());
        assert_eq!(slots(&token), 0, "the same waker is not registered twice");
        // A second one goes to the slab.
        assert!(state.wake_on_cancel(&wakers[1]).is_pending());
        assert_eq!(slots(&token), 1);
        // An owner arriving later does not push the lasting registration out, nor does a change
        // of the owner's waker.
        assert!(state.poll_owner(&wakers[2]).is_pending());
        assert!(state.poll_owner(&wakers[2]).is_pending());
        assert!(state.poll_owner(&wakers[3]).is_pending());
        token.cancel();
        for (i, c) in counts.iter().enumerate() {
            assert_eq!(
                c.0.load(std::sync::atomic::Ordering::SeqCst),
                1,
                "waker {i}"
            );
        }
    }

    /// Many rounds of an owner, a lasting registration and `cancelled()` waiters registering on
    /// three threads while a fourth fires the token: whatever the order (the inline waker turned
    /// into a list, or not, before the cancel), every registration that returned `Pending` is
    /// woken exactly once, and one that came after the cancel sees `Ready`.
    #[test]
    fn every_pending_registration_is_woken_once_whatever_the_order() {
        for round in 0..500 {
            let token = CancelToken::new();
            let counts: Vec<Arc<Count>> = (0..3)
                .map(|_| Arc::new(Count(AtomicUsize::new(0))))
                .collect();
            let start = Arc::new(std::sync::Barrier::new(4));
            // Set once `cancel` has returned, that is once it has woken everything it took.
            let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let registrar = |i: usize| {
                let token = token.clone();
                let count = counts[i].clone();
                let start = start.clone();
                let fired = fired.clone();
                std::thread::spawn(move || {
                    let waker = Waker::from(count);
                    start.wait();
                    let state = token.host.state();
                    // Returns whether the registration is pending (to be woken by the cancel).
                    match i {
                        0 => state.poll_owner(&waker).is_pending(),
                        1 => state.wake_on_cancel(&waker).is_pending(),
                        _ => {
                            let mut waiter = Box::pin(token.cancelled());
                            let pending = waiter
                                .as_mut()
                                .poll(&mut Context::from_waker(&waker))
                                .is_pending();
                            if pending {
                                // Kept until the cancel is over, so that the registration stays.
                                while !fired.load(std::sync::atomic::Ordering::SeqCst) {
                                    std::thread::yield_now();
                                }
                            }
                            pending
                        }
                    }
                })
            };
            let threads: Vec<_> = (0..3).map(registrar).collect();
            start.wait();
            if round % 2 == 0 {
                std::thread::yield_now();
            }
            token.cancel();
            fired.store(true, std::sync::atomic::Ordering::SeqCst);
            for (i, thread) in threads.into_iter().enumerate() {
                let pending = thread.join().expect("no panic");
                let woken = counts[i].0.load(std::sync::atomic::Ordering::SeqCst);
                assert_eq!(
                    woken,
                    usize::from(pending),
                    "round {round}, registration {i}: pending {pending}, woken {woken} times"
                );
            }
        }
    }

    #[test]
    fn a_wake_on_cancel_registration_outlives_the_call_that_made_it() {
        let token = CancelToken::new();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        assert!(token.host.state().wake_on_cancel(&waker).is_pending());
        // A `cancelled()` future polled once and dropped leaves no registration behind; this one
        // stays until the token fires.
        {
            let mut gone = Box::pin(token.cancelled());
            assert!(
                gone.as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()))
                    .is_pending()
            );
        }
        token.cancel();
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(token.host.state().wake_on_cancel(&waker).is_ready());
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
