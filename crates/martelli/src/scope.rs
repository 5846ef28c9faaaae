//! [`Pool::scope`]: tasks that borrow from the caller, joined at a barrier.

use crate::backend::Admission;
use crate::cancel::CancelToken;
use crate::error::Error;
use crate::future::{Future, promise};
use crate::job::{Job, Plain, Runnable, TaskJob};
use crate::options::{Priority, TaskOptions};
use crate::pool::Pool;
use crate::sync::{Arc, Condvar, Mutex};
use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::Duration;

/// Counts the scope's jobs that still exist (queued, running, or not yet dropped).
#[derive(Default)]
struct Pending {
    count: Mutex<usize>,
    zero: Condvar,
}

struct PendingGuard(Arc<Pending>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let mut count = self.0.count.lock();
        *count -= 1;
        if *count == 0 {
            self.0.zero.notify_all();
        }
    }
}

/// A job that borrows from its scope. Field order matters: the task (and everything it borrows) drops
/// before the guard tells the scope it is gone.
struct ScopedJob<F, T> {
    job: TaskJob<Plain<F>, T>,
    _guard: PendingGuard,
}

impl<F, T> Runnable for ScopedJob<F, T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    fn run(self: Box<Self>) {
        let ScopedJob { job, _guard } = *self;
        job.run();
        drop(_guard);
    }

    fn into_any(self: Box<Self>) -> Option<Box<dyn Any + Send>> {
        None
    }

    fn token(&self) -> &CancelToken {
        self.job.promise.token()
    }
}

/// The handle [`Pool::scope`] gives its closure, to submit tasks that borrow from the caller.
pub struct Scope<'scope, 'env: 'scope> {
    pool: &'scope Pool,
    pending: Arc<Pending>,
    // Invariant in both lifetimes, as std::thread::Scope is.
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

impl fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("pending", &*self.pending.count.lock())
            .finish()
    }
}

impl<'scope, 'env> Scope<'scope, 'env> {
    /// Submits `f` to the pool. `f` may borrow anything that outlives the scope.
    pub fn submit<F, T>(&'scope self, f: F) -> Result<Future<T>, Error>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        self.submit_at(Priority::Normal, f)
    }

    /// [`submit`](Scope::submit) with per-call options, as [`Pool::with`]: `s.with(Priority::High)
    /// .submit(f)`. Scoped tasks take a priority but no timeout: a task that borrows must end before
    /// the scope does, so it cannot be abandoned.
    pub fn with(&'scope self, options: impl Into<TaskOptions>) -> ScopedSubmitter<'scope, 'env> {
        ScopedSubmitter {
            scope: self,
            options: options.into(),
        }
    }

    fn submit_at<F, T>(&'scope self, priority: Priority, f: F) -> Result<Future<T>, Error>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        self.pool.closures_allowed()?;
        *self.pending.count.lock() += 1;
        let guard = PendingGuard(Arc::clone(&self.pending));
        let (promise, future) = promise::<T>();
        let job: Box<dyn Runnable + 'scope> = Box::new(ScopedJob {
            job: TaskJob {
                body: Plain(f),
                promise,
                timeout: None,
            },
            _guard: guard,
        });
        // SAFETY: the job borrows data that lives for 'scope. `Pool::scope` does not return (nor unwind)
        // before `pending` is zero, and the job's guard decrements `pending` only after the job itself
        // — the closure and everything it captured — has been dropped, whether it ran or was discarded.
        // So the job never outlives 'scope, although its type now says 'static.
        let job: Box<dyn Runnable + 'static> = unsafe {
            std::mem::transmute::<Box<dyn Runnable + 'scope>, Box<dyn Runnable + 'static>>(job)
        };
        match self.pool.backend().execute(
            Job {
                priority,
                task: job,
            },
            Admission::Wait,
        ) {
            Ok(()) => Ok(future),
            Err(_) => Err(Error::ShutDown),
        }
    }
}

/// A [`Scope`]'s verb with per-call options: what [`Scope::with`] returns.
#[derive(Debug, Clone, Copy)]
pub struct ScopedSubmitter<'scope, 'env: 'scope> {
    scope: &'scope Scope<'scope, 'env>,
    options: TaskOptions,
}

impl<'scope> ScopedSubmitter<'scope, '_> {
    /// [`Scope::submit`] at these options' priority. Options with a timeout are refused with
    /// [`Error::InvalidConfig`]: a task that borrows cannot be abandoned at a deadline.
    pub fn submit<F, T>(&self, f: F) -> Result<Future<T>, Error>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        if self.options.timeout.is_some() {
            return Err(Error::InvalidConfig(
                "a scoped task takes no timeout: it borrows from the scope, so it must run to its end \
                 before the scope returns; check martelli::is_cancelled() in the task instead"
                    .into(),
            ));
        }
        self.scope.submit_at(self.options.priority, f)
    }
}

impl Pool {
    /// Runs `f`, which may submit tasks that borrow from the caller's stack, and returns only when every
    /// task submitted in it has finished: the barrier. Their outcomes are in the futures `submit` returned;
    /// a panicking task does not abort the scope. If `f` itself panics, the scope still waits for its
    /// tasks, then resumes the panic.
    ///
    /// ```
    /// use martelli::Pool;
    ///
    /// let pool = Pool::threads(2)?;
    /// let mut halves = [0u64; 2];
    /// let data: Vec<u64> = (1..=100).collect();
    /// pool.scope(|s| {
    ///     let (left, right) = halves.split_at_mut(1);
    ///     let (a, b) = data.split_at(50);
    ///     s.submit(move || left[0] = a.iter().sum()).unwrap();
    ///     s.submit(move || right[0] = b.iter().sum()).unwrap();
    /// });
    /// assert_eq!(halves[0] + halves[1], 5050);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn scope<'env, F, R>(&self, f: F) -> R
    where
        F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
    {
        let scope = Scope {
            pool: self,
            pending: Arc::new(Pending::default()),
            _scope: PhantomData,
            _env: PhantomData,
        };
        let result = catch_unwind(AssertUnwindSafe(|| f(&scope)));
        self.join_scope(&scope.pending);
        match result {
            Ok(value) => value,
            Err(payload) => resume_unwind(payload),
        }
    }

    fn join_scope(&self, pending: &Pending) {
        loop {
            {
                let count = pending.count.lock();
                if *count == 0 {
                    return;
                }
            }
            // A worker of this pool that opened a scope runs queued jobs itself instead of waiting for
            // other workers that may all be waiting too.
            if self.backend().help_one() {
                continue;
            }
            let count = pending.count.lock();
            if *count == 0 {
                return;
            }
            let _ = pending.zero.wait_for(count, Duration::from_millis(5));
        }
    }
}
