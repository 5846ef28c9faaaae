//! [`Pool::consume`]: daemon workers that serve a [`JoinableQueue`] for the life of the pool.
//!
//! A daemon worker never "finishes": it takes an item, runs the task on it, hands the result on, marks
//! the item done, and takes the next. You do not join the workers; you join the queue.
//!
//! ```
//! use martelli::{JoinableQueue, Pool};
//!
//! let pool = Pool::threads(2)?;
//! let words = JoinableQueue::bounded(64);
//! let lengths = JoinableQueue::new();
//! pool.consume(|w: String| w.len(), &words)
//!     .output(&lengths)
//!     .start()?;
//! for w in ["queue", "and", "future"] {
//!     words.put(w.to_string())?;
//! }
//! words.join(); // every word processed, and its length already in `lengths`
//! let mut total = 0;
//! while let Ok(n) = lengths.try_get() {
//!     total += n;
//!     lengths.task_done()?;
//! }
//! assert_eq!(total, 14);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What a consumer does with each item
//!
//! 1. Takes it from the input queue (waiting while the queue is empty).
//! 2. Runs the task on it. A panic is caught; the worker goes on.
//! 3. Puts the result into the output queue, if there is one (waiting while it is full: backpressure
//!    runs from the last stage back to the first), or drops it. A failure — an error the task returned,
//!    a panic, or an output queue that was closed — goes to the error queue or callback, or, when
//!    neither is set, is printed to stderr: it is never lost silently.
//! 4. Marks the item done in the input queue. Because this comes after step 3, `input.join()`
//!    returning means every result is already in the output queue; join the stages in order.
//!
//! # Workers and lifetime
//!
//! On the thread backend each consumer occupies one pool worker until it stops: `consume` with N
//! consumers takes N workers, and tasks submitted to the same pool share the rest. Asking for more
//! consumers than free workers is an error ([`ConsumeError::NotEnoughWorkers`]), never a consumer that
//! silently waits for a worker that will not come.
//!
//! Consumers stop when:
//! - the input queue is closed and drained (each consumer's next `get` says `Closed`);
//! - [`Consumers::stop`] is called;
//! - the pool shuts down ([`Pool::shutdown`] or drop). Then each consumer finishes the item in hand —
//!   if its output queue is full, the result goes in anyway, overrunning the bound by at most one item
//!   per consumer rather than losing it — and takes no more. Items still queued stay in the queue
//!   (they are not done, so a `join` on it keeps waiting until someone else serves it or closes it).
//!
//! Daemons run on the thread backend. The inline backend runs tasks on the caller's thread and the
//! event loop (`async`) on its loop thread, either of which a daemon would block for good, so
//! `consume` on those pools fails with [`ConsumeError::Unsupported`] rather than hang.
//!
//! On a process pool or a cluster pool, serve a queue with [`Pool::consume_task`] and a
//! [`#[martelli::task]`](crate::task): items and results cross as serde values, each consumer is a
//! thread of this process with one item in flight in a worker process (or on a cluster worker), and a
//! crash or timeout fails only its item. A closure there is [`ConsumeError::NotATask`].
//!
//! # Which item failed
//!
//! An [`ItemError`] from [`Pool::consume_task`] carries the item that failed (the task's argument
//! tuple): [`ItemError::take_item`] gives it back, so an error sink can say which input failed or
//! put it back in a queue. [`consume`](Pool::consume) and [`consume_fallible`](Pool::consume_fallible)
//! hand each item to a closure that takes it by value, so their failures carry no item: return an
//! error that names the item instead.

