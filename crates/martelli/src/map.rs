//! [`Pool::map`]: a lazy parallel map that pulls inputs only as workers free up.
//!
//! The window (chunks in flight, chunk sizing, hand-out in order) is the core it shares with
//! [`Pool::map_task`](crate::Pool::map_task), in [`window`](crate::window). What is its own is the
//! chunk: a closure run over a vector of inputs on a worker of this process, which writes every
//! value in place into one vector and sets apart the few items that panicked ([`run_chunk`]). Both
//! vectors come from earlier chunks when the window kept them (see [`window`](crate::window)), and
//! the inputs' vector goes back drained, for a later chunk.

use crate::error::{Error, TaskError, TaskFailure, TaskResult};
use crate::future::Future;
use crate::options::TaskOptions;
use crate::pool::Pool;
use crate::window::{ChunkOutput, Chunks, Refused, Sizing, Spares, Window, room_for};
use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Automatic chunking aims at chunks of about 200 µs, so that the cost of handing a chunk to a worker
/// (a few microseconds) stays small beside the work in it, and at most 16 Ki inputs.
const SIZING: Sizing = Sizing {
    target: Duration::from_micros(200),
    max: 16 * 1024,
    growth: None,
};

/// What a chunk of `map` resolves to: its output, and the vector its inputs came in (drained), for
/// a later chunk.
struct Ran<A, T> {
    output: ChunkOutput<T>,
    inputs: Vec<A>,
}

/// Runs `f` over a chunk, writing each value in place into `values` (emptied first). A panic is
/// caught for the chunk, not for each item (so the loop over items is as tight as a plain one): the
/// item that panicked is recorded at its position and the loop resumes with the next item.
fn run_chunk<A, T>(f: &impl Fn(A) -> T, mut items: Vec<A>, values: Vec<T>) -> Ran<A, T> {
    let start = Instant::now();
    let mut values = room_for(values, items.len());
    let mut failures = Vec::new();
    let mut drain = items.drain(..);
    loop {
        // `extend` over an exact-size iterator writes in place and keeps the length of what it
        // wrote when `f` unwinds out of it.
        let ran = catch_unwind(AssertUnwindSafe(|| values.extend((&mut drain).map(f))));
        match ran {
            Ok(()) => break,
            // The panicking item was taken from `drain` and produced no value: its position is the
            // count of outcomes before it.
            Err(payload) => {
                failures.push((values.len() + failures.len(), TaskError::panicked(payload)))
            }
        }
    }
    drop(drain);
    Ran {
        output: ChunkOutput {
            values,
            failures,
            elapsed: Some(start.elapsed()),
        },
        inputs: items,
    }
}

/// How `Pool::map` sends a chunk: as a closure over the shared `f`.
struct Closure<F, A, T> {
    f: Arc<F>,
    types: PhantomData<fn(A) -> T>,
}

impl<F, A, T> Chunks for Closure<F, A, T>
where
    A: Send + 'static,
    F: Fn(A) -> T + Send + Sync + 'static,
    T: Send + 'static,
{
    type In = A;
    type Out = T;
    type Done = Ran<A, T>;

    fn submit(
        &mut self,
        pool: &Pool,
        options: TaskOptions,
        items: Vec<A>,
        values: Vec<T>,
    ) -> Result<Future<Ran<A, T>>, Refused> {
        let f = Arc::clone(&self.f);
        pool.with(options)
            .submit(move || run_chunk(&*f, items, values))
            .map_err(|error| match error {
                // A closure cannot reach workers that are other processes: the inputs taken say so,
                // and no more are taken.
                Error::NotATask { backend } => Refused {
                    error: TaskError::Failed(TaskFailure::from_message(format!(
                        "Pool::map runs a closure, which the {backend} backend cannot run (its \
                         workers are other processes): map a #[martelli::task] function with \
                         Pool::map_task"
                    ))),
                    stop: true,
                },
                // The pool is shut down: every input of the chunk gets an outcome all the same.
                _ => Refused {
                    error: TaskError::Cancelled,
                    stop: false,
                },
            })
    }

    fn output(done: Ran<A, T>, inputs: &mut Spares<A>) -> ChunkOutput<T> {
        inputs.keep(done.inputs);
        done.output
    }
}

/// The iterator [`Pool::map`] returns: results in input order ([`ordered`](Map::ordered), the
/// default) or in completion order ([`unordered`](Map::unordered)), one `Result` per input.
///
/// It is lazy: at most [`window`](Map::window) chunks are in flight, so an endless iterator of
/// inputs works in bounded memory (Python's `Executor.map` reads every input first). Tiny tasks are
/// grouped into chunks automatically — sized so each chunk runs about 200 µs — unless
/// [`chunk`](Map::chunk) fixes the size. A panic fails only its own input.
///
/// ```
/// use martelli::Pool;
///
/// let pool = Pool::threads(2)?;
/// // An endless input: only what is consumed is computed.
/// let squares: Vec<u64> = pool
///     .map(|x: u64| x * x, 0..)
///     .take(5)
///     .collect::<Result<_, _>>()?;
/// assert_eq!(squares, [0, 1, 4, 9, 16]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Map<'p, I: Iterator, F, T> {
    window: MapWindow<'p, I, F, T>,
}

