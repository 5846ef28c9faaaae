//! Per-worker state: [`WorkerInfo`] says which worker runs the current task, and [`WorkerLocal<T>`]
//! gives each worker its own value — the answer to mutable globals.

use crate::sync::{Arc, AtomicU64, Ordering};
use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

/// Which worker runs the current task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    index: usize,
    name: String,
    backend: &'static str,
}

impl WorkerInfo {
    pub(crate) fn new(index: usize, name: String, backend: &'static str) -> Self {
        WorkerInfo {
            index,
            name,
            backend,
        }
    }

    /// The worker's index in its pool, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The worker's name (the thread's name on the thread backend).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The backend the worker belongs to (`"threads"`, `"inline"`, …).
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The worker running the current code: the pool worker's identity inside a task, or, outside any
    /// pool worker (an inline pool, the main thread), the calling thread as worker 0 of `"inline"`.
    pub fn current() -> WorkerInfo {
        CURRENT_WORKER.with(|w| {
            w.borrow().clone().unwrap_or_else(|| {
                let name = std::thread::current()
                    .name()
                    .unwrap_or("unnamed")
                    .to_owned();
                WorkerInfo::new(0, name, "inline")
            })
        })
    }
}

thread_local! {
    static CURRENT_WORKER: RefCell<Option<WorkerInfo>> = const { RefCell::new(None) };
    static LOCALS: RefCell<HashMap<u64, Option<Box<dyn Any>>>> = RefCell::new(HashMap::new());
}

/// Marks this thread as a pool worker until the guard drops; then its worker-local values drop too.
pub(crate) struct WorkerGuard;

pub(crate) fn enter_worker(info: WorkerInfo) -> WorkerGuard {
    CURRENT_WORKER.with(|w| *w.borrow_mut() = Some(info));
    WorkerGuard
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        CURRENT_WORKER.with(|w| *w.borrow_mut() = None);
        // Drop the values while the thread is still fully alive (they may log, close files, …).
        let values = LOCALS.with(|l| std::mem::take(&mut *l.borrow_mut()));
        drop(values);
    }
}

type Init<T> = dyn Fn(&WorkerInfo) -> T + Send + Sync;

/// A value per worker, created by an initializer on first use in each worker and dropped when the
/// worker exits. Tasks reach their worker's value with [`with`](WorkerLocal::with); no lock is taken
/// and no value is ever shared between workers.
///
/// ```
/// use martelli::{Pool, WorkerLocal};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// static CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
/// // Say each worker needs its own (expensive, non-shareable) connection:
/// let conn = WorkerLocal::new(|w| {
///     CONNECTIONS.fetch_add(1, Ordering::SeqCst);
///     format!("connection of {}", w.name())
/// });
/// let pool = Pool::builder().threads(2).build()?;
/// let futures: Vec<_> = (0..100)
///     .map(|_| {
///         let conn = conn.clone();
///         pool.submit(move || conn.with(|c| c.len()))
///     })
///     .collect::<Result<_, _>>()?;
/// for f in futures {
///     f.wait()?;
/// }
/// assert!(CONNECTIONS.load(Ordering::SeqCst) <= 2); // one per worker at most
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct WorkerLocal<T> {
    id: u64,
    init: Arc<Init<T>>,
}

impl<T> Clone for WorkerLocal<T> {
    fn clone(&self) -> Self {
        WorkerLocal {
            id: self.id,
            init: Arc::clone(&self.init),
        }
    }
}

impl<T> fmt::Debug for WorkerLocal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerLocal").field("id", &self.id).finish()
    }
}

impl<T: 'static> WorkerLocal<T> {
    /// A worker-local value made by `init` in each worker that uses it.
    pub fn new<F>(init: F) -> Self
    where
        F: Fn(&WorkerInfo) -> T + Send + Sync + 'static,
    {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        WorkerLocal {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            init: Arc::new(init),
        }
    }

    /// Runs `f` with this worker's value, creating it first if this worker has none yet.
    ///
    /// # Panics
    /// When called again for the same `WorkerLocal` from inside `f` (the value is already lent out).
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let taken = LOCALS.with(|l| l.borrow_mut().get_mut(&self.id).map(Option::take));
        let value: Box<T> = match taken {
            Some(Some(boxed)) => match boxed.downcast::<T>() {
                Ok(v) => v,
                Err(_) => unreachable!("worker-local ids are unique per type"),
            },
            Some(None) => panic!("WorkerLocal::with called re-entrantly for the same WorkerLocal"),
            None => {
                let info = WorkerInfo::current();
                let v = Box::new((self.init)(&info));
                LOCALS.with(|l| l.borrow_mut().insert(self.id, None));
                v
            }
        };
        // The value goes back when `f` returns or unwinds: a panicking task does not lose it.
        let mut lent = Lent {
            id: self.id,
            value: Some(value),
        };
        match lent.value.as_deref_mut() {
            Some(value) => f(value),
            None => unreachable!("the value is lent until Lent drops"),
        }
    }
}

struct Lent<T: 'static> {
    id: u64,
    value: Option<Box<T>>,
}

impl<T: 'static> Drop for Lent<T> {
    fn drop(&mut self) {
        if let Some(v) = self.value.take() {
            let _ = LOCALS.try_with(|l| l.borrow_mut().insert(self.id, Some(v as Box<dyn Any>)));
        }
    }
}
