//! Tasks by name: the [`Task`] trait that `#[martelli::task]` implements, and the registry built at
//! link time from every task in the program.
//!
//! A process or cluster worker runs only functions registered here, found by name: no code travels
//! as data, so a message can never make a worker execute anything else.

use crate::error::{TaskFailure, panic_message};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

/// A function registered with [`#[martelli::task]`](crate::task): it has a stable name, serde
/// arguments and a serde result, so a worker process (or machine) can run it.
///
/// The macro implements this trait on a unit struct named like the function; that struct is the
/// task's typed handle:
///
/// ```
/// #[martelli::task]
/// fn add(a: u64, b: u64) -> u64 {
///     a + b
/// }
///
/// use martelli::Task;
/// assert_eq!(add::NAME, concat!(module_path!(), "::add"));
/// assert_eq!(add::call(2, 3), 5); // the function itself, called in this process
///
/// let pool = martelli::Pool::threads(1)?; // every backend runs tasks; processes need them
/// assert_eq!(pool.submit_task(add, (2, 3))?.wait()?, 5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Task: Copy + Send + Sync + 'static {
    /// The arguments, as a tuple (`()` for none, `(A,)` for one).
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// The value the task returns (`T` of a `Result<T, E>` return type).
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// The name workers know the task by.
    const NAME: &'static str;
    /// The options given to `#[martelli::task(…)]`: retries and a rate limit, which the cluster
    /// applies (none by default).
    const OPTIONS: TaskSettings = TaskSettings::new();
    /// Runs the task in this process.
    fn run(args: Self::Args) -> Result<Self::Output, TaskFailure>;
}

/// The options a task declares with `#[martelli::task(…)]`; the cluster tier applies them.
///
/// - `retries = N` (with `backoff_ms`, `factor`, `max_backoff_ms`, `jitter`, `retry_on = ["failed",
///   "panicked", "timed_out", "worker_died"]`, `retry_match = ["…"]`): a task submitted to a
///   cluster (`Pool::cluster`, `cluster::Client`) without a retry policy of its own gets this
///   one (docs/protocol.md, "Addition 2"). The producer applies it, so it must be the program
///   that registers the task (as with `Pool::cluster`).
/// - `rate_limit = "100/s"`: a cluster worker that serves the task writes the limit at start
///   unless one is set already (an operator's `martelli ratelimit` wins; clear it to go back to
///   the declared one), so every worker shares it ("Addition 3").
///
/// Other backends ignore them.
///
/// ```
/// #[martelli::task(retries = 3, backoff_ms = 200, retry_on = ["failed"], rate_limit = "10/s")]
/// fn fetch(url: String) -> Result<usize, std::io::Error> {
///     Ok(url.len())
/// }
///
/// use martelli::Task;
/// assert_eq!(fetch::OPTIONS.retries(), Some(3));
/// assert_eq!(fetch::OPTIONS.rate_limit(), Some("10/s"));
/// ```
///
/// Options are checked at compile time: a status that does not exist,
///
/// ```compile_fail
/// #[martelli::task(retries = 2, retry_on = ["sometimes"])]
/// fn f() {}
/// ```
///
/// a rate that does not parse,
///
/// ```compile_fail
/// #[martelli::task(rate_limit = "100 per second")]
/// fn f() {}
/// ```
///
/// or an unknown option does not compile.
///
/// ```compile_fail
/// #[martelli::task(retires = 2)]
/// fn f() {}
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSettings {
    retries: Option<u32>,
    backoff_ms: Option<u64>,
    factor: Option<u32>,
    max_backoff_ms: Option<u64>,
    jitter: Option<bool>,
    retry_on: Option<&'static [&'static str]>,
    retry_match: Option<&'static [&'static str]>,
    rate_limit: Option<&'static str>,
}

impl Default for TaskSettings {
    fn default() -> Self {
        TaskSettings::new()
    }
}

impl TaskSettings {
    /// No options.
    pub const fn new() -> TaskSettings {
        TaskSettings {
            retries: None,
            backoff_ms: None,
            factor: None,
            max_backoff_ms: None,
            jitter: None,
            retry_on: None,
            retry_match: None,
            rate_limit: None,
        }
    }

    /// Retries after the first run.
    pub const fn with_retries(mut self, n: u32) -> TaskSettings {
        self.retries = Some(n);
        self
    }

    /// The delay before the first retry, in ms.
    pub const fn with_backoff_ms(mut self, ms: u64) -> TaskSettings {
        self.backoff_ms = Some(ms);
        self
    }

    /// Each retry's delay is the previous one's times this.
    pub const fn with_factor(mut self, factor: u32) -> TaskSettings {
        self.factor = Some(factor);
        self
    }

