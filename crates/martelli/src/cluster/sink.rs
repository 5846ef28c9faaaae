//! Where a submitted task's news goes: a [`Sink`] per task, held by the client until the task's
//! result arrives. The client calls [`Sink::start`] when a worker reports that it started the task
//! (the future then reads as [`Running`](crate::Status::Running)) and [`Sink::complete`] with its
//! outcome.
//!
//! A sink is shared (`Arc`) so that the client can call `start` without holding its own lock: a
//! future's lock is never taken under the client's (a user's `on_done` callback may call into the
//! client while its future's lock is held).

use crate::error::{TaskError, TaskFailure, TaskResult};
use crate::future::{Promise, TaskId};
use crate::sync::Mutex;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Receives what happens to one submitted task.
pub(crate) trait Sink: Send + Sync {
    /// A worker started the task.
    fn start(&self);

    /// The task's outcome (the bytes of its result, or how it failed). Only the first call counts.
    fn complete(&self, result: TaskResult<Vec<u8>>);

    /// The id of the [`Future`](crate::Future) this sink resolves, when it resolves exactly one
    /// (a caller can then ask about the task by its future: [`Client::held_for`](super::Client::held_for)).
    fn future(&self) -> Option<TaskId> {
        None
    }
}

/// A shared sink, as the client holds it.
pub(crate) type SharedSink = Arc<dyn Sink>;

/// The sink of a task whose future gets the result's bytes turned into a `T` by `convert` (which
/// also gets the task's name, for its error message).
struct Resolve<T> {
    task: String,
    /// The id of the promise's future (kept apart: the promise is gone once it completes).
    future: TaskId,
    convert: fn(&str, Vec<u8>) -> TaskResult<T>,
    promise: Mutex<Option<Promise<T>>>,
}

impl<T: Send + 'static> Sink for Resolve<T> {
    fn start(&self) {
        if let Some(promise) = self.promise.lock().as_ref() {
            promise.start();
        }
    }

    fn complete(&self, result: TaskResult<Vec<u8>>) {
        let promise = self.promise.lock().take();
        if let Some(promise) = promise {
            promise.complete(result.and_then(|bytes| (self.convert)(&self.task, bytes)));
        }
    }

    fn future(&self) -> Option<TaskId> {
        Some(self.future)
    }
}

/// The sink of task `task` whose future wants a value of type `R`: it decodes the MessagePack
/// result and resolves `promise` with it.
pub(crate) fn decode_into<R: DeserializeOwned + Send + 'static>(
    task: &str,
    promise: Promise<R>,
) -> SharedSink {
    Arc::new(Resolve {
        task: task.to_owned(),
        future: promise.id(),
        convert: |task, bytes| decode_result(task, &bytes),
        promise: Mutex::new(Some(promise)),
    })
}

/// The sink of a raw task: its future gets the result's bytes.
pub(crate) fn raw(promise: Promise<Vec<u8>>) -> SharedSink {
    Arc::new(Resolve {
        task: String::new(),
        future: promise.id(),
        convert: |_, bytes| Ok(bytes),
        promise: Mutex::new(Some(promise)),
    })
}

/// Decodes a typed task's MessagePack result.
pub(crate) fn decode_result<R: DeserializeOwned>(name: &str, bytes: &[u8]) -> TaskResult<R> {
    rmp_serde::from_slice::<R>(bytes).map_err(|e| {
        TaskError::Failed(TaskFailure::from_message(format!(
            "could not decode the result of task {name:?}: {e} (the client and the worker disagree \
             on its result type)"
        )))
    })
}