/// The window of a [`Map`]: chunks of `I`'s items sent as closures over `f`.
type MapWindow<'p, I, F, T> =
    Window<'p, I, Closure<F, <I as Iterator>::Item, T>, Ran<<I as Iterator>::Item, T>, T>;

impl<'p, I, F, T> Map<'p, I, F, T>
where
    I: Iterator,
    I::Item: Send + 'static,
    F: Fn(I::Item) -> T + Send + Sync + 'static,
    T: Send + 'static,
{
    pub(crate) fn new(pool: &'p Pool, f: F, inputs: I) -> Self {
        let chunks = Closure {
            f: Arc::new(f),
            types: PhantomData,
        };
        Map {
            window: Window::new(pool, chunks, inputs, SIZING),
        }
    }

    /// Results in input order (the default).
    pub fn ordered(mut self) -> Self {
        self.window.ordered();
        self
    }

    /// Results as they finish: a slow item does not hold back the ones after it.
    pub fn unordered(mut self) -> Self {
        self.window.unordered();
        self
    }

    /// Sends inputs to workers `n` at a time instead of sizing chunks automatically (`n` = 0 is taken
    /// as 1).
    pub fn chunk(mut self, n: usize) -> Self {
        self.window.set_chunk(n);
        self
    }

    /// At most `n` chunks in flight (default: twice the workers; `n` = 0 is taken as 1). Memory use is
    /// bounded by `window × chunk` inputs and results, plus a few emptied chunk buffers kept for
    /// later chunks (two of each kind).
    pub fn window(mut self, n: usize) -> Self {
        self.window.set_window(n);
        self
    }

    /// Per-chunk task options (priority, timeout): set through [`Pool::with`](crate::Pool::with).
    pub(crate) fn options(mut self, options: TaskOptions) -> Self {
        self.window.set_options(options);
        self
    }
}

impl<I, F, T> Iterator for Map<'_, I, F, T>
where
    I: Iterator,
    I::Item: Send + 'static,
    F: Fn(I::Item) -> T + Send + Sync + 'static,
    T: Send + 'static,
{
    type Item = TaskResult<T>;

    #[inline]
    fn next(&mut self) -> Option<TaskResult<T>> {
        self.window.next()
    }
}

impl<I: Iterator, F, T> fmt::Debug for Map<'_, I, F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map")
            .field("chunk", &self.window.chunk())
            .field("window", &self.window.window())
            .field("buffered", &self.window.buffered())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Applies `f` to every input on the pool's workers, lazily; see [`Map`]. For inputs already
    /// in a slice, when every result is wanted at once, [`map_slice`](Pool::map_slice) is faster:
    /// it writes results in place instead of handing each one through this iterator.
    pub fn map<F, I, T>(&self, f: F, inputs: I) -> Map<'_, I::IntoIter, F, T>
    where
        I: IntoIterator,
        I::Item: Send + 'static,
        F: Fn(I::Item) -> T + Send + Sync + 'static,
        T: Send + 'static,
    {
        Map::new(self, f, inputs.into_iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::Cursor;

    fn drain<T>(mut cursor: Cursor<T>) -> Vec<Result<T, String>> {
        std::iter::from_fn(|| cursor.next())
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    }

    #[test]
    fn run_chunk_keeps_order_and_isolates_panicking_items() {
        let ran = run_chunk(
            &|x: u32| {
                assert!(x != 2 && x != 3 && x != 6, "{x} is not allowed");
                x * 10
            },
            vec![0, 1, 2, 3, 4, 5, 6],
            vec![99; 3],
        );
        assert!(ran.inputs.is_empty() && ran.inputs.capacity() >= 7);
        let got = drain(Cursor::ran(ran.output));
        assert_eq!(got.len(), 7);
        assert_eq!(got[0], Ok(0));
        assert_eq!(got[1], Ok(10));
        assert!(
            got[2]
                .as_ref()
                .is_err_and(|e| e.contains("2 is not allowed"))
        );
        assert!(
            got[3]
                .as_ref()
                .is_err_and(|e| e.contains("3 is not allowed"))
        );
        assert_eq!(got[4], Ok(40));
        assert_eq!(got[5], Ok(50));
        assert!(
            got[6]
                .as_ref()
                .is_err_and(|e| e.contains("6 is not allowed"))
        );
    }
}