    /// The longest delay, in ms.
    pub const fn with_max_backoff_ms(mut self, ms: u64) -> TaskSettings {
        self.max_backoff_ms = Some(ms);
        self
    }

    /// Whether delays are drawn from their upper half.
    pub const fn with_jitter(mut self, jitter: bool) -> TaskSettings {
        self.jitter = Some(jitter);
        self
    }

    /// The result statuses retried (`failed`, `panicked`, `timed_out`, `worker_died`).
    pub const fn with_retry_on(mut self, on: &'static [&'static str]) -> TaskSettings {
        self.retry_on = Some(on);
        self
    }

    /// Only errors whose message contains one of these are retried.
    pub const fn with_retry_match(mut self, needles: &'static [&'static str]) -> TaskSettings {
        self.retry_match = Some(needles);
        self
    }

    /// The rate limit (`COUNT/PERIOD`: `100/s`, `10/m`, `5/250`).
    pub const fn with_rate_limit(mut self, limit: &'static str) -> TaskSettings {
        self.rate_limit = Some(limit);
        self
    }

    /// The declared retries, if any.
    pub const fn retries(&self) -> Option<u32> {
        self.retries
    }

    /// The declared rate limit, if any.
    pub const fn rate_limit(&self) -> Option<&'static str> {
        self.rate_limit
    }

    /// Whether nothing is declared.
    #[cfg(feature = "cluster")]
    pub(crate) fn is_empty(&self) -> bool {
        *self == TaskSettings::new()
    }

    /// The cluster retry policy these options declare.
    #[cfg(feature = "cluster")]
    pub(crate) fn retry(&self) -> Option<crate::cluster::Retry> {
        use crate::cluster::{Retry, RetryOn};
        use std::time::Duration;
        let mut retry = Retry::new(self.retries?);
        if let Some(ms) = self.backoff_ms {
            retry = retry.backoff(Duration::from_millis(ms));
        }
        if let Some(factor) = self.factor {
            retry = retry.factor(factor);
        }
        if let Some(ms) = self.max_backoff_ms {
            retry = retry.max_backoff(Duration::from_millis(ms));
        }
        if let Some(jitter) = self.jitter {
            retry = retry.jitter(jitter);
        }
        if let Some(on) = self.retry_on {
            // The macro accepts only these four names.
            let on: Vec<RetryOn> = on
                .iter()
                .filter_map(|s| match *s {
                    "failed" => Some(RetryOn::Failed),
                    "panicked" => Some(RetryOn::Panicked),
                    "timed_out" => Some(RetryOn::TimedOut),
                    "worker_died" => Some(RetryOn::WorkerDied),
                    _ => None,
                })
                .collect();
            retry = retry.on(&on);
        }
        if let Some(needles) = self.retry_match {
            retry = retry.matching(needles.iter().copied());
        }
        Some(retry)
    }
}

/// How a task run by name ended, in the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RunError {
    /// The task returned an error.
    Failed(String),
    /// The task panicked.
    Panicked(String),
    /// The arguments did not decode as the task's argument types.
    BadArgs(String),
    /// The result could not be encoded.
    BadResult(String),
}

type RunFn = fn(&[u8], &mut Vec<u8>) -> Result<(), RunError>;
type RunBatchFn = fn(&[u8], &mut Vec<u8>) -> Result<(), RunError>;

/// One item's outcome in a batch (a chunk of a map): what crosses back for each input.
#[derive(Debug, Serialize, serde::Deserialize)]
pub(crate) enum ItemOutcome<T> {
    Value(T),
    Failed(String),
    Panicked(String),
}

impl<T> ItemOutcome<T> {
    pub(crate) fn into_result(self) -> crate::error::TaskResult<T> {
        use crate::error::TaskError;
        match self {
            ItemOutcome::Value(v) => Ok(v),
            ItemOutcome::Failed(m) => Err(TaskError::Failed(TaskFailure::from_message(m))),
            ItemOutcome::Panicked(message) => Err(TaskError::Panicked { message }),
        }
    }
}

/// Runs one item in this process, under `catch_unwind`.
pub(crate) fn run_item<T: Task>(args: T::Args) -> ItemOutcome<T::Output> {
    match catch_unwind(AssertUnwindSafe(|| T::run(args))) {
        Ok(Ok(value)) => ItemOutcome::Value(value),
        Ok(Err(failure)) => ItemOutcome::Failed(failure.message().to_owned()),
        Err(payload) => ItemOutcome::Panicked(panic_message(payload.as_ref())),
    }
}

