//! Tasks sent by name to a backend that runs them in other processes (a [`RemoteJob`]: the run
//! frame, encoded once, and the typed [`Sink`] that resolves the future), and the bodies that run
//! the same tasks in this process on the other backends.

use crate::backend::{
    Admission, Backend, RemoteBackend, RemoteJob, RemoteRejected, RunKind, Sink, Wire,
};
use crate::cancel::CancelToken;
use crate::codec;
use crate::error::{Error, TaskError, TaskResult};
use crate::future::{Future, Promise, promise};
use crate::job::Body;
use crate::options::TaskOptions;
use crate::task::{Registry, Task};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// How a sink turns a task's outcome bytes into its value, for each [`Wire`].
#[derive(Clone, Copy)]
pub(super) struct Decode<V> {
    /// Postcard (process-pool frames).
    pub(super) frames: fn(&[u8]) -> TaskResult<V>,
    /// MessagePack (the cluster).
    #[cfg(feature = "cluster")]
    pub(super) message_pack: fn(&[u8]) -> TaskResult<V>,
}

impl<V> Decode<V> {
    fn on(self, wire: Wire) -> fn(&[u8]) -> TaskResult<V> {
        match wire {
            Wire::Frames => self.frames,
            #[cfg(feature = "cluster")]
            Wire::MessagePack => self.message_pack,
        }
    }
}

/// A task's value, in either encoding.
pub(super) fn value<T: DeserializeOwned>() -> Decode<T> {
    Decode {
        frames: decode_value::<T>,
        #[cfg(feature = "cluster")]
        message_pack: decode_message_pack::<T>,
    }
}

/// The sink of a task whose outcome bytes `decode` turns into its value.
pub(super) fn plain<V: Send + 'static>(
    decode: Decode<V>,
) -> impl FnOnce(Promise<V>, Option<Duration>, Wire) -> Box<dyn Sink> {
    move |promise, timeout, wire| {
        Box::new(RemoteSink {
            promise,
            timeout,
            decode: decode.on(wire),
        })
    }
}

