//! One task API from one core to a cluster.
//!
//! ```
//! use martelli::{as_completed, Pool};
//!
//! // The tier is a setting: "inline" (1 core), "threads:8" (2–8 cores), … — or MARTELLI_POOL.
//! let pool = Pool::from_env("threads")?;
//! let futures = (0..10u64)
//!     .map(|n| pool.submit(move || (1..=n).product::<u64>()))
//!     .collect::<Result<Vec<_>, _>>()?;
//! let mut total = 0;
//! for done in as_completed(futures) {
//!     total += done.wait()?;
//! }
//! assert_eq!(total, 409_114);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Tiers and backends
//!
//! Alex Martelli's model of scale says a job lives on one core, on a few cores (2–8), or on many
//! machines. martelli runs the same tasks in each tier behind one [`Pool`]:
//!
//! | backend | tier | for | status |
//! | --- | --- | --- | --- |
//! | `inline` ([`Pool::inline`]) | 1 core | debugging, baselines, tiny inputs | built |
//! | `threads` ([`Pool::threads`]) | 2–8 cores | I/O-bound work, CPU-bound Rust code | built |
//! | `processes` ([`Pool::processes`]) | 2–8 cores | CPU-bound work, isolation, crash containment, hard timeouts | built (Linux) |
//! | `async` ([`Pool::event_loop`]) | 1 core, many waits | thousands of concurrent I/O waits | built (feature `async`, on by default) |
//! | `cluster` (`Pool::cluster`, spec `"redis://host:port"`) | 9+ cores | many machines through Redis Streams, registered tasks | built (feature `cluster`) |
//!
//! # Handing work over
//!
//! - [`Pool::submit`] returns a [`Future`]: block on it ([`Future::wait`]), poll it, attach a
//!   callback, or `.await` it from any async runtime.
//! - [`as_completed`] and [`wait()`] wait for many futures with Python's semantics.
//! - [`Pool::map`] is a lazy parallel map: bounded memory even over an endless iterator, one outcome
//!   per input. [`Pool::map_slice`] is the eager one for inputs already in memory: it writes every
//!   result in place and returns the whole vector, at the speed of a plain loop split across workers.
//! - [`Pool::scope`] spawns tasks that borrow from the caller and joins them all: the barrier.
//! - [`queue::JoinableQueue`] is the other way to hand work over: producers `put`, long-lived
//!   consumers `get` and call `task_done`, and `join` waits until every item is done.
//!   [`Pool::consume`] starts daemon consumers that serve a queue for the life of the pool
//!   and chain stages with backpressure; [`barrier::Barrier`] adds timeouts, `abort` and a broken
//!   state to the classic barrier.
//!
//! # Tasks by name and processes
//!
//! [`#[martelli::task]`](task) registers a plain function under a stable name, with serde arguments
//! and result. [`Pool::submit_task`] runs it on any backend; on a process pool ([`Pool::processes`],
//! spec `"processes:N"`) a worker process — this program, re-executed, whose `main` called
//! [`init`] first — runs it, and a crash, a timeout or a cancel costs that worker, never the pool.
//! Short tasks are pipelined (several in flight per worker), and [`Pool::submit_task_captured`]
//! returns what a task wrote to stdout and stderr with its outcome ([`Captured`]).
//!
//! ```no_run
//! #[martelli::task]
//! fn fib(n: u64) -> u64 {
//!     if n < 2 { n } else { fib::call(n - 1) + fib::call(n - 2) }
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     martelli::init(); // a worker serves tasks here and never returns
//!     let pool = martelli::Pool::processes(2)?;
//!     assert_eq!(pool.submit_task(fib, (20,))?.wait()?, 6765);
//!     Ok(())
//! }
//! ```
//!
//! # Async
//!
//! Async tasks switch only at `.await` points, the cheapest task switch there is, so one thread fills
//! the time it would spend waiting on I/O. [`Pool::submit_async`] takes an async task on any backend (on the
//! event-loop backend tasks interleave; elsewhere a task holds its worker), [`Pool::map_async`] maps an
//! async function with a concurrency limit, and offloading goes both ways: [`to_thread`] runs blocking
//! work from async code without stalling the loop, [`Pool::block_on`] runs async work from blocking
//! code (and refuses, rather than deadlocks, on a runtime thread). Cancellation of async tasks is
//! cooperative too: a cancelled or timed-out task is dropped at its next `.await`.
//! [`PoolBuilder::detect_blocking`] warns, naming the task, when one runs too long between two
//! `.await`s.
//!
//! # Outcomes
//!
//! A task ends in exactly one way: a value, or a [`TaskError`] — an error it returned, a panic (the
//! worker survives), cancelled, timed out, its worker died, or lost. Each has its own variant.
//!
//! # The rules, kept by the tools
//!
//! - **Never kill a thread.** [`Future::cancel`] and timeouts fire the task's [`CancelToken`]; the task
//!   checks [`is_cancelled`] and returns.
//! - **Keep mutable state per worker.** [`WorkerLocal`] gives every worker its own value.
//! - **Keep the foreground responsive.** [`Priority::High`] tasks overtake queued background work, and
//!   a `Future` can be awaited without blocking an event loop.
//! - **Expect tests to hide concurrency bugs.** [`chaos`] mode perturbs every internal synchronisation
//!   point by seed, and [`chaos::check`] finds the seed that breaks a scenario.
//! - **Join everything at a barrier.** [`wait()`] with [`WaitMode::All`], [`Pool::scope`], and pool
//!   shutdown.
//!
//! # Feature flags
//!
//! - `async` (default): the event-loop backend on tokio, [`to_thread`].
//! - `cluster`: the `cluster` module, tasks on many machines through Redis Streams (a Redis client and
//!   MessagePack; off by default so that builds without a cluster do not compile them).
//! - `tls`: `rediss://` brokers for the cluster (rustls with the ring provider; implies `cluster`).
//!
//! # Supported platforms
//!
//! The `inline` and `threads` backends are portable Rust. The process machinery and the `processes`
//! backend are Linux only.