use crate::backend::Admission;
use crate::error::{TaskError, TaskFailure};
use crate::future::{Future, promise};
use crate::job::{Job, Owned, Plain, TaskJob};
use crate::options::Priority;
use crate::pool::Pool;
use crate::queue::{JoinableQueue, StopSignal};
use crate::sync::{Arc, AtomicU64, Mutex, Ordering};
use crate::task::Task;
use std::any::Any;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Why [`Consume::start`] started no consumer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    /// The pool's backend cannot host a daemon: the inline backend runs tasks on the caller's thread,
    /// the event loop (`async`) on its loop thread, and a consumer there would block that thread for
    /// the life of the pool.
    #[error(
        "daemon consumers need workers that are threads of their own, but the {backend:?} backend runs \
         tasks {runs_on}, which a consumer would block for the life of the pool; use a thread pool \
         (Pool::threads) for consumers"
    )]
    Unsupported {
        /// The pool's backend (`Pool::kind`).
        backend: &'static str,
        /// Where that backend runs tasks.
        runs_on: &'static str,
    },
    /// The pool is shut down.
    #[error("the pool is shut down and starts no consumers (build a new pool)")]
    ShutDown,
    /// A closure was given to a pool that runs tasks in other processes: only `#[martelli::task]`
    /// functions cross a process boundary.
    #[error(
        "the {backend:?} backend runs #[martelli::task] functions in other processes, not closures; \
         serve the queue with Pool::consume_task"
    )]
    NotATask {
        /// The pool's backend (`Pool::kind`).
        backend: &'static str,
    },
    /// More consumer threads were asked for than a pool may have.
    #[error(
        "asked for {asked} consumers, more than the {max} consumer threads a pool may have; each \
         consumer keeps one task in flight, so a few per worker process are plenty"
    )]
    TooManyConsumers {
        /// Consumers asked for.
        asked: usize,
        /// The most a pool may have.
        max: usize,
    },
    /// The operating system refused to start a consumer thread.
    #[error("could not start a consumer thread: {0} (ask for fewer consumers)")]
    Spawn(#[source] std::io::Error),
    /// [`Consume::consumers`] was given 0.
    #[error("asked for 0 consumers; ask for at least 1")]
    NoConsumers,
    /// Fewer pool workers are free than consumers were asked for.
    #[error(
        "asked for {asked} consumer(s) but only {free} of the pool's {workers} workers are free: each \
         consumer occupies a worker for the life of the pool (build the pool with more threads, ask \
         for fewer consumers, or stop other consumers first)"
    )]
    NotEnoughWorkers {
        /// Consumers asked for.
        asked: usize,
        /// Workers not already serving a queue.
        free: usize,
        /// The pool's workers.
        workers: usize,
    },
}

/// An item a consumer failed on: the error it returned, its panic, its worker's death or timeout,
/// or a result that could not be delivered; with the item itself when the consumer kept it.
///
/// ```
/// use martelli::{ItemError, JoinableQueue, Pool, TaskError};
///
/// #[martelli::task]
/// fn parse(text: String) -> Result<u32, std::num::ParseIntError> {
///     text.parse()
/// }
///
/// let pool = Pool::threads(1)?;
/// let input = JoinableQueue::new();
/// let errors: JoinableQueue<ItemError> = JoinableQueue::new();
/// pool.consume_task(parse, &input).errors(&errors).start()?;
/// input.put(("12".to_string(),))?;
/// input.put(("twelve".to_string(),))?;
/// input.join();
/// let mut failure = errors.try_get()?;
/// assert!(matches!(failure.error(), TaskError::Failed(_)));
/// // The task's argument tuple: which input failed.
/// assert_eq!(failure.take_item::<(String,)>(), Some(("twelve".to_string(),)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(thiserror::Error)]
#[error("consumer {consumer} failed on an item: {error}")]
pub struct ItemError {
    error: TaskError,
    consumer: usize,
    /// The item, when the consumer kept it (`consume_task`). Behind a mutex only so that the error
    /// stays `Sync` for any item type; it is reached through `&mut self`, never locked.
    item: Option<std::sync::Mutex<Box<dyn Any + Send>>>,
}

impl fmt::Debug for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ItemError")
            .field("error", &self.error)
            .field("consumer", &self.consumer)
            .field("has_item", &self.has_item())
            .finish()
    }
}

