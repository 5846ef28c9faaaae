//! [`Pool::map_task`]: a lazy, chunked, ordered map of a [`Task`] over many inputs, on any backend.
//! On a process pool each chunk is one round trip to a worker, so tiny tasks cost a fraction of a
//! round trip each.
//!
//! The window (chunks in flight, chunk sizing, hand-out in order) is the core it shares with
//! [`Pool::map`](crate::Pool::map), in [`window`](crate::window); what is its own is the chunk: a
//! batch of argument tuples for a registered task, which may cross to another process or machine.

use crate::error::{TaskError, TaskResult};
use crate::future::Future;
use crate::options::TaskOptions;
use crate::pool::Pool;
use crate::task::Task;
use crate::window::{ChunkOutput, Chunks, Refused, Sizing, Spares, Window};
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

/// Automatic chunking aims at chunks that keep a worker busy for about 2 ms, so that the cost of a
/// round trip (tens of microseconds to a process) stays small beside the work in it; chunks start at
/// one input and grow at most 8× per step (so one fast outlier does not jump to a huge chunk), up to
/// 8 Ki inputs. The time measured is from submission to completion, queueing included: an
/// overestimate, so chunks err on the small side.
const SIZING: Sizing = Sizing {
    target: Duration::from_millis(2),
    max: 8 * 1024,
    growth: Some(8),
};

/// What a chunk of `map_task` resolves to: one outcome per input.
type Batch<T> = Vec<TaskResult<<T as Task>::Output>>;

/// How `Pool::map_task` sends a chunk: by the task's name, on any backend.
struct ByName<T>(PhantomData<fn() -> T>);

impl<T: Task> Chunks for ByName<T> {
    type In = T::Args;
    type Out = T::Output;
    type Done = Batch<T>;

    fn submit(
        &mut self,
        pool: &Pool,
        options: TaskOptions,
        items: Vec<T::Args>,
        // A batch's outcomes come back in a vector of their own (decoded, on a process pool).
        _values: Vec<T::Output>,
    ) -> Result<Future<Self::Done>, Refused> {
        pool.with(options)
            .submit_chunk::<T>(items)
            .map_err(|e| Refused {
                error: TaskError::Codec(format!("the chunk was not taken: {e}")),
                stop: false,
            })
    }

    fn output(done: Self::Done, _inputs: &mut Spares<T::Args>) -> ChunkOutput<T::Output> {
        ChunkOutput::from_results(done)
    }
}

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
    window: Window<'p, I, ByName<T>, Batch<T>, T::Output>,
}

impl<'p, T: Task, I: Iterator<Item = T::Args>> TaskMap<'p, T, I> {
    pub(crate) fn new(pool: &'p Pool, inputs: I) -> Self {
        TaskMap {
            window: Window::new(pool, ByName(PhantomData), inputs, SIZING),
        }
    }

    /// Sends inputs `n` at a time instead of sizing chunks automatically (0 is taken as 1).
    pub fn chunk(mut self, n: usize) -> Self {
        self.window.set_chunk(n);
        self
    }

    /// At most `n` chunks in flight (default: twice the workers; 0 is taken as 1).
    pub fn window(mut self, n: usize) -> Self {
        self.window.set_window(n);
        self
    }

    /// Per-chunk options (priority; a timeout applies to each chunk as a whole): set through
    /// [`Pool::with`](crate::Pool::with).
    pub(crate) fn options(mut self, options: TaskOptions) -> Self {
        self.window.set_options(options);
        self
    }
}

impl<T: Task, I: Iterator<Item = T::Args>> Iterator for TaskMap<'_, T, I> {
    type Item = TaskResult<T::Output>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.window.next()
    }
}

impl<T: Task, I: Iterator<Item = T::Args>> fmt::Debug for TaskMap<'_, T, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskMap")
            .field("task", &T::NAME)
            .field("chunk", &self.window.chunk())
            .field("window", &self.window.window())
            .field("buffered", &self.window.buffered())
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
