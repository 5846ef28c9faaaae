//! [`Submitter`]: the pool's verbs with per-call options, and where each submission becomes a job.

use super::Pool;
use super::remote::{
    ChunkBody, NamedBody, TaskBody, decode_value, plain, send_chunk, send_remote, value,
};
use crate::backend::{Admission, Rejected, RunKind};
use crate::capture::{Captured, CapturedSink};
use crate::cell::{CellJob, CellTimeout, new_task};
use crate::error::{Error, TaskResult, TrySubmitError};
use crate::future::{Future, Promise};
use crate::job::{Body, Fallible, Plain, Timeout};
use crate::map::Map;
use crate::map_async::MapAsync;
use crate::options::TaskOptions;
use crate::task::Task;
use crate::task_future::async_task;
use crate::task_map::TaskMap;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use std::sync::Arc;

/// The verbs of a [`Pool`] with [`TaskOptions`] for one call: what [`Pool::with`] returns.
///
/// It has the pool's own names and argument order — `submit`, `try_submit`, `submit_fallible`,
/// `submit_async`, `block_on`, `submit_task`, `submit_task_captured`, `submit_named`, `map`,
/// `map_task`, `map_async` — so per-call options never need a second method. It borrows the pool
/// and costs nothing to make.
///
/// ```
/// use martelli::{Pool, Priority, TaskOptions};
/// use std::time::Duration;
///
/// let pool = Pool::threads(2)?;
/// let background = pool.with(Priority::Low);
/// let a = background.submit(|| 1)?;
/// let b = background.submit(|| 2)?;
/// let quick = TaskOptions::new().timeout(Duration::from_secs(10));
/// let squares: Vec<u64> = pool
///     .with(quick)
///     .map(|n: u64| n * n, 1..=3)
///     .collect::<Result<_, _>>()?;
/// assert_eq!((a.wait()?, b.wait()?, squares), (1, 2, vec![1, 4, 9]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Submitter<'a> {
    pool: &'a Pool,
    options: TaskOptions,
}

impl<'a> Submitter<'a> {
    #[inline]
    pub(super) fn new(pool: &'a Pool, options: TaskOptions) -> Submitter<'a> {
        Submitter { pool, options }
    }

    /// The options every call through this submitter uses.
    pub fn options(&self) -> TaskOptions {
        self.options
    }

    /// [`Pool::submit`] with these options.
    #[inline]
    pub fn submit<F, T>(&self, f: F) -> Result<Future<T>, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.pool.closures_allowed()?;
        self.submit_body(Plain(f), Admission::Wait)
            .map_err(|_| Error::ShutDown)
    }