/// One registered task, as `#[martelli::task]` submits it to the link-time registry.
#[doc(hidden)]
pub struct Registration {
    name: &'static str,
    run: RunFn,
    run_batch: RunBatchFn,
    /// Runs the task on MessagePack arguments (the cluster's wire encoding).
    #[cfg(feature = "cluster")]
    run_msgpack: RunFn,
    signature: fn() -> String,
    /// Only the cluster tier applies declared options; other builds carry them unread.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    options: TaskSettings,
}

impl Registration {
    /// The registration of task `T`.
    pub const fn of<T: Task>() -> Registration {
        Registration {
            name: T::NAME,
            run: run_encoded::<T>,
            run_batch: run_batch_encoded::<T>,
            #[cfg(feature = "cluster")]
            run_msgpack: run_msgpack::<T>,
            signature: signature::<T>,
            options: T::OPTIONS,
        }
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

inventory::collect!(Registration);

fn signature<T: Task>() -> String {
    format!(
        "{}{} -> {}",
        T::NAME,
        std::any::type_name::<T::Args>(),
        std::any::type_name::<T::Output>()
    )
}

/// Runs the task under `catch_unwind`: its value, or its failure or panic as a [`RunError`].
fn run_caught<T: Task>(args: T::Args) -> Result<T::Output, RunError> {
    match catch_unwind(AssertUnwindSafe(|| T::run(args))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(failure)) => Err(RunError::Failed(failure.message().to_owned())),
        Err(payload) => Err(RunError::Panicked(panic_message(payload.as_ref()))),
    }
}

/// Decodes `args`, runs the task under `catch_unwind`, and appends its encoded value to `out`.
fn run_encoded<T: Task>(args: &[u8], out: &mut Vec<u8>) -> Result<(), RunError> {
    let args: T::Args = postcard::from_bytes(args).map_err(|e| {
        RunError::BadArgs(format!(
            "the arguments do not decode as {}: {e}",
            std::any::type_name::<T::Args>()
        ))
    })?;
    let value = run_caught::<T>(args)?;
    let start = out.len();
    if let Err(e) = postcard::to_io(&value, &mut *out) {
        out.truncate(start);
        return Err(RunError::BadResult(format!(
            "the result ({}) could not be encoded: {e}",
            std::any::type_name::<T::Output>()
        )));
    }
    Ok(())
}

/// [`run_encoded`] with MessagePack instead of postcard: the arguments are the MessagePack encoding of
/// the argument tuple (an array with one element per argument), and the value is appended as
/// MessagePack with named struct fields (`rmp_serde::to_vec_named`), as `cluster::Client::submit`
/// sends and expects.
#[cfg(feature = "cluster")]
fn run_msgpack<T: Task>(args: &[u8], out: &mut Vec<u8>) -> Result<(), RunError> {
    let args: T::Args = rmp_serde::from_slice(args).map_err(|e| {
        RunError::BadArgs(format!(
            "the arguments do not decode as {} from MessagePack: {e}",
            std::any::type_name::<T::Args>()
        ))
    })?;
    let value = run_caught::<T>(args)?;
    let start = out.len();
    if let Err(e) = rmp_serde::encode::write_named(out, &value) {
        out.truncate(start);
        return Err(RunError::BadResult(format!(
            "the result ({}) could not be encoded as MessagePack: {e}",
            std::any::type_name::<T::Output>()
        )));
    }
    Ok(())
}

/// The outcome of a task run by name in this process.
pub(crate) fn run_error_to_task_error(e: RunError) -> crate::error::TaskError {
    use crate::error::TaskError;
    match e {
        RunError::Failed(m) => TaskError::Failed(TaskFailure::from_message(m)),
        RunError::Panicked(message) => TaskError::Panicked { message },
        RunError::BadArgs(m) | RunError::BadResult(m) => TaskError::Codec(m),
    }
}

/// Decodes a batch of arguments, runs each item under `catch_unwind`, and appends the encoded
/// outcomes (a `Vec<ItemOutcome<Output>>`) to `out`.
fn run_batch_encoded<T: Task>(args: &[u8], out: &mut Vec<u8>) -> Result<(), RunError> {
    let batch: Vec<T::Args> = postcard::from_bytes(args).map_err(|e| {
        RunError::BadArgs(format!(
            "the arguments do not decode as a batch of {}: {e}",
            std::any::type_name::<T::Args>()
        ))
    })?;
    let outcomes: Vec<ItemOutcome<T::Output>> = batch.into_iter().map(run_item::<T>).collect();
    let start = out.len();
    if let Err(e) = postcard::to_io(&outcomes, &mut *out) {
        out.truncate(start);
        return Err(RunError::BadResult(format!(
            "the results ({}) could not be encoded: {e}",
            std::any::type_name::<T::Output>()
        )));
    }
    Ok(())
}

/// Turns a task's error into its failure (used by `#[martelli::task]` for `Result` tasks).
#[doc(hidden)]
pub fn failure_from_display<E: fmt::Display>(error: E) -> TaskFailure {
    TaskFailure::from_message(error.to_string())
}

/// Two tasks were registered under one name.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "two tasks are registered under the name {name:?} (give one of them another name with \
     #[martelli::task(name = \"…\")])"
)]
pub struct DuplicateTask {
    /// The name both tasks have.
    pub name: String,
}