impl ItemError {
    /// How the item failed ([`TaskError::Failed`], [`TaskError::Panicked`], or on a process or
    /// cluster pool also [`TaskError::WorkerDied`], [`TaskError::TimedOut`] …).
    pub fn error(&self) -> &TaskError {
        &self.error
    }

    /// The error, by value.
    pub fn into_error(self) -> TaskError {
        self.error
    }

    /// Which consumer of its group (from 0) failed.
    pub fn consumer(&self) -> usize {
        self.consumer
    }

    /// True while this failure holds its item (see [`take_item`](ItemError::take_item)).
    pub fn has_item(&self) -> bool {
        self.item.is_some()
    }

    /// Takes the item that failed, if this failure holds one of type `T`; a wrong `T` gives `None`
    /// and leaves the item in place.
    ///
    /// Failures from [`Pool::consume_task`] hold their item, `T` being the task's argument tuple
    /// (`(String,)` for a task of one `String`), on every backend; a result that could not be
    /// delivered (a closed output queue) holds none, the task having run. Failures from
    /// [`consume`](Pool::consume) and [`consume_fallible`](Pool::consume_fallible) hold none: their
    /// closure took the item.
    pub fn take_item<T: 'static>(&mut self) -> Option<T> {
        let boxed = self
            .item
            .take()?
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        match boxed.downcast::<T>() {
            Ok(item) => Some(*item),
            Err(other) => {
                self.item = Some(std::sync::Mutex::new(other));
                None
            }
        }
    }
}

/// How a consumer's task failed, with the item when the task handed it back.
struct Failure<T> {
    error: TaskError,
    item: Option<T>,
}

impl<T> From<TaskError> for Failure<T> {
    fn from(error: TaskError) -> Self {
        Failure { error, item: None }
    }
}

// User closures are shared with `std`'s `Arc` even under loom: they are not synchronisation state, and
// loom's `Arc` cannot hold unsized values.
type TaskFn<T, R> = dyn Fn(T) -> Result<R, Failure<T>> + Send + Sync;
type ErrorCallback = dyn Fn(ItemError) + Send + Sync;

/// Where a group's consumers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hosting {
    /// Each consumer occupies one of the pool's worker threads (the task runs in this process).
    PoolWorkers,
    /// Each consumer is a thread of its own that hands items to a remote backend and waits.
    OwnThreads,
}

/// The most consumer threads one pool may have on a remote backend.
const MAX_CONSUMER_THREADS: usize = 1024;

enum ErrorSink {
    Stderr,
    Queue(JoinableQueue<ItemError>),
    Callback(std::sync::Arc<ErrorCallback>),
}

/// Configures daemon consumers of a queue; made by [`Pool::consume`] or [`Pool::consume_fallible`],
/// started by [`start`](Consume::start).
#[must_use = "consumers run only once `start` is called"]
pub struct Consume<'p, T, R> {
    pool: &'p Pool,
    input: JoinableQueue<T>,
    task: std::sync::Arc<TaskFn<T, R>>,
    hosting: Hosting,
    consumers: Option<usize>,
    output: Option<JoinableQueue<R>>,
    errors: ErrorSink,
}

