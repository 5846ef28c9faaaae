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
//! | `processes` | 2–8 cores | isolation, crash containment, hard timeouts | not built yet |
//! | `async` | 1 core, many waits | thousands of concurrent I/O waits | not built yet |
//! | `cluster` | 9+ cores | many machines through Redis | not built yet |
//!
//! # Handing work over
//!
//! - [`Pool::submit`] returns a [`Future`]: block on it ([`Future::wait`]), poll it, attach a
//!   callback, or `.await` it from any async runtime.
//! - [`as_completed`] and [`wait()`] wait for many futures with Python's semantics.
//! - [`Pool::map`] is a lazy parallel map: bounded memory even over an endless iterator.
//! - [`Pool::scope`] spawns tasks that borrow from the caller and joins them all: the barrier.
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
//! - **Join everything at a barrier.** [`wait()`] with [`WaitMode::All`], [`Pool::scope`], and pool
//!   shutdown.
//!
//! # Supported platforms
//!
//! The `inline` and `threads` backends are portable Rust. The process machinery that later backends
//! use is Linux-first.

#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]

mod backend;
mod cancel;
mod error;
mod future;
mod job;
mod local;
mod map;
mod pool;
#[cfg(target_os = "linux")]
pub mod process;
mod scope;
mod spec;
mod sync;
mod wait;
mod watchdog;

pub use cancel::{CancelToken, cancel_token, is_cancelled};
pub use error::{Error, TaskError, TaskFailure, TaskResult, TrySubmitError, WorkerDeath};
pub use future::{Future, Status, TaskId};
pub use local::{WorkerInfo, WorkerLocal};
pub use map::Map;
pub use pool::{
    MAX_THREADS, MIN_STACK_SIZE, Pool, PoolBuilder, Priority, Shutdown, TaskOptions,
    available_cores,
};
pub use scope::Scope;
pub use wait::{AsCompleted, WaitMode, Waited, as_completed, wait};