/// Every task in the program, by name.
pub(crate) struct Registry {
    by_name: HashMap<&'static str, (RunFn, RunBatchFn)>,
    #[cfg(feature = "cluster")]
    msgpack: HashMap<&'static str, RunFn>,
    /// The tasks that declare options (`#[martelli::task(retries = …)]`); only the cluster reads them.
    #[cfg(feature = "cluster")]
    options: HashMap<&'static str, TaskSettings>,
    fingerprint: u64,
}

impl Registry {
    fn build() -> Result<Registry, DuplicateTask> {
        let mut by_name = HashMap::new();
        #[cfg(feature = "cluster")]
        let mut msgpack = HashMap::new();
        let mut signatures = Vec::new();
        #[cfg(feature = "cluster")]
        let mut options = HashMap::new();
        for r in inventory::iter::<Registration> {
            #[cfg(feature = "cluster")]
            if !r.options.is_empty() {
                options.insert(r.name, r.options);
            }
            if by_name.insert(r.name, (r.run, r.run_batch)).is_some() {
                return Err(DuplicateTask {
                    name: r.name.to_owned(),
                });
            }
            #[cfg(feature = "cluster")]
            msgpack.insert(r.name, r.run_msgpack);
            signatures.push((r.signature)());
        }
        signatures.sort_unstable();
        let mut fingerprint = Fnv::default();
        fingerprint.write(env!("CARGO_PKG_VERSION").as_bytes());
        for s in &signatures {
            fingerprint.write(s.as_bytes());
            fingerprint.write(&[0]);
        }
        Ok(Registry {
            by_name,
            #[cfg(feature = "cluster")]
            msgpack,
            #[cfg(feature = "cluster")]
            options,
            fingerprint: fingerprint.0,
        })
    }

    /// The program's registry (built once).
    pub(crate) fn get() -> Result<&'static Registry, DuplicateTask> {
        static REGISTRY: OnceLock<Result<Registry, DuplicateTask>> = OnceLock::new();
        REGISTRY
            .get_or_init(Registry::build)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Runs task `name` on encoded `args`, appending the encoded value to `out`. `None`: no task has
    /// that name.
    pub(crate) fn run(
        &self,
        name: &str,
        args: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<Result<(), RunError>> {
        self.by_name.get(name).map(|(run, _)| run(args, out))
    }

    /// Runs task `name` on MessagePack `args`, appending its MessagePack value to `out` (see
    /// `run_msgpack`). `None`: no task has that name.
    #[cfg(feature = "cluster")]
    pub(crate) fn run_msgpack(
        &self,
        name: &str,
        args: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<Result<(), RunError>> {
        self.msgpack.get(name).map(|run| run(args, out))
    }

    /// True when a task has this name.
    #[cfg(feature = "cluster")]
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Every task's name.
    #[cfg(feature = "cluster")]
    pub(crate) fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.by_name.keys().copied()
    }

    /// The options task `name` declares, if any.
    #[cfg(feature = "cluster")]
    pub(crate) fn options(&self, name: &str) -> Option<&TaskSettings> {
        self.options.get(name)
    }

    /// Every task that declares options, with them.
    #[cfg(feature = "cluster")]
    pub(crate) fn declared(&self) -> impl Iterator<Item = (&'static str, &TaskSettings)> + '_ {
        self.options.iter().map(|(name, options)| (*name, options))
    }

    /// Runs task `name` over an encoded batch of arguments (see `run_batch_encoded`).
    pub(crate) fn run_batch(
        &self,
        name: &str,
        args: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<Result<(), RunError>> {
        self.by_name
            .get(name)
            .map(|(_, run_batch)| run_batch(args, out))
    }

    /// A hash of martelli's version and every task's name and signature: two processes with the
    /// same fingerprint agree on what each task name means.
    pub(crate) fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

/// FNV-1a, 64 bits: a fingerprint stable across builds and platforms (unlike `DefaultHasher`).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}
