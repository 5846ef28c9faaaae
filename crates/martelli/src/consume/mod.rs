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

mod daemons;
mod error;
mod group;

pub use daemons::Consumers;
pub(crate) use daemons::Daemons;
pub use error::{ConsumeError, ItemError};

use crate::backend::Admission;
use crate::error::{TaskError, TaskFailure};
use crate::future::promise;
use crate::job::{Job, Owned, Plain, TaskJob};
use crate::options::Priority;
use crate::pool::Pool;
use crate::queue::{JoinableQueue, StopSignal};
use crate::sync::{Arc, AtomicU64, Mutex, Ordering};
use crate::task::Task;
use daemons::GroupHandle;
use error::Failure;
use group::{Counters, Group, consumer, run_keeping_item};
use std::fmt;

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
        if let Err(runs_on) = pool.backend().hosts_daemons() {
            return Err(ConsumeError::Unsupported {
                backend: pool.kind(),
                runs_on,
            });
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