    /// [`Pool::try_submit`] with these options.
    #[inline]
    pub fn try_submit<F, T>(&self, f: F) -> Result<Future<T>, TrySubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if self.pool.closures_allowed().is_err() {
            return Err(TrySubmitError::NotATask(f));
        }
        match self.submit_body(Plain(f), Admission::Try) {
            Ok(future) => Ok(future),
            Err(rejected) => {
                let (job, full) = match rejected {
                    Rejected::Full(job) => (job, true),
                    Rejected::ShutDown(job) => (job, false),
                };
                match job.into_body::<Plain<F>, T>() {
                    Some(Plain(f)) if full => Err(TrySubmitError::Full(f)),
                    Some(Plain(f)) => Err(TrySubmitError::ShutDown(f)),
                    None => unreachable!("the job built above holds a Plain<F> that has not run"),
                }
            }
        }
    }

    /// [`Pool::submit_fallible`] with these options.
    #[inline]
    pub fn submit_fallible<F, T, E>(&self, f: F) -> Result<Future<T>, Error>
    where
        F: FnOnce() -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        self.pool.closures_allowed()?;
        self.submit_body(Fallible(f), Admission::Wait)
            .map_err(|_| Error::ShutDown)
    }

    /// [`Pool::submit_async`] with these options (timeout, name, priority where the backend has a
    /// queue).
    pub fn submit_async<F>(&self, fut: F) -> Result<Future<F::Output>, Error>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let pool = self.pool;
        pool.closures_allowed()?;
        // The timeout is armed by the driver, on its cell: the promise expirer is not used.
        let timeout = self.timeout_for(Promise::<F::Output>::expirer);
        let (task, future, token) =
            async_task(fut, timeout, pool.detector.clone(), self.options.name);
        #[cfg(feature = "async")]
        if let Some(event_loop) = pool.backend.event_loop() {
            return event_loop.spawn_driver(task, token).map(|()| future);
        }
        pool.backend
            .spawn_task(Box::pin(task), token, self.options.priority)
            .map(|()| future)
    }

    /// [`Pool::block_on`] with these options.
    pub fn block_on<F>(&self, fut: F) -> Result<TaskResult<F::Output>, Error>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        #[cfg(feature = "async")]
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::WouldBlockRuntime);
        }
        Ok(self.submit_async(fut)?.wait())
    }

    /// [`Pool::submit_task`] with these options. On the processes backend a timeout is hard: the
    /// worker running the task is killed with its process group and replaced.
    pub fn submit_task<T: Task>(
        &self,
        _task: T,
        args: T::Args,
    ) -> Result<Future<T::Output>, Error> {
        match self.pool.backend.remote() {
            Some(_) => self.submit_remote::<T::Args, T::Output>(Cow::Borrowed(T::NAME), &args),
            None => self
                .submit_body(TaskBody::<T>(args), Admission::Wait)
                .map_err(|_| Error::ShutDown),
        }
    }

    /// [`Pool::submit_named`] with these options.
    pub fn submit_named<A, R>(&self, name: &str, args: A) -> Result<Future<R>, Error>
    where
        A: Serialize,
        R: DeserializeOwned + Send + 'static,
    {
        if self.pool.backend.remote().is_some() {
            return self.submit_remote::<A, R>(Cow::Owned(name.to_owned()), &args);
        }
        let encoded = postcard::to_stdvec(&args)
            .map_err(|e| Error::InvalidConfig(format!("the arguments do not encode: {e}")))?;
        let body = NamedBody {
            name: name.to_owned(),
            args: encoded,
        };
        self.submit_body(body, Admission::Wait)
            .map_err(|_| Error::ShutDown)
    }

    /// [`Pool::submit_task_captured`] with these options.
    pub fn submit_task_captured<T: Task>(
        &self,
        _task: T,
        args: T::Args,
    ) -> Result<Future<Captured<T::Output>>, Error> {
        let backend = &*self.pool.backend;
        if !backend.captures_output() {
            return Err(Error::CaptureNeedsProcesses {
                backend: backend.kind(),
            });
        }
        send_remote(
            backend,
            self.pool.task_timeout,
            self.options,
            (Cow::Borrowed(T::NAME), RunKind::Captured),
            &args,
            |promise, timeout, _| {
                Box::new(CapturedSink::new(
                    promise,
                    timeout,
                    decode_value::<T::Output>,
                ))
            },
        )
    }

    /// [`Pool::map`] with these options for every chunk it submits.
    pub fn map<F, I, T>(&self, f: F, inputs: I) -> Map<'a, I::IntoIter, F, T>
    where
        F: Fn(I::Item) -> T + Send + Sync + 'static,
        I: IntoIterator,
        I::Item: Send + 'static,
        T: Send + 'static,
    {
        self.pool.map(f, inputs).options(self.options)
    }

    /// [`Pool::map_task`] with these options for every chunk it submits.
    pub fn map_task<T, I>(&self, task: T, inputs: I) -> TaskMap<'a, T, I::IntoIter>
    where
        T: Task,
        I: IntoIterator<Item = T::Args>,
    {
        self.pool.map_task(task, inputs).options(self.options)
    }

    /// [`Pool::map_async`] with these options for every task it submits.
    pub fn map_async<I, F, Fut>(&self, f: F, inputs: I) -> MapAsync<'a, I::IntoIter, F, Fut::Output>
    where
        I: IntoIterator,
        F: FnMut(I::Item) -> Fut,
        Fut: std::future::Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        self.pool.map_async(f, inputs).options(self.options)
    }

    /// Puts `body` into a task cell (one allocation: the closure, the future's state and the token)
    /// and hands its job to the backend.
    #[inline]
    fn submit_body<B, T>(
        &self,
        body: B,
        admission: Admission,
    ) -> Result<Future<T>, Rejected<CellJob>>
    where
        B: Body<T> + 'static,
        T: Send + 'static,
    {
        let pool = self.pool;
        let timeout = self
            .options
            .timeout
            .or(pool.task_timeout)
            .map(|after| CellTimeout {
                after,
                watchdog: Arc::clone(&pool.watchdog),
            });
        let (job, future) = new_task(body, timeout);
        pool.backend
            .execute_cell(job, self.options.priority, admission)
            .map(|()| future)
    }

    fn timeout_for<T>(
        &self,
        expirer: fn(&Promise<T>) -> crate::future::Expirer,
    ) -> Option<Timeout<T>> {
        let pool = self.pool;
        self.options
            .timeout
            .or(pool.task_timeout)
            .map(|after| Timeout {
                after,
                watchdog: Arc::clone(&pool.watchdog),
                expirer,
            })
    }

    fn submit_remote<A, R>(&self, name: Cow<'static, str>, args: &A) -> Result<Future<R>, Error>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        send_remote(
            &*self.pool.backend,
            self.pool.task_timeout,
            self.options,
            (name, RunKind::One),
            args,
            plain(value::<R>()),
        )
    }

    /// Sends a chunk of a task map: every item runs on one worker, one round trip.
    pub(crate) fn submit_chunk<T: Task>(
        &self,
        chunk: Vec<T::Args>,
    ) -> Result<Future<Vec<TaskResult<T::Output>>>, Error> {
        let pool = self.pool;
        if pool.backend.remote().is_some() {
            return send_chunk::<T>(&*pool.backend, pool.task_timeout, self.options, &chunk);
        }
        self.submit_body(ChunkBody::<T>(chunk), Admission::Wait)
            .map_err(|_| Error::ShutDown)
    }
}
