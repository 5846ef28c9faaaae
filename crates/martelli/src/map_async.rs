//! [`Pool::map_async`]: an async function over many inputs, with a limit on how many run at once.

use crate::error::{TaskError, TaskResult};
use crate::future::Future;
use crate::options::TaskOptions;
use crate::pool::Pool;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::iter::Fuse;
use std::sync::mpsc::{self, Receiver, Sender};

/// The iterator [`Pool::map_async`] returns: one `Result` per input, in input order (the default) or
/// as tasks finish ([`unordered`](MapAsync::unordered)). At most [`concurrency`](MapAsync::concurrency)
/// tasks are in flight, and inputs are pulled only as tasks finish, so an endless input works in bounded
/// memory and a server is never sent more requests at once than the limit.
///
/// ```
/// use martelli::Pool;
/// use std::time::Duration;
///
/// let pool = Pool::event_loop()?;
/// let replies: Vec<String> = pool
///     .map_async(
///         |id: u32| async move {
///             tokio::time::sleep(Duration::from_millis(1)).await; // a request
///             format!("reply {id}")
///         },
///         0..100,
///     )
///     .concurrency(10)
///     .collect::<Result<_, _>>()?;
/// assert_eq!(replies[42], "reply 42");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MapAsync<'p, I: Iterator, F, T> {
    pool: &'p Pool,
    f: F,
    inputs: Fuse<I>,
    options: TaskOptions,
    limit: usize,
    ordered: VecDeque<Future<T>>,
    unordered: Option<Unordered<T>>,
    refused: usize,
}

struct Unordered<T> {
    running: HashMap<u64, Future<T>>,
    done_tx: Sender<u64>,
    done_rx: Receiver<u64>,
}

impl<'p, I, F, Fut> MapAsync<'p, I, F, Fut::Output>
where
    I: Iterator,
    F: FnMut(I::Item) -> Fut,
    Fut: std::future::Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    /// At most `n` tasks in flight (default 100; 0 is taken as 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.limit = n.max(1);
        self
    }

    /// Results as tasks finish instead of in input order.
    pub fn unordered(mut self) -> Self {
        let (done_tx, done_rx) = mpsc::channel();
        self.unordered = Some(Unordered {
            running: HashMap::new(),
            done_tx,
            done_rx,
        });
        self
    }

    /// Options for every task (timeout, name): set through [`Pool::with`](crate::Pool::with).
    pub(crate) fn options(mut self, options: TaskOptions) -> Self {
        self.options = options;
        self
    }

    fn in_flight(&self) -> usize {
        self.unordered
            .as_ref()
            .map_or(self.ordered.len(), |u| u.running.len())
    }

    fn fill(&mut self) {
        while self.in_flight() < self.limit {
            let Some(input) = self.inputs.next() else {
                return;
            };
            match self.pool.with(self.options).submit_async((self.f)(input)) {
                Ok(future) => match &mut self.unordered {
                    None => self.ordered.push_back(future),
                    Some(u) => {
                        let key = future.id().as_u64();
                        let tx = u.done_tx.clone();
                        future.add_hook(Box::new(move || {
                            let _ = tx.send(key);
                        }));
                        u.running.insert(key, future);
                    }
                },
                // The pool is shut down: the input still gets an outcome.
                Err(_) => {
                    self.refused += 1;
                    return;
                }
            }
        }
    }
}

impl<I, F, Fut> Iterator for MapAsync<'_, I, F, Fut::Output>
where
    I: Iterator,
    F: FnMut(I::Item) -> Fut,
    Fut: std::future::Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    type Item = TaskResult<Fut::Output>;

    fn next(&mut self) -> Option<Self::Item> {
        self.fill();
        // Outcomes come in order: finished tasks first (they were submitted earlier), then refusals.
        let next = match &mut self.unordered {
            None => self.ordered.pop_front().map(Future::wait),
            Some(u) if u.running.is_empty() => None,
            Some(u) => {
                let key = u.done_rx.recv().ok()?;
                u.running.remove(&key).map(Future::wait)
            }
        };
        if next.is_some() {
            return next;
        }
        if self.refused > 0 {
            self.refused -= 1;
            return Some(Err(TaskError::Cancelled));
        }
        None
    }
}

impl<I: Iterator, F, T> fmt::Debug for MapAsync<'_, I, F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapAsync")
            .field("concurrency", &self.limit)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Runs the async function `f` over every input with at most 100 tasks in flight (change it with
    /// [`MapAsync::concurrency`]); see [`MapAsync`].
    pub fn map_async<I, F, Fut>(&self, f: F, inputs: I) -> MapAsync<'_, I::IntoIter, F, Fut::Output>
    where
        I: IntoIterator,
        F: FnMut(I::Item) -> Fut,
        Fut: std::future::Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        MapAsync {
            pool: self,
            f,
            inputs: inputs.into_iter().fuse(),
            options: TaskOptions::default(),
            limit: 100,
            ordered: VecDeque::new(),
            unordered: None,
            refused: 0,
        }
    }
}
