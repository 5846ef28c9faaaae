//! [`Pool::map_task`]: a lazy, chunked, ordered map of a [`Task`] over many inputs, on any backend.
//! On a process pool each chunk is one round trip to a worker, so tiny tasks cost a fraction of a
//! round trip each.

use crate::error::TaskResult;
use crate::future::Future;
use crate::map::replicate;
use crate::options::TaskOptions;
use crate::pool::Pool;
use crate::task::Task;
use std::collections::VecDeque;
use std::fmt;
use std::iter::Fuse;
use std::time::{Duration, Instant};

/// What automatic chunking aims at: chunks that keep a worker busy for about this long, so that the
/// cost of a round trip (tens of microseconds to a process) stays small beside the work in it.
const TARGET_CHUNK_TIME: Duration = Duration::from_millis(2);
/// The largest automatic chunk.
const MAX_AUTO_CHUNK: usize = 8 * 1024;

/// A chunk on its way: its length, when it was sent, and the future of its results.
type InFlight<V> = (usize, Instant, Future<Vec<TaskResult<V>>>);

/// The iterator [`Pool::map_task`] returns: one `Result` per input, in input order.
///
/// It is lazy: at most [`window`](TaskMap::window) chunks are in flight, so an endless input works in
/// bounded memory. Chunks start at one input and grow (up to 8,192) until each takes about 2 ms,
/// unless [`chunk`](TaskMap::chunk) fixes their size. A worker that dies or a timeout fails every
/// input of its chunk with the same outcome; a task's own error or panic fails only its input.
///
/// ```
/// #[martelli::task]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// let pool = martelli::Pool::threads(2)?; // or a process pool: the same call
/// let squares = pool.map_task(square, (1..=4u64).map(|x| (x,)));
/// assert_eq!(squares.collect::<Result<Vec<_>, _>>()?, [1, 4, 9, 16]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TaskMap<'p, T: Task, I: Iterator<Item = T::Args>> {
    pool: &'p Pool,
    inputs: Fuse<I>,
    options: TaskOptions,
    fixed_chunk: bool,
    chunk: usize,
    window: usize,
    in_flight: VecDeque<InFlight<T::Output>>,
    out: VecDeque<TaskResult<T::Output>>,
}

impl<'p, T: Task, I: Iterator<Item = T::Args>> TaskMap<'p, T, I> {
    pub(crate) fn new(pool: &'p Pool, inputs: I) -> Self {
        TaskMap {
            pool,
            inputs: inputs.fuse(),
            options: TaskOptions::default(),
            fixed_chunk: false,
            chunk: 1,
            window: (pool.workers() * 2).max(2),
            in_flight: VecDeque::new(),
            out: VecDeque::new(),
        }
    }

    /// Sends inputs `n` at a time instead of sizing chunks automatically (0 is taken as 1).
    pub fn chunk(mut self, n: usize) -> Self {
        self.chunk = n.max(1);
        self.fixed_chunk = true;
        self
    }

    /// At most `n` chunks in flight (default: twice the workers; 0 is taken as 1).
    pub fn window(mut self, n: usize) -> Self {
        self.window = n.max(1);
        self
    }

    /// Per-chunk options (priority; a timeout applies to each chunk as a whole): set through
    /// [`Pool::with`](crate::Pool::with).
    pub(crate) fn options(mut self, options: TaskOptions) -> Self {
        self.options = options;
        self
    }

    /// Submits chunks until the window is full or the inputs run out.
    fn fill(&mut self) {
        while self.in_flight.len() < self.window {
            let chunk: Vec<T::Args> = self.inputs.by_ref().take(self.chunk).collect();
            if chunk.is_empty() {
                return;
            }
            let len = chunk.len();
            match self.pool.with(self.options).submit_chunk::<T>(chunk) {
                Ok(future) => self.in_flight.push_back((len, Instant::now(), future)),
                Err(e) => {
                    let e = crate::error::TaskError::Codec(format!("the chunk was not taken: {e}"));
                    self.out.extend((0..len).map(|_| Err(replicate(&e))));
                    return;
                }
            }
        }
    }

    /// Grows (or shrinks) automatic chunks toward the target time, from a chunk that took `took`.
    fn adapt(&mut self, len: usize, took: Duration) {
        if self.fixed_chunk || len < self.chunk {
            return;
        }
        // The time is from submission to completion, queueing included: an overestimate, so chunks
        // err on the small side.
        let per_item = took.as_nanos().max(1) / len as u128;
        let ideal = (TARGET_CHUNK_TIME.as_nanos() / per_item.max(1)) as usize;
        // Grow at most 8× per step, so one fast outlier does not jump to a huge chunk.
        self.chunk = ideal.clamp(1, (self.chunk * 8).min(MAX_AUTO_CHUNK));
    }
}

impl<T: Task, I: Iterator<Item = T::Args>> Iterator for TaskMap<'_, T, I> {
    type Item = TaskResult<T::Output>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(result) = self.out.pop_front() {
                return Some(result);
            }
            self.fill();
            if !self.out.is_empty() {
                continue;
            }
            let (len, sent, future) = self.in_flight.pop_front()?;
            match future.wait() {
                Ok(results) => {
                    self.adapt(len, sent.elapsed());
                    self.out.extend(results);
                }
                Err(e) => self.out.extend((0..len).map(|_| Err(replicate(&e)))),
            }
        }
    }
}

impl<T: Task, I: Iterator<Item = T::Args>> fmt::Debug for TaskMap<'_, T, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskMap")
            .field("task", &T::NAME)
            .field("chunk", &self.chunk)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Maps a [`#[martelli::task]`](crate::task) over `inputs` (argument tuples), lazily and in
    /// chunks, with results in input order. On a process pool a chunk is one round trip to a worker.
    /// See [`TaskMap`].
    pub fn map_task<T, I>(&self, _task: T, inputs: I) -> TaskMap<'_, T, I::IntoIter>
    where
        T: Task,
        I: IntoIterator<Item = T::Args>,
    {
        TaskMap::new(self, inputs.into_iter())
    }
}