#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]

mod backend;
pub mod barrier;
mod cancel;
mod capture;
mod cell;
pub mod chaos;
#[cfg(feature = "cluster")]
pub mod cluster;
mod codec;
#[cfg(fuzzing)]
#[doc(hidden)]
pub use codec::fuzz_frame;
pub mod consume;
mod error;
mod future;
mod job;
mod local;
#[cfg(all(test, loom))]
mod loom_models;
mod map;
mod map_async;
mod map_slice;
mod options;
mod pool;
#[cfg(target_os = "linux")]
pub mod process;
pub mod queue;
mod scope;
mod spec;
mod sync;
mod task;
mod task_future;
mod task_map;
mod task_pool;
mod wait;
mod watchdog;
mod window;

#[cfg(feature = "async")]
pub use backend::event_loop::to_thread;
#[cfg(all(target_os = "linux", not(feature = "cluster")))]
pub use backend::processes::worker::init;
pub use barrier::{Barrier, BarrierError, BarrierWaitResult, Participant};
pub use cancel::{CancelToken, Cancelled, cancel_token, is_cancelled};
pub use capture::{Captured, CapturedStream};
pub use consume::{Consume, ConsumeError, Consumers, ItemError};
pub use error::{Error, Report, TaskError, TaskFailure, TaskResult, TrySubmitError, WorkerDeath};
pub use future::{Future, Status, TaskId};
pub use local::{WorkerInfo, WorkerLocal};
pub use map::Map;
pub use map_async::MapAsync;
pub use martelli_macros::task;
pub use options::{Priority, Shutdown, TaskOptions};
pub use pool::{MAX_THREADS, MIN_STACK_SIZE, Pool, PoolBuilder, Submitter, available_cores};
pub use queue::{
    GetError, GetTimeoutError, JoinTimeoutError, JoinableQueue, Order, PutError, PutTimeoutError,
    QueueBuilder, QueueConfigError, Taken, TaskDoneError, TryGetError, TryPutError,
};
pub use scope::{Scope, ScopedSubmitter};
pub use task::{DuplicateTask, Task, TaskSettings};
pub use task_future::BlockingReport;
pub use task_map::TaskMap;
pub use task_pool::{TaskPool, TaskSubmitter};
pub use wait::{AsCompleted, WaitMode, Waited, as_completed, wait};

/// Where process pools are not built (outside Linux) no process is ever started as a worker: `init`
/// returns at once, so a program that calls it first in `main` builds everywhere.
#[cfg(not(any(target_os = "linux", feature = "cluster")))]
pub fn init() {}

/// Turns this process into a worker when it was started as one; returns at once otherwise.
///
/// Call it on the first line of `main`, before anything else runs (in particular before any thread
/// is started or any pool is built):
///
/// ```no_run
/// #[martelli::task]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     martelli::init(); // in a worker: serves tasks, never returns
///     let pool = martelli::Pool::from_env("processes:2")?;
///     assert_eq!(pool.submit_task(square, (7,))?.wait()?, 49);
///     Ok(())
/// }
/// ```
///
/// - **A process pool's worker** (Linux): a process pool starts this same program again with a
///   private channel; there `init` runs tasks by name until the pool goes away, then exits the
///   process. A worker whose `main` does not call `init` cannot start workers of its own (building a
///   process pool there fails with [`Error::NotInitialized`]). In a worker SIGSEGV, SIGBUS, SIGILL
///   and SIGFPE always kill, also when raised rather than a fault (a stack overflow is still
///   reported by Rust's runtime), so such a task resolves as `WorkerDied` with the signal.
/// - **A cluster worker**: with [`cluster::WORKER_ENV`] (`MARTELLI_CLUSTER_WORKER`) set to a broker
///   URL, `init` serves every `#[martelli::task]` of the program from that broker until SIGTERM or
///   SIGINT, then exits the process. The same binary is then the client
///   (`MARTELLI_POOL=redis://… ./app`) and, started with the variable, a worker on each machine. The
///   other variables it reads are listed under [`cluster::WORKER_ENV`].
#[cfg(feature = "cluster")]
pub fn init() {
    #[cfg(target_os = "linux")]
    backend::processes::worker::init();
    cluster::init_from_env();
}

/// Not public API: what `#[martelli::task]` expands to.
#[doc(hidden)]
pub mod __private {
    #[cfg(all(target_os = "linux", feature = "cluster"))]
    pub use crate::backend::processes::worker::init as process_worker_init;
    pub use crate::task::{Registration, failure_from_display};
    pub use inventory;
}

/// The README's example, compiled and run as a doctest so it cannot go stale.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
