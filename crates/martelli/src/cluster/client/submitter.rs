//! [`Submitter`]: the client's verbs with [`SubmitOptions`] for one call.

use super::{Client, SubmitOptions};
use crate::cluster::error::ClusterError;
use crate::cluster::sink;
use crate::future::{Future, promise};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The verbs of a [`Client`] with [`SubmitOptions`] for one call: what [`Client::with`] returns.
///
/// The same shape as a pool's ([`Pool::with`](crate::Pool::with)): the client's own names and
/// argument order — `submit`, `submit_raw`, `send`, `send_raw` — so per-call options never need a
/// second method.
///
/// ```no_run
/// use martelli::cluster::{Client, SubmitOptions};
/// use martelli::Priority;
/// use std::time::Duration;
///
/// let client = Client::connect("redis://127.0.0.1/")?;
/// let urgent = client.with(Priority::High);
/// let a = urgent.submit::<_, u64>("add", &(1, 2))?;
/// let quick = SubmitOptions::new().timeout(Duration::from_secs(30)).max_attempts(5);
/// let id = client.with(quick).send("report", "weekly")?;
/// assert_eq!(a.wait()?, 3);
/// # let _ = id;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Submitter<'a> {
    client: &'a Client,
    options: SubmitOptions,
}

impl<'a> Submitter<'a> {
    pub(super) fn new(client: &'a Client, options: SubmitOptions) -> Submitter<'a> {
        Submitter { client, options }
    }

    /// The options every call through this submitter uses.
    pub fn options(&self) -> &SubmitOptions {
        &self.options
    }

    /// [`Client::submit`] with these options.
    pub fn submit<A, R>(&self, task: &str, args: &A) -> Result<Future<R>, ClusterError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + Send + 'static,
    {
        let payload = rmp_serde::to_vec_named(args)?;
        let (promise, future) = promise::<R>();
        let inner = &self.client.inner;
        let id = inner.enqueue(
            task,
            payload,
            &self.options,
            Some(sink::decode_into(task, promise)),
        )?;
        inner.watch_cancel(future.token(), vec![id]);
        Ok(future)
    }

    /// [`Client::submit_raw`] with these options.
    pub fn submit_raw(
        &self,
        task: &str,
        payload: impl Into<Vec<u8>>,
    ) -> Result<Future<Vec<u8>>, ClusterError> {
        let (promise, future) = promise::<Vec<u8>>();
        let inner = &self.client.inner;
        let id = inner.enqueue(
            task,
            payload.into(),
            &self.options,
            Some(sink::raw(promise)),
        )?;
        inner.watch_cancel(future.token(), vec![id]);
        Ok(future)
    }

    /// [`Client::send`] with these options.
    pub fn send<A>(&self, task: &str, args: &A) -> Result<String, ClusterError>
    where
        A: Serialize + ?Sized,
    {
        let payload = rmp_serde::to_vec_named(args)?;
        self.client
            .inner
            .enqueue(task, payload, &self.options, None)
    }

    /// [`Client::send_raw`] with these options.
    pub fn send_raw(
        &self,
        task: &str,
        payload: impl Into<Vec<u8>>,
    ) -> Result<String, ClusterError> {
        self.client
            .inner
            .enqueue(task, payload.into(), &self.options, None)
    }
}