impl<T, R> fmt::Debug for Consume<'_, T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consume")
            .field("consumers", &self.consumers)
            .field("output", &self.output.is_some())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Prepares daemon consumers that run `task` on every item of `queue`; configure them, then call
    /// [`start`](Consume::start). See the [`consume` module](crate::consume) for the life of an item.
    ///
    /// The printer of the rules — a worker that waits for documents forever, while the producer joins
    /// the queue:
    ///
    /// ```
    /// use martelli::{JoinableQueue, Pool};
    /// use std::sync::{Arc, Mutex};
    ///
    /// let printer = Pool::threads(1)?;
    /// let docs = JoinableQueue::bounded(8);
    /// let printed = Arc::new(Mutex::new(Vec::new()));
    /// let sink = Arc::clone(&printed);
    /// printer.consume(move |doc: String| sink.lock().unwrap().push(doc), &docs).start()?;
    /// docs.put("report.pdf".to_string())?;
    /// docs.put("invoice.pdf".to_string())?;
    /// docs.join();
    /// assert_eq!(printed.lock().unwrap().len(), 2);
    /// drop(printer); // stops the daemon: the pool's shutdown does not wait on the empty queue
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn consume<T, R, F>(&self, task: F, queue: &JoinableQueue<T>) -> Consume<'_, T, R>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: Fn(T) -> R + Send + Sync + 'static,
    {
        self.consume_fn(
            queue,
            std::sync::Arc::new(move |item| Ok(task(item))),
            Hosting::PoolWorkers,
        )
    }

    /// [`consume`](Pool::consume) with a task that returns `Result`: an `Err` is a failed item, reported
    /// like a panic ([`TaskError::Failed`]).
    pub fn consume_fallible<T, R, E, F>(
        &self,
        task: F,
        queue: &JoinableQueue<T>,
    ) -> Consume<'_, T, R>
    where
        T: Send + 'static,
        R: Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
        F: Fn(T) -> Result<R, E> + Send + Sync + 'static,
    {
        self.consume_fn(
            queue,
            std::sync::Arc::new(move |item| {
                task(item).map_err(|e| TaskError::Failed(TaskFailure::from_error(e)).into())
            }),
            Hosting::PoolWorkers,
        )
    }

    /// Daemon consumers that run a [`#[martelli::task]`](crate::task) on every item of `queue` (the
    /// items are the task's arguments, the results its values): the form that works on every backend
    /// with daemons, the process pool included.
    ///
    /// On a thread pool the task runs on the consumers' workers, as with [`consume`](Pool::consume).
    /// On a process pool each consumer is a thread of this process that sends its item to a worker
    /// process and waits for the outcome, so a task that crashes or times out fails only its item
    /// (the worker is replaced) and the consumer goes on. There the number of consumers is the number
    /// of items in flight: it defaults to the pool's worker processes and may exceed them (up to
    /// 1,024), which keeps the workers busy while results travel.
    ///
    /// Each failure carries its item ([`ItemError::take_item`]): on a process or cluster pool the
    /// item is only encoded to be sent, so it is at hand; in this process (threads) the task takes
    /// its arguments by value, so the consumer keeps an encoded copy of each item while it runs
    /// and decodes it back for a failure.
    ///
    /// ```
    /// use martelli::{JoinableQueue, Pool};
    ///
    /// #[martelli::task]
    /// fn shout(word: String) -> String {
    ///     word.to_uppercase()
    /// }
    ///
    /// let pool = Pool::from_env("threads:2")?; // MARTELLI_POOL=processes:2 runs it in processes
    /// let words = JoinableQueue::new();
    /// let loud = JoinableQueue::new();
    /// pool.consume_task(shout, &words).output(&loud).start()?;
    /// words.put(("queue".to_string(),))?;
    /// words.join();
    /// assert_eq!(loud.try_get()?, "QUEUE");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn consume_task<T: Task>(
        &self,
        _task: T,
        queue: &JoinableQueue<T::Args>,
    ) -> Consume<'_, T::Args, T::Output> {
        match self.remote_runner::<T>() {
            Some(runner) => self.consume_fn(
                queue,
                std::sync::Arc::new(move |args| {
                    runner.run(&args).map_err(|error| Failure {
                        error,
                        item: Some(args),
                    })
                }),
                Hosting::OwnThreads,
            ),
            None => self.consume_fn(
                queue,
                std::sync::Arc::new(run_keeping_item::<T>),
                Hosting::PoolWorkers,
            ),
        }
    }

    fn consume_fn<T, R>(
        &self,
        queue: &JoinableQueue<T>,
        task: std::sync::Arc<TaskFn<T, R>>,
        hosting: Hosting,
    ) -> Consume<'_, T, R> {
        Consume {
            pool: self,
            input: queue.clone(),
            task,
            hosting,
            consumers: None,
            output: None,
            errors: ErrorSink::Stderr,
        }
    }
}

