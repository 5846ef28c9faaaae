//! The settings every layer shares: a task's [`Priority`], its [`TaskOptions`], and how a pool
//! [`Shutdown`]s. A leaf module: the pool, the jobs and the backends all import it, and it imports
//! none of them.

use std::time::Duration;

/// A task's priority: queued tasks start in priority order (FIFO within a level), so a `High`
/// submission — the foreground — overtakes queued `Normal` and `Low` ones. A task that already runs is
/// never preempted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Interactive work: starts before everything queued at lower levels.
    High,
    /// The default.
    #[default]
    Normal,
    /// Background work: starts only when nothing of higher priority waits.
    Low,
}

impl Priority {
    pub(crate) fn level(self) -> usize {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }
}

/// How [`Pool::shutdown`](crate::Pool::shutdown) treats work that has not finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Shutdown {
    /// Run every queued task, then stop (what dropping a pool does).
    #[default]
    Wait,
    /// Cancel queued tasks (their futures resolve as `Cancelled`), fire the tokens of running ones, and
    /// wait for the running ones to return.
    CancelPending,
}

/// Per-call settings: priority, timeout, a name for diagnostics. Give them to one call with
/// [`Pool::with`](crate::Pool::with), which returns a [`Submitter`](crate::Submitter) with the same
/// verbs as the pool (`submit`, `submit_task`, `map`, …); every verb called on the pool itself uses
/// the defaults.
///
/// ```
/// use martelli::{Pool, Priority, TaskOptions};
/// use std::time::Duration;
///
/// let pool = Pool::threads(2)?;
/// let urgent = TaskOptions::new().priority(Priority::High).timeout(Duration::from_secs(5));
/// assert_eq!(pool.with(urgent).submit(|| 6 * 7)?.wait()?, 42);
/// // A priority alone converts into options.
/// assert_eq!(pool.with(Priority::Low).submit(|| "later")?.wait()?, "later");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskOptions {
    pub(crate) priority: Priority,
    pub(crate) timeout: Option<Duration>,
    pub(crate) name: Option<&'static str>,
}

impl TaskOptions {
    /// Normal priority, the pool's default timeout.
    pub fn new() -> Self {
        TaskOptions::default()
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets a timeout for this task, counted from the moment it starts running; it replaces the pool's
    /// default. On threads the task is not killed: its future resolves as `TimedOut` and its
    /// [`CancelToken`](crate::CancelToken) fires. On a process pool the worker running it is killed
    /// with its process group, and replaced. On a cluster pool it is counted from submission (time in
    /// the queue included): a worker does not start the task after it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Names the task in diagnostics (the blocking-call detector's warnings).
    pub fn name(mut self, name: &'static str) -> Self {
        self.name = Some(name);
        self
    }
}

impl From<Priority> for TaskOptions {
    /// Options with this priority and the defaults otherwise.
    fn from(priority: Priority) -> TaskOptions {
        TaskOptions::new().priority(priority)
    }
}
