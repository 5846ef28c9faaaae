//! Registered tasks on cluster workers: [`Registered`], the [`TaskRunner`] over every
//! [`#[martelli::task]`](crate::task) function of the program, and the way a worker runs them on a
//! local process pool ([`WorkerOptions::processes`](super::WorkerOptions::processes)).
//!
//! ```no_run
//! use martelli::cluster::{Registered, WorkerOptions, serve};
//!
//! #[martelli::task]
//! fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     martelli::init(); // needed when the worker runs tasks on processes
//!     let report = serve("redis://127.0.0.1:6379", Registered, WorkerOptions::new())?;
//!     eprintln!("{report:?}");
//!     Ok(())
//! }
//! ```
//!
//! The payload of a registered task is documented on [`Registered`] and in `docs/protocol.md`.

use super::runner::{RunError, TaskRunner};
use crate::error::TaskFailure;
use crate::task::{self, Registry, Task};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The name of the internal task that runs a registered task inside a process-pool worker.
pub(crate) const RUN_REGISTERED: &str = "martelli::cluster::run_registered";

/// A [`TaskRunner`] that runs every [`#[martelli::task]`](crate::task) function of this program, found
/// by its registered name, with MessagePack arguments and results (the exact payload is below, and in
/// `docs/protocol.md`). A task submitted through [`Pool::cluster`](crate::Pool::cluster) with its
/// typed handle runs on a worker that serves `Registered`.
///
/// To serve registered tasks and functions added by hand together, use
/// [`Tasks::registered`](super::Tasks::registered).
///
/// # The payload of a registered task
///
/// A task `fn f(a: A, b: B) -> R` (or `-> Result<R, E>`) is submitted under its registered name (its
/// module path and function name, or the `name` given to the attribute). Its payload is the
/// MessagePack encoding of the argument tuple `(a, b)`: an **array with one element per argument** (a
/// task of one argument takes a one-element array, a task of none an empty array). Each argument is
/// encoded as serde encodes it with `rmp_serde::to_vec_named`: structs as maps keyed by field name,
/// byte buffers (`serde_bytes`) as `bin`, enums as `{variant: value}` maps (a unit variant as a
/// string). The result payload of an `ok` result is the MessagePack encoding of the returned `R`, in
/// the same way. An error the task returns comes back as a `failed` result whose message is the
/// error's `Display`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Registered;

impl Registered {
    /// The names of the registered tasks (what a worker serving `Registered` runs), sorted. Fails
    /// when two tasks share a name.
    pub fn names() -> Result<Vec<&'static str>, crate::DuplicateTask> {
        let mut names: Vec<&'static str> = Registry::get()?
            .names()
            .filter(|name| *name != RUN_REGISTERED)
            .collect();
        names.sort_unstable();
        Ok(names)
    }
}

impl TaskRunner for Registered {
    fn run(&self, name: &str, payload: &[u8]) -> Result<Vec<u8>, RunError> {
        if name == RUN_REGISTERED {
            return Err(RunError::UnknownTask);
        }
        let registry = Registry::get()
            .map_err(|e| RunError::Failed(TaskFailure::from_message(e.to_string())))?;
        let mut out = Vec::new();
        match registry.run_msgpack(name, payload, &mut out) {
            None => Err(RunError::UnknownTask),
            Some(Ok(())) => Ok(out),
            // The worker catches the panic again and reports it as `panicked` with this message;
            // `resume_unwind` does not run the panic hook a second time.
            Some(Err(task::RunError::Panicked(message))) => {
                std::panic::resume_unwind(Box::new(message))
            }
            Some(Err(
                task::RunError::Failed(message)
                | task::RunError::BadArgs(message)
                | task::RunError::BadResult(message),
            )) => Err(RunError::Failed(TaskFailure::from_message(message))),
        }
    }
}

/// How a registered task run by [`RunRegistered`] ended, as it crosses back from the process.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Ran {
    Value(ByteBuf),
    Failed(String),
    Panicked(String),
    Unknown,
}

/// The internal task a worker with a process pool submits: it runs the registered task `name` on its
/// MessagePack payload inside a pool process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunRegistered;

impl Task for RunRegistered {
    type Args = (String, ByteBuf);
    type Output = Ran;
    const NAME: &'static str = RUN_REGISTERED;

    fn run((name, payload): Self::Args) -> Result<Ran, TaskFailure> {
        if name == RUN_REGISTERED {
            return Ok(Ran::Unknown);
        }
        let registry = Registry::get().map_err(|e| TaskFailure::from_message(e.to_string()))?;
        let mut out = Vec::new();
        Ok(match registry.run_msgpack(&name, &payload, &mut out) {
            None => Ran::Unknown,
            Some(Ok(())) => Ran::Value(ByteBuf::from(out)),
            Some(Err(task::RunError::Panicked(message))) => Ran::Panicked(message),
            Some(Err(
                task::RunError::Failed(message)
                | task::RunError::BadArgs(message)
                | task::RunError::BadResult(message),
            )) => Ran::Failed(message),
        })
    }
}