impl<T, R> Consume<'_, T, R>
where
    T: Send + 'static,
    R: Send + 'static,
{
    /// How many consumers to start (default: every pool worker not already serving a queue).
    pub fn consumers(mut self, n: usize) -> Self {
        self.consumers = Some(n);
        self
    }

    /// Puts each result into `queue`, waiting while it is full, so that stages chain with
    /// backpressure. Without an output queue, results are dropped.
    pub fn output(mut self, queue: &JoinableQueue<R>) -> Self {
        self.output = Some(queue.clone());
        self
    }

    /// Puts each failure into `queue` (replaces an [`on_error`](Consume::on_error) callback).
    pub fn errors(mut self, queue: &JoinableQueue<ItemError>) -> Self {
        self.errors = ErrorSink::Queue(queue.clone());
        self
    }

    /// Calls `callback` with each failure, on the consumer's thread (replaces an
    /// [`errors`](Consume::errors) queue). A panic in the callback is caught and printed.
    pub fn on_error<F>(mut self, callback: F) -> Self
    where
        F: Fn(ItemError) + Send + Sync + 'static,
    {
        self.errors = ErrorSink::Callback(std::sync::Arc::new(callback));
        self
    }

    /// Starts the consumers on the pool's workers. Call it from outside the pool's own tasks: a task
    /// that starts consumers on its own pool while that pool's queue bound is reached would run the
    /// first consumer itself, as a worker runs any task it cannot queue to its own full pool.
    pub fn start(self) -> Result<Consumers, ConsumeError> {
        let pool = self.pool;
        if self.hosting == Hosting::OwnThreads {
            return self.start_threads();
        }
        if pool.closures_allowed().is_err() {
            return Err(ConsumeError::NotATask {
                backend: pool.kind(),
            });
        }
        match pool.kind() {
            "threads" => {}
            "inline" => {
                return Err(ConsumeError::Unsupported {
                    backend: "inline",
                    runs_on: "on the caller's thread",
                });
            }
            "async" => {
                return Err(ConsumeError::Unsupported {
                    backend: "async",
                    runs_on: "on its event-loop thread",
                });
            }
            other => {
                return Err(ConsumeError::Unsupported {
                    backend: other,
                    runs_on: "where daemons are not supported yet",
                });
            }
        }
        if self.consumers == Some(0) {
            return Err(ConsumeError::NoConsumers);
        }
        let asked = self.consumers;
        let (group, counters) = self.into_group();
        let n = pool.daemons().register(pool.workers(), asked, || {
            Box::new(GroupHandle(Arc::clone(&group)))
        })?;
        let mut futures = Vec::with_capacity(n);
        for index in 0..n {
            let (promise, future) = promise::<()>();
            let job = Job {
                priority: Priority::High,
                task: Box::new(Owned(TaskJob {
                    body: Plain(consumer(&group, index)),
                    promise,
                    // A daemon runs for the life of the pool: the pool's task timeout is for tasks.
                    timeout: None,
                })),
            };
            if pool.backend().execute(job, Admission::Wait).is_err() {
                // Shut down meanwhile. The refused job was dropped with its guard; release the
                // reservations of the consumers never submitted. The jobs already queued see the stop
                // flag and return at once.
                counters
                    .live
                    .fetch_sub((n - index - 1) as u64, Ordering::AcqRel);
                group.stop();
                return Err(ConsumeError::ShutDown);
            }
            futures.push(future);
        }
        Ok(Consumers {
            handle: Box::new(GroupHandle(group)),
            counters,
            futures,
        })
    }

    fn into_group(self) -> (Arc<Group<T, R>>, Arc<Counters>) {
        let counters = Arc::new(Counters {
            stop: StopSignal::new(),
            live: AtomicU64::new(0),
            processed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        let group = Arc::new(Group {
            input: self.input,
            output: self.output,
            errors: self.errors,
            task: self.task,
            counters: Arc::clone(&counters),
            threads: Mutex::new(Vec::new()),
        });
        (group, counters)
    }

    /// Starts consumers on threads of their own (a remote backend: the task runs elsewhere).
    fn start_threads(self) -> Result<Consumers, ConsumeError> {
        let pool = self.pool;
        let asked = match self.consumers {
            Some(0) => return Err(ConsumeError::NoConsumers),
            Some(n) => n,
            None => pool.workers(),
        };
        if asked > MAX_CONSUMER_THREADS {
            return Err(ConsumeError::TooManyConsumers {
                asked,
                max: MAX_CONSUMER_THREADS,
            });
        }
        let (group, counters) = self.into_group();
        let n = pool
            .daemons()
            .register(MAX_CONSUMER_THREADS, Some(asked), || {
                Box::new(GroupHandle(Arc::clone(&group)))
            })
            .map_err(|e| match e {
                ConsumeError::NotEnoughWorkers { asked, .. } => ConsumeError::TooManyConsumers {
                    asked,
                    max: MAX_CONSUMER_THREADS,
                },
                other => other,
            })?;
        let mut futures = Vec::with_capacity(n);
        for index in 0..n {
            let (promise, future) = promise::<()>();
            let serve = consumer(&group, index);
            let spawned = std::thread::Builder::new()
                .name(format!("martelli-consumer-{index}"))
                .spawn(move || {
                    if promise.start() {
                        serve();
                    }
                    promise.complete(Ok(()));
                });
            match spawned {
                Ok(handle) => group.threads.lock().push(handle),
                Err(e) => {
                    // The closure (and its guard) was dropped unrun; release the reservations of
                    // the consumers never started and stop the ones that were.
                    counters
                        .live
                        .fetch_sub((n - index - 1) as u64, Ordering::AcqRel);
                    group.stop();
                    group.join();
                    return Err(ConsumeError::Spawn(e));
                }
            }
            futures.push(future);
        }
        Ok(Consumers {
            handle: Box::new(GroupHandle(group)),
            counters,
            futures,
        })
    }
}

#[derive(Debug)]
struct Counters {
    stop: StopSignal,
    /// Consumers started (or about to be) and not yet returned.
    live: AtomicU64,
    processed: AtomicU64,
    failed: AtomicU64,
}

struct LiveGuard(Arc<Counters>);

/// Consumer `index` of `group`, ready to run where it is hosted. It holds its share of the group's
/// live count: dropped unrun (a refused job, a thread that never started), the count still falls.
fn consumer<T, R>(group: &Arc<Group<T, R>>, index: usize) -> impl FnOnce() + Send + 'static
where
    T: Send + 'static,
    R: Send + 'static,
{
    let live = LiveGuard(Arc::clone(&group.counters));
    let member = Arc::clone(group);
    move || {
        let _live = live;
        member.serve(index);
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Group<T, R> {
    input: JoinableQueue<T>,
    output: Option<JoinableQueue<R>>,
    errors: ErrorSink,
    task: std::sync::Arc<TaskFn<T, R>>,
    counters: Arc<Counters>,
    /// The consumers' threads when they run on threads of their own; empty on pool workers.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl<T: Send + 'static, R> Group<T, R> {
    /// Waits for the consumers that run on threads of their own (not for the calling thread, when
    /// it is one of them: an `on_error` callback may shut the pool down).
    fn join(&self) {
        let handles = std::mem::take(&mut *self.threads.lock());
        let me = std::thread::current().id();
        for handle in handles {
            if handle.thread().id() != me {
                // `serve` catches the task's panics; a consumer thread has nothing else to report.
                let _ = handle.join();
            }
        }
    }

    /// One consumer's life: the loop of the module documentation.
    fn serve(&self, index: usize) {
        let stop = &self.counters.stop;
        // `Err` is Closed (closed and drained) or Stopped.
        while let Ok(item) = self.input.get_or_stop(stop) {
            let delivered = self.output.is_some();
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                // An unwanted result is dropped in here, where a panicking `Drop` is caught too.
                (self.task)(item).map(|value| delivered.then_some(value))
            }))
            .unwrap_or_else(|payload| Err(TaskError::panicked(payload).into()));
            match (outcome, &self.output) {
                (Ok(Some(value)), Some(output)) => {
                    if output.put_or_stop(value, stop).is_err() {
                        self.report(
                            index,
                            TaskError::Failed(TaskFailure::from_message(
                                "the output queue was closed, so the item's result was dropped \
                                 (close a stage's output only after joining its input)",
                            ))
                            .into(),
                        );
                    }
                }
                (Ok(_), _) => {}
                (Err(failure), _) => self.report(index, failure),
            }
            // Counted before `task_done`, so that once `join` returns the counters are complete.
            self.counters.processed.fetch_add(1, Ordering::Relaxed);
            if self.input.task_done().is_err() {
                self.report(
                    index,
                    TaskError::Failed(TaskFailure::from_message(
                        "task_done failed for an item this consumer took: other code called task_done \
                         on the input queue for items it never took, so its join is miscounted",
                    ))
                    .into(),
                );
            }
        }
    }

    fn report(&self, consumer: usize, failure: Failure<T>)
    where
        T: Send + 'static,
    {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        let item = failure
            .item
            .map(|item| std::sync::Mutex::new(Box::new(item) as Box<dyn Any + Send>));
        let failure = ItemError {
            error: failure.error,
            consumer,
            item,
        };
        match &self.errors {
            ErrorSink::Stderr => eprintln!(
                "martelli: {failure} (collect failures with Consume::errors or Consume::on_error)"
            ),
            ErrorSink::Queue(queue) => {
                if let Err(failure) = queue.put_or_stop(failure, &self.counters.stop) {
                    eprintln!("martelli: {failure} (the error queue was closed)");
                }
            }
            ErrorSink::Callback(callback) => {
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| callback(failure))) {
                    eprintln!(
                        "martelli: a consumer's on_error callback panicked: {}",
                        crate::error::panic_message(payload.as_ref())
                    );
                }
            }
        }
    }

    /// Sets the stop flag, then wakes every queue a consumer may block on so it sees the flag.
    fn stop(&self) {
        self.counters.stop.fire();
        self.input.wake_all();
        if let Some(output) = &self.output {
            output.wake_all();
        }
        if let ErrorSink::Queue(errors) = &self.errors {
            errors.wake_all();
        }
    }
}

