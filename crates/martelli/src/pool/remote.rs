//! Tasks sent by name to a backend that runs them in other processes (a [`RemoteJob`]: the run
//! frame, encoded once, and the typed [`Sink`] that resolves the future), and the bodies that run
//! the same tasks in this process on the other backends.

use crate::backend::{Admission, Backend, RemoteJob, RemoteRejected, RunKind, Sink};
use crate::cancel::CancelToken;
use crate::codec;
use crate::error::{Error, TaskError, TaskResult};
use crate::future::{Future, Promise, promise};
use crate::job::Body;
#[cfg(feature = "cluster")]
use crate::options::Priority;
use crate::options::TaskOptions;
use crate::task::{Registry, Task};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

/// The sink of a task whose outcome bytes `decode` turns into its value.
pub(super) fn plain<V: Send + 'static>(
    decode: fn(&[u8]) -> TaskResult<V>,
) -> impl FnOnce(Promise<V>, Option<Duration>) -> Box<dyn Sink> {
    move |promise, timeout| {
        Box::new(RemoteSink {
            promise,
            timeout,
            decode,
        })
    }
}

/// Encodes a task's run frame (as `call.kind` says) and hands it to a remote backend; `sink` makes
/// the typed end that resolves its future.
pub(super) fn send_remote<A, V>(
    backend: &dyn Backend,
    task_timeout: Option<Duration>,
    options: TaskOptions,
    (name, kind): (&str, RunKind),
    args: &A,
    sink: impl FnOnce(Promise<V>, Option<Duration>) -> Box<dyn Sink>,
) -> Result<Future<V>, Error>
where
    A: Serialize + ?Sized,
    V: Send + 'static,
{
    let Some(remote) = backend.remote() else {
        return Err(Error::ShutDown);
    };
    let (promise, future) = promise::<V>();
    let id = promise.id().as_u64();
    let header = kind.header(id, name);
    // Room for the header and small arguments: no reallocation on the common path.
    let mut frame = Vec::with_capacity(128);
    let built = codec::begin(&mut frame, &header)
        .map_err(|e| e.to_string())
        .and_then(|()| codec::push_body(&mut frame, args))
        .and_then(|()| codec::finish(&mut frame, remote.max_frame()).map_err(|e| e.to_string()));
    if let Err(message) = built {
        promise.complete(Err(TaskError::Codec(format!(
            "the arguments of task {name:?} could not be sent: {message}"
        ))));
        return Ok(future);
    }
    let job = RemoteJob {
        id,
        priority: options.priority,
        frame,
        sink: sink(promise, options.timeout.or(task_timeout)),
    };
    match remote.execute_remote(job, Admission::Wait) {
        Ok(()) => Ok(future),
        Err(RemoteRejected::ShutDown | RemoteRejected::Full) => Err(Error::ShutDown),
    }
}

/// Runs one task type on a remote backend and waits for each outcome; holds the backend, not the
/// pool, so a daemon consumer's thread can own it.
pub(crate) struct RemoteRunner<T> {
    backend: Arc<dyn Backend>,
    task_timeout: Option<Duration>,
    task: std::marker::PhantomData<fn() -> T>,
}

impl<T: Task> RemoteRunner<T> {
    pub(super) fn new(backend: Arc<dyn Backend>, task_timeout: Option<Duration>) -> Self {
        RemoteRunner {
            backend,
            task_timeout,
            task: std::marker::PhantomData,
        }
    }

    /// Sends `args` to a worker and waits for the outcome. A pool that shut down meanwhile gives
    /// [`TaskError::Cancelled`]: the task never ran. The arguments are only encoded, so the caller
    /// keeps them (a daemon consumer hands a failed item back with its error).
    pub(crate) fn run(&self, args: &T::Args) -> TaskResult<T::Output> {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.backend.cluster() {
            return cluster
                .submit(Priority::Normal, self.task_timeout, T::NAME, args)
                .map_or(Err(TaskError::Cancelled), Future::wait);
        }
        send_remote(
            &*self.backend,
            self.task_timeout,
            TaskOptions::default(),
            (T::NAME, RunKind::One),
            args,
            plain(decode_value::<T::Output>),
        )
        .map_or(Err(TaskError::Cancelled), Future::wait)
    }
}

/// A task run in this process (the in-process backends' `submit_task`).
pub(super) struct TaskBody<T: Task>(pub(super) T::Args);

impl<T: Task> Body<T::Output> for TaskBody<T> {
    fn call(self) -> TaskResult<T::Output> {
        T::run(self.0).map_err(TaskError::Failed)
    }
}

/// A chunk of a task map run in this process.
pub(super) struct ChunkBody<T: Task>(pub(super) Vec<T::Args>);

impl<T: Task> Body<Vec<TaskResult<T::Output>>> for ChunkBody<T> {
    fn call(self) -> TaskResult<Vec<TaskResult<T::Output>>> {
        Ok(self
            .0
            .into_iter()
            .map(|args| crate::task::run_item::<T>(args).into_result())
            .collect())
    }
}

/// A task by name run in this process (the in-process backends' `submit_named`).
pub(super) struct NamedBody {
    pub(super) name: String,
    pub(super) args: Vec<u8>,
}

impl<R: DeserializeOwned> Body<R> for NamedBody {
    fn call(self) -> TaskResult<R> {
        run_named(&self.name, &self.args)
    }
}

/// Runs a task by name in this process, as a worker would.
fn run_named<R: DeserializeOwned>(name: &str, args: &[u8]) -> TaskResult<R> {
    let registry = Registry::get().map_err(|e| TaskError::Codec(e.to_string()))?;
    let mut out = Vec::new();
    match registry.run(name, args, &mut out) {
        None => Err(TaskError::UnknownTask {
            name: name.to_owned(),
        }),
        Some(Ok(())) => postcard::from_bytes(&out).map_err(|e| {
            TaskError::Codec(format!(
                "the result of task {name:?} does not decode as {}: {e}",
                std::any::type_name::<R>()
            ))
        }),
        Some(Err(e)) => Err(crate::task::run_error_to_task_error(e)),
    }
}

/// The typed end of a task or chunk sent to a worker process: its promise, its timeout, and how its
/// result bytes decode.
struct RemoteSink<T> {
    promise: Promise<T>,
    timeout: Option<Duration>,
    decode: fn(&[u8]) -> TaskResult<T>,
}

impl<T: Send + 'static> Sink for RemoteSink<T> {
    fn start(&self) -> bool {
        self.promise.start()
    }

    fn token(&self) -> &CancelToken {
        self.promise.token()
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    fn complete(self: Box<Self>, outcome: Result<&[u8], TaskError>) {
        let result = outcome.and_then(self.decode);
        self.promise.complete(result);
    }
}

/// A task's result.
pub(super) fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> TaskResult<T> {
    postcard::from_bytes::<T>(bytes).map_err(|e| {
        TaskError::Codec(format!(
            "the result does not decode as {}: {e}",
            std::any::type_name::<T>()
        ))
    })
}

/// A chunk's results, one outcome per item.
pub(super) fn decode_chunk<T: DeserializeOwned>(bytes: &[u8]) -> TaskResult<Vec<TaskResult<T>>> {
    postcard::from_bytes::<Vec<crate::task::ItemOutcome<T>>>(bytes)
        .map(|items| items.into_iter().map(|i| i.into_result()).collect())
        .map_err(|e| {
            TaskError::Codec(format!(
                "the results do not decode as {}: {e}",
                std::any::type_name::<T>()
            ))
        })
}