inventory::submit! { task::Registration::of::<RunRegistered>() }

/// A registered task run on a local process pool: how it ended.
#[derive(Debug)]
pub(crate) enum Isolated {
    Value(Vec<u8>),
    Failed(String),
    Panicked(String),
    Unknown,
    /// Killed at its deadline (or the deadline had passed).
    TimedOut,
    /// Killed because its token fired (its caller cancelled it).
    Cancelled,
    /// The process running it died.
    Died(crate::WorkerDeath),
}

/// Runs the registered task `name` on `pool`, killed at `deadline` (Unix ms) if it has one, and
/// killed (with its process group) as soon as `token` fires.
#[cfg(target_os = "linux")]
pub(crate) fn run_isolated(
    pool: &crate::Pool,
    name: &str,
    payload: &[u8],
    deadline: Option<u64>,
    token: &crate::CancelToken,
) -> Isolated {
    use crate::TaskError;
    let mut options = crate::TaskOptions::new();
    if let Some(deadline) = deadline {
        let left = deadline.saturating_sub(super::unix_ms());
        if left == 0 {
            return Isolated::TimedOut;
        }
        options = options.timeout(std::time::Duration::from_millis(left));
    }
    let args = (name.to_owned(), ByteBuf::from(payload.to_vec()));
    let future = match pool.with(options).submit_task(RunRegistered, args) {
        Ok(future) => future,
        Err(error) => {
            return Isolated::Failed(format!(
                "the worker's process pool did not take the task: {error}"
            ));
        }
    };
    match wait_or_cancel(future, token) {
        Ok(Ran::Value(bytes)) => Isolated::Value(bytes.into_vec()),
        Ok(Ran::Failed(message)) => Isolated::Failed(message),
        Ok(Ran::Panicked(message)) => Isolated::Panicked(message),
        Ok(Ran::Unknown) => Isolated::Unknown,
        Err(TaskError::TimedOut { .. }) => Isolated::TimedOut,
        Err(TaskError::Cancelled) => Isolated::Cancelled,
        Err(TaskError::WorkerDied(death)) => Isolated::Died(death),
        Err(other) => Isolated::Failed(format!(
            "the worker's process pool could not run the task: {other}"
        )),
    }
}

/// Waits for `future`, and cancels it (on a process pool: kills the process running it) when
/// `token` fires first. The thread sleeps until one of the two wakes it: the future's completion
/// and the token both unpark it.
#[cfg(target_os = "linux")]
fn wait_or_cancel<T: Send + 'static>(
    mut future: crate::Future<T>,
    token: &crate::CancelToken,
) -> crate::TaskResult<T> {
    use std::task::{Context, Waker};
    let me = std::thread::current();
    future.on_done(move |_| me.unpark());
    let waker = Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut cancelled = std::pin::pin!(token.cancelled());
    loop {
        future = match future.try_get() {
            Ok(outcome) => return outcome,
            Err(pending) => pending,
        };
        if std::future::Future::poll(cancelled.as_mut(), &mut cx).is_ready() {
            future.cancel();
            return future.wait();
        }
        // A wake-up that came before this park makes it return at once: none is lost.
        std::thread::park();
    }
}

/// Wakes a parked thread.
#[cfg(target_os = "linux")]
struct Unpark(std::thread::Thread);

#[cfg(target_os = "linux")]
impl std::task::Wake for Unpark {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task registered by hand (the attribute macro names `::martelli`, which this crate is not
    /// to itself).
    #[derive(Debug, Clone, Copy)]
    struct Scale;

    impl Task for Scale {
        type Args = (Vec<i64>, i64);
        type Output = Vec<i64>;
        const NAME: &'static str = "cluster::tests::scale";
        fn run((values, by): Self::Args) -> Result<Vec<i64>, TaskFailure> {
            Ok(values.iter().map(|v| v * by).collect())
        }
    }

    inventory::submit! { task::Registration::of::<Scale>() }

    #[test]
    fn registered_tasks_take_a_messagepack_argument_array() {
        let payload = rmp_serde::to_vec_named(&(vec![1i64, 2], 3i64)).unwrap();
        let out = Registered.run("cluster::tests::scale", &payload).unwrap();
        assert_eq!(rmp_serde::from_slice::<Vec<i64>>(&out).unwrap(), vec![3, 6]);
        assert!(matches!(
            Registered.run("no::such::task", &payload),
            Err(RunError::UnknownTask)
        ));
        assert!(matches!(
            Registered.run(RUN_REGISTERED, &payload),
            Err(RunError::UnknownTask)
        ));
        match Registered.run("cluster::tests::scale", b"\x93") {
            Err(RunError::Failed(f)) => assert!(f.message().contains("MessagePack"), "{f}"),
            other => panic!("expected a decode failure, got {other:?}"),
        }
        assert!(
            Registered::names()
                .unwrap()
                .contains(&"cluster::tests::scale")
        );
    }
}