/// The one way a task reaches a remote backend: encodes its arguments as the backend's [`Wire`]
/// says (a run frame of `kind`, or a MessagePack array) and hands the job over; `sink` makes the
/// typed end that resolves its future.
pub(super) fn send_remote<A, V>(
    backend: &dyn Backend,
    task_timeout: Option<Duration>,
    options: TaskOptions,
    (name, kind): (Cow<'static, str>, RunKind),
    args: &A,
    sink: impl FnOnce(Promise<V>, Option<Duration>, Wire) -> Box<dyn Sink>,
) -> Result<Future<V>, Error>
where
    A: Serialize + ?Sized,
    V: Send + 'static,
{
    let Some(remote) = backend.remote() else {
        return Err(Error::ShutDown);
    };
    let wire = remote.wire();
    let (promise, future) = promise::<V>();
    let id = promise.id().as_u64();
    let frame = match encode(remote, wire, id, (&name, kind), args) {
        Ok(frame) => frame,
        Err(message) => {
            promise.complete(Err(TaskError::Codec(format!(
                "the arguments of task {name:?} could not be sent: {message}"
            ))));
            return Ok(future);
        }
    };
    let job = RemoteJob {
        id,
        priority: options.priority,
        task: name,
        frame,
        sink: sink(promise, options.timeout.or(task_timeout), wire),
    };
    match remote.execute_remote(job, Admission::Wait) {
        Ok(()) => Ok(future),
        Err(RemoteRejected::ShutDown | RemoteRejected::Full) => Err(Error::ShutDown),
        Err(RemoteRejected::Failed(error)) => Err(error),
    }
}

/// A task's payload in the backend's encoding.
fn encode<A: Serialize + ?Sized>(
    remote: &dyn RemoteBackend,
    wire: Wire,
    id: u64,
    (name, kind): (&str, RunKind),
    args: &A,
) -> Result<Vec<u8>, String> {
    match wire {
        Wire::Frames => {
            // Room for the header and small arguments: no reallocation on the common path.
            let mut frame = Vec::with_capacity(128);
            codec::begin(&mut frame, &kind.header(id, name))
                .map_err(|e| e.to_string())
                .and_then(|()| codec::push_body(&mut frame, args))
                .and_then(|()| {
                    codec::finish(&mut frame, remote.max_frame()).map_err(|e| e.to_string())
                })?;
            Ok(frame)
        }
        #[cfg(feature = "cluster")]
        Wire::MessagePack => rmp_serde::to_vec_named(args)
            .map_err(|e| format!("they could not be encoded as MessagePack: {e}")),
    }
}

/// Sends a chunk of a task map. Frames carry the whole chunk to one worker in one round trip; a
/// MessagePack backend gets one task per input, and the chunk's future resolves, in input order,
/// when each has.
pub(super) fn send_chunk<T: Task>(
    backend: &dyn Backend,
    task_timeout: Option<Duration>,
    options: TaskOptions,
    chunk: &[T::Args],
) -> Result<Future<Vec<TaskResult<T::Output>>>, Error> {
    let Some(remote) = backend.remote() else {
        return Err(Error::ShutDown);
    };
    match remote.wire() {
        Wire::Frames => send_remote(
            backend,
            task_timeout,
            options,
            (Cow::Borrowed(T::NAME), RunKind::Batch),
            chunk,
            plain(Decode {
                frames: decode_chunk::<T::Output>,
                #[cfg(feature = "cluster")]
                message_pack: |_| unreachable!("a chunk is sent as frames here"),
            }),
        ),
        #[cfg(feature = "cluster")]
        Wire::MessagePack => split::send::<T>(remote, task_timeout, options, chunk),
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
        send_remote(
            &*self.backend,
            self.task_timeout,
            TaskOptions::default(),
            (Cow::Borrowed(T::NAME), RunKind::One),
            args,
            plain(value::<T::Output>()),
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

    fn future(&self) -> Option<crate::future::TaskId> {
        Some(self.promise.id())
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

/// A task's result in MessagePack (a cluster worker's).
#[cfg(feature = "cluster")]
fn decode_message_pack<T: DeserializeOwned>(bytes: &[u8]) -> TaskResult<T> {
    rmp_serde::from_slice::<T>(bytes).map_err(|e| {
        TaskError::Failed(crate::error::TaskFailure::from_message(format!(
            "could not decode the result as {}: {e} (the client and the worker disagree on its \
             result type)",
            std::any::type_name::<T>()
        )))
    })
}

/// A chunk of a task map as one task per input, gathered back into one future.
#[cfg(feature = "cluster")]
mod split {
    use super::{Cow, RemoteBackend, RemoteJob, RemoteRejected, Sink, TaskOptions, Wire};
    use crate::backend::Admission;
    use crate::cancel::CancelToken;
    use crate::error::{Error, TaskError, TaskResult};
    use crate::future::{Future, Promise, promise};
    use crate::sync::Mutex;
    use crate::task::Task;
    use std::sync::Arc;
    use std::time::Duration;

    pub(super) fn send<T: Task>(
        remote: &dyn RemoteBackend,
        task_timeout: Option<Duration>,
        options: TaskOptions,
        chunk: &[T::Args],
    ) -> Result<Future<Vec<TaskResult<T::Output>>>, Error> {
        let (promise, future) = promise::<Vec<TaskResult<T::Output>>>();
        let token = promise.token().clone();
        // One extra count, dropped after the loop, so the chunk cannot complete while it is sent.
        let gather = Arc::new(Mutex::new(Gather {
            results: (0..chunk.len()).map(|_| None).collect(),
            left: chunk.len() + 1,
            promise: Some(promise),
        }));
        let timeout = options.timeout.or(task_timeout);
        for (index, args) in chunk.iter().enumerate() {
            let id = crate::future::TaskId::next().as_u64();
            let frame = match super::encode(
                remote,
                Wire::MessagePack,
                id,
                (T::NAME, super::RunKind::One),
                args,
            ) {
                Ok(frame) => frame,
                Err(message) => {
                    Gather::set(
                        &gather,
                        index,
                        Err(TaskError::Codec(format!(
                            "the arguments of task {:?} could not be sent: {message}",
                            T::NAME
                        ))),
                    );
                    continue;
                }
            };
            let job = RemoteJob {
                id,
                priority: options.priority,
                task: Cow::Borrowed(T::NAME),
                frame,
                sink: Box::new(Input::<T::Output> {
                    index,
                    gather: Arc::clone(&gather),
                    token: token.clone(),
                    timeout,
                }),
            };
            match remote.execute_remote(job, Admission::Wait) {
                Ok(()) => {}
                Err(rejected) => {
                    // The inputs already sent are cancelled with the chunk: they share its token.
                    future.cancel();
                    return Err(match rejected {
                        RemoteRejected::Failed(error) => error,
                        RemoteRejected::ShutDown | RemoteRejected::Full => Error::ShutDown,
                    });
                }
            }
        }
        Gather::done(&gather);
        Ok(future)
    }

    /// The sink of one input of a chunk: its outcome goes to its place in the chunk, its start
    /// marks the chunk running, and the chunk's token is its token (cancelling the chunk cancels
    /// every input).
    struct Input<R> {
        index: usize,
        gather: Arc<Mutex<Gather<R>>>,
        token: CancelToken,
        timeout: Option<Duration>,
    }

    impl<R: serde::de::DeserializeOwned + Send + 'static> Sink for Input<R> {
        fn start(&self) -> bool {
            match self.gather.lock().promise.as_ref() {
                Some(promise) => {
                    promise.start();
                    true
                }
                None => false,
            }
        }

        fn token(&self) -> &CancelToken {
            &self.token
        }

        fn timeout(&self) -> Option<Duration> {
            self.timeout
        }

        fn complete(self: Box<Self>, outcome: Result<&[u8], TaskError>) {
            let decoded = outcome.and_then(super::decode_message_pack::<R>);
            Gather::set(&self.gather, self.index, decoded);
        }
    }

    /// The outcomes of a chunk's inputs as they arrive.
    struct Gather<R> {
        results: Vec<Option<TaskResult<R>>>,
        left: usize,
        promise: Option<Promise<Vec<TaskResult<R>>>>,
    }

    impl<R> Gather<R> {
        fn set(gather: &Mutex<Gather<R>>, index: usize, result: TaskResult<R>) {
            let mut g = gather.lock();
            if let Some(slot) = g.results.get_mut(index) {
                *slot = Some(result);
            }
            Gather::count_down(g);
        }

        fn done(gather: &Mutex<Gather<R>>) {
            Gather::count_down(gather.lock());
        }

        fn count_down(mut g: crate::sync::MutexGuard<'_, Gather<R>>) {
            g.left -= 1;
            if g.left > 0 {
                return;
            }
            let promise = g.promise.take();
            let results = std::mem::take(&mut g.results)
                .into_iter()
                .map(|r| r.unwrap_or(Err(TaskError::Cancelled)))
                .collect();
            drop(g);
            if let Some(promise) = promise {
                promise.complete(Ok(results));
            }
        }
    }
}
