//! How a worker finds and runs a task by name: the [`TaskRunner`] trait and [`Tasks`], a map of named
//! functions.

use crate::error::TaskFailure;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Why a runner produced no value.
#[derive(Debug)]
pub enum RunError {
    /// No task has this name here. The worker sends the task to the dead-letter stream with the
    /// reason; it is never retried, since no other delivery would find it either.
    UnknownTask,
    /// The task ran and failed; the caller's future resolves as
    /// [`TaskError::Failed`](crate::TaskError::Failed) with this message.
    Failed(TaskFailure),
}

impl From<TaskFailure> for RunError {
    fn from(failure: TaskFailure) -> Self {
        RunError::Failed(failure)
    }
}

/// Runs tasks by name for a worker: the only way a message reaches code, so a message can only run
/// what the runner knows.
///
/// `run` is called on the worker's threads, several at once; a panic is caught by the worker and
/// reported as [`TaskError::Panicked`](crate::TaskError::Panicked).
pub trait TaskRunner: Send + Sync + 'static {
    /// Runs the task `name` with its encoded arguments and returns its encoded result.
    fn run(&self, name: &str, payload: &[u8]) -> Result<Vec<u8>, RunError>;
}

impl<R: TaskRunner + ?Sized> TaskRunner for Arc<R> {
    fn run(&self, name: &str, payload: &[u8]) -> Result<Vec<u8>, RunError> {
        (**self).run(name, payload)
    }
}

type RawTask = Box<dyn Fn(&[u8]) -> Result<Vec<u8>, TaskFailure> + Send + Sync>;

/// A [`TaskRunner`] over a map of named functions.
///
/// ```
/// use martelli::cluster::{TaskRunner, Tasks};
///
/// let tasks = Tasks::new()
///     .raw("echo", |bytes: &[u8]| Ok(bytes.to_vec()))
///     .typed("add", |(a, b): (i64, i64)| Ok::<_, std::io::Error>(a + b));
/// assert_eq!(tasks.run("echo", b"hi").ok(), Some(b"hi".to_vec()));
/// assert!(tasks.names().any(|n| n == "add"));
/// ```
#[derive(Default)]
pub struct Tasks {
    tasks: HashMap<String, RawTask>,
    /// Names not in `tasks` are looked up among the registered tasks.
    registered: bool,
}

impl Tasks {
    /// An empty map.
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Adds a task that takes and returns bytes. A later task of the same name replaces it.
    pub fn raw<F>(mut self, name: impl Into<String>, task: F) -> Tasks
    where
        F: Fn(&[u8]) -> Result<Vec<u8>, TaskFailure> + Send + Sync + 'static,
    {
        self.tasks.insert(name.into(), Box::new(task));
        self
    }

    /// Adds a task whose arguments and result are serde values, encoded as MessagePack (what
    /// [`Client::submit`](super::Client::submit) sends and expects).
    pub fn typed<A, R, E, F>(mut self, name: impl Into<String>, task: F) -> Tasks
    where
        A: DeserializeOwned,
        R: Serialize,
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
        F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
    {
        let name = name.into();
        let label = name.clone();
        self.tasks.insert(
            name,
            Box::new(move |payload: &[u8]| {
                let args: A = rmp_serde::from_slice(payload).map_err(|e| {
                    TaskFailure::from_message(format!(
                        "could not decode the arguments of task {label:?}: {e} (the client and the \
                         worker disagree on its argument types)"
                    ))
                })?;
                let value = task(args).map_err(TaskFailure::from_error)?;
                rmp_serde::to_vec_named(&value).map_err(|e| {
                    TaskFailure::from_message(format!(
                        "could not encode the result of task {label:?}: {e}"
                    ))
                })
            }),
        );
        self
    }

    /// Also runs every [`#[martelli::task]`](crate::task) function of this program (see
    /// [`Registered`](super::Registered)); a task added to the map under the same name wins.
    pub fn registered(mut self) -> Tasks {
        self.registered = true;
        self
    }

    /// The names of the tasks in the map.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tasks.keys().map(String::as_str)
    }
}

impl TaskRunner for Tasks {
    fn run(&self, name: &str, payload: &[u8]) -> Result<Vec<u8>, RunError> {
        match self.tasks.get(name) {
            Some(task) => task(payload).map_err(RunError::Failed),
            None if self.registered => super::Registered.run(name, payload),
            None => Err(RunError::UnknownTask),
        }
    }
}

impl fmt::Debug for Tasks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.names().collect();
        names.sort_unstable();
        f.debug_struct("Tasks")
            .field("names", &names)
            .field("registered", &self.registered)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_tasks_decode_arguments_and_report_bad_ones() {
        let tasks = Tasks::new().typed("neg", |x: i32| Ok::<_, std::io::Error>(-x));
        let out = tasks
            .run("neg", &rmp_serde::to_vec(&5i32).unwrap())
            .ok()
            .unwrap();
        assert_eq!(rmp_serde::from_slice::<i32>(&out).unwrap(), -5);
        match tasks.run("neg", b"\xc1") {
            Err(RunError::Failed(f)) => {
                assert!(f.message().contains("could not decode the arguments"))
            }
            other => panic!("expected a decode failure, got {other:?}"),
        }
        assert!(matches!(tasks.run("nope", b""), Err(RunError::UnknownTask)));
    }
}