/// Runs task `T` in this process on `args`, keeping an encoded copy of them to hand back with a
/// failure (the task takes its arguments by value). A panic is caught here, so that its item comes
/// back too.
fn run_keeping_item<T: Task>(args: T::Args) -> Result<T::Output, Failure<T::Args>> {
    let copy = postcard::to_allocvec(&args).ok();
    let error = match catch_unwind(AssertUnwindSafe(|| T::run(args))) {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(failure)) => TaskError::Failed(failure),
        Err(payload) => TaskError::panicked(payload),
    };
    let item = copy.and_then(|bytes| postcard::from_bytes(&bytes).ok());
    Err(Failure { error, item })
}

/// A consumer group as the pool's registry sees it, whatever its item types.
trait Daemon: Send + Sync {
    fn stop(&self);
    /// Waits for consumers on threads of their own (after `stop`).
    fn join(&self);
    fn live(&self) -> usize;
    fn reserve(&self, consumers: usize);
}

struct GroupHandle<T, R>(Arc<Group<T, R>>);

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
    groups: Vec<Box<dyn Daemon>>,
    stopped: bool,
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
    fn register(
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

/// Running daemon consumers of one queue, from [`Consume::start`].
///
/// Dropping the handle leaves the consumers running: they serve the queue for the life of the pool.
pub struct Consumers {
    handle: Box<dyn Daemon>,
    counters: Arc<Counters>,
    futures: Vec<Future<()>>,
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
