//! [`Pool::map`]: a lazy parallel map that pulls inputs only as workers free up.
//!
//! Inputs travel to workers in chunks. A worker returns a chunk's values in one vector, with the few
//! items that panicked set apart by position ([`ChunkOutput`]), so that the consuming thread, which
//! hands out every result one by one, moves one word per item, not a whole `Result` with its error
//! slot; a finished chunk is handed out through a [`Cursor`].

use crate::error::{Error, TaskError, TaskFailure, TaskResult};
use crate::future::Future;
use crate::options::TaskOptions;
use crate::pool::Pool;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::iter::Fuse;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

/// What automatic chunking aims at: chunks that take about this long, so that the cost of handing a
/// chunk to a worker (a few microseconds) stays small beside the work in it.
const TARGET_CHUNK_TIME: Duration = Duration::from_micros(200);
/// The largest automatic chunk.
const MAX_AUTO_CHUNK: usize = 16 * 1024;

/// What a worker returns for one chunk.
struct ChunkOutput<T> {
    /// The values of the items that returned, in input order.
    values: Vec<T>,
    /// The items that panicked: their position in the chunk (ascending) and their outcome.
    failures: Vec<(usize, TaskError)>,
    /// How long the chunk took, for automatic chunking.
    elapsed: Duration,
}

/// Runs `f` over a chunk, catching each item's panic on its own.
fn run_chunk<A, T>(f: &impl Fn(A) -> T, items: Vec<A>) -> ChunkOutput<T> {
    let start = Instant::now();
    let mut values = Vec::with_capacity(items.len());
    let mut failures = Vec::new();
    for (position, item) in items.into_iter().enumerate() {
        match catch_unwind(AssertUnwindSafe(|| f(item))) {
            Ok(value) => values.push(value),
            Err(payload) => failures.push((position, TaskError::panicked(payload))),
        }
    }
    ChunkOutput {
        values,
        failures,
        elapsed: start.elapsed(),
    }
}

/// A finished chunk whose outcomes are being handed out, one per input, in input order.
enum Cursor<T> {
    /// The chunk ran: values, with failures interleaved at their positions.
    Ran {
        values: std::vec::IntoIter<T>,
        failures: std::vec::IntoIter<(usize, TaskError)>,
        /// The position of the next failure (`usize::MAX`: none left), so the common case compares
        /// two words.
        next_failure: usize,
        position: usize,
    },
    /// The chunk as a whole failed (cancelled, timed out, …): each of its `left` inputs gets the
    /// same outcome.
    Failed { error: TaskError, left: usize },
}

/// The position of the first failure in `failures`, `usize::MAX` when there is none.
fn first_position(failures: &[(usize, TaskError)]) -> usize {
    failures
        .first()
        .map_or(usize::MAX, |(position, _)| *position)
}

impl<T> Cursor<T> {
    fn ran(output: ChunkOutput<T>) -> Self {
        let failures = output.failures.into_iter();
        Cursor::Ran {
            values: output.values.into_iter(),
            next_failure: first_position(failures.as_slice()),
            failures,
            position: 0,
        }
    }

    #[inline]
    fn next(&mut self) -> Option<TaskResult<T>> {
        match self {
            Cursor::Ran {
                values,
                failures,
                next_failure,
                position,
            } => {
                let at = *position;
                *position += 1;
                if at != *next_failure {
                    return values.next().map(Ok);
                }
                let (_, error) = failures.next()?;
                *next_failure = first_position(failures.as_slice());
                Some(Err(error))
            }
            Cursor::Failed { error, left } => {
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                Some(Err(replicate(error)))
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Cursor::Ran {
                values, failures, ..
            } => values.len() + failures.len(),
            Cursor::Failed { left, .. } => *left,
        }
    }
}

enum InFlight<T> {
    Ordered(VecDeque<(usize, Future<ChunkOutput<T>>)>),
    Unordered {
        chunks: HashMap<u64, (usize, Future<ChunkOutput<T>>)>,
        done_tx: Sender<u64>,
        done_rx: Receiver<u64>,
    },
}

/// The iterator [`Pool::map`] returns: results in input order ([`ordered`](Map::ordered), the
/// default) or in completion order ([`unordered`](Map::unordered)), one `Result` per input.
///
/// It is lazy: at most [`window`](Map::window) chunks are in flight, so an endless iterator of
/// inputs works in bounded memory (Python's `Executor.map` reads every input first). Tiny tasks are
/// grouped into chunks automatically — sized so each chunk runs about 200 µs — unless
/// [`chunk`](Map::chunk) fixes the size.
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
    pool: &'p Pool,
    f: Arc<F>,
    inputs: Fuse<I>,
    options: TaskOptions,
    fixed_chunk: Option<usize>,
    chunk: usize,
    window: usize,
    in_flight: InFlight<T>,
    /// The finished chunk being handed out, kept out of `ready` so that `next` is a few instructions.
    current: Cursor<T>,
    /// Finished chunks waiting to be handed out, oldest first.
    ready: VecDeque<Cursor<T>>,
    /// The pool refused the closure (its workers are other processes): no more inputs are taken.
    refused: bool,
}

impl<'p, I, F, T> Map<'p, I, F, T>
where
    I: Iterator,
    I::Item: Send + 'static,
    F: Fn(I::Item) -> T + Send + Sync + 'static,
    T: Send + 'static,
{
    pub(crate) fn new(pool: &'p Pool, f: F, inputs: I) -> Self {
        Map {
            pool,
            f: Arc::new(f),
            inputs: inputs.fuse(),
            options: TaskOptions::default(),
            fixed_chunk: None,
            chunk: 1,
            window: (pool.workers() * 2).max(2),
            in_flight: InFlight::Ordered(VecDeque::new()),
            current: Cursor::Failed {
                error: TaskError::Cancelled,
                left: 0,
            },
            ready: VecDeque::new(),
            refused: false,
        }
    }

    /// Results in input order (the default).
    pub fn ordered(mut self) -> Self {
        self.in_flight = InFlight::Ordered(VecDeque::new());
        self
    }

    /// Results as they finish: a slow item does not hold back the ones after it.
    pub fn unordered(mut self) -> Self {
        let (done_tx, done_rx) = mpsc::channel();
        self.in_flight = InFlight::Unordered {
            chunks: HashMap::new(),
            done_tx,
            done_rx,
        };
        self
    }

    /// Sends inputs to workers `n` at a time instead of sizing chunks automatically (`n` = 0 is taken
    /// as 1).
    pub fn chunk(mut self, n: usize) -> Self {
        let n = n.max(1);
        self.fixed_chunk = Some(n);
        self.chunk = n;
        self
    }

    /// At most `n` chunks in flight (default: twice the workers; `n` = 0 is taken as 1). Memory use is
    /// bounded by `window × chunk` inputs and results.
    pub fn window(mut self, n: usize) -> Self {
        self.window = n.max(1);
        self
    }

    /// Per-chunk task options (priority, timeout): set through [`Pool::with`](crate::Pool::with).
    pub(crate) fn options(mut self, options: TaskOptions) -> Self {
        self.options = options;
        self
    }

    fn in_flight_len(&self) -> usize {
        match &self.in_flight {
            InFlight::Ordered(q) => q.len(),
            InFlight::Unordered { chunks, .. } => chunks.len(),
        }
    }

    /// Submits chunks until the window is full or the inputs end.
    fn fill(&mut self) {
        while !self.refused && self.in_flight_len() < self.window {
            let items: Vec<I::Item> = self.inputs.by_ref().take(self.chunk).collect();
            if items.is_empty() {
                return;
            }
            let len = items.len();
            let f = Arc::clone(&self.f);
            let submitted = self
                .pool
                .with(self.options)
                .submit(move || run_chunk(&*f, items));
            match submitted {
                Ok(future) => match &mut self.in_flight {
                    InFlight::Ordered(q) => q.push_back((len, future)),
                    InFlight::Unordered {
                        chunks, done_tx, ..
                    } => {
                        let key = future.id().as_u64();
                        let tx = done_tx.clone();
                        future.add_hook(Box::new(move || {
                            let _ = tx.send(key);
                        }));
                        chunks.insert(key, (len, future));
                    }
                },
                // A closure cannot reach workers that are other processes: the inputs taken say so,
                // and no more are taken (an endless input would otherwise be drained for nothing).
                Err(Error::NotATask { backend }) => {
                    self.refused = true;
                    self.ready.push_back(Cursor::Failed {
                        error: TaskError::Failed(TaskFailure::from_message(format!(
                            "Pool::map runs a closure, which the {backend} backend cannot run (its \
                             workers are other processes): map a #[martelli::task] function with \
                             Pool::map_task"
                        ))),
                        left: len,
                    });
                }
                // The pool is shut down: every input of the chunk gets an outcome all the same.
                Err(_) => self.ready.push_back(Cursor::Failed {
                    error: TaskError::Cancelled,
                    left: len,
                }),
            }
            if !self.ready.is_empty() {
                return;
            }
        }
    }

    fn absorb(&mut self, len: usize, outcome: TaskResult<ChunkOutput<T>>) {
        match outcome {
            Ok(output) => {
                let items = output.values.len() + output.failures.len();
                if self.fixed_chunk.is_none() && items > 0 {
                    let per_item = output.elapsed / items as u32;
                    let ideal = if per_item.is_zero() {
                        MAX_AUTO_CHUNK
                    } else {
                        (TARGET_CHUNK_TIME.as_nanos() / per_item.as_nanos()).max(1) as usize
                    };
                    self.chunk = ideal.clamp(1, MAX_AUTO_CHUNK);
                }
                self.ready.push_back(Cursor::ran(output));
            }
            Err(error) => self.ready.push_back(Cursor::Failed { error, left: len }),
        }
    }
}

/// The same outcome again, for each input of a chunk that failed as a whole.
pub(crate) fn replicate(error: &TaskError) -> TaskError {
    match error {
        TaskError::Failed(f) => TaskError::Failed(TaskFailure::from_message(f.message())),
        TaskError::Panicked { message } => TaskError::Panicked {
            message: message.clone(),
        },
        TaskError::Cancelled => TaskError::Cancelled,
        TaskError::TimedOut { after } => TaskError::TimedOut { after: *after },
        TaskError::WorkerDied(death) => TaskError::WorkerDied(death.clone()),
        TaskError::UnknownTask { name } => TaskError::UnknownTask { name: name.clone() },
        TaskError::Codec(message) => TaskError::Codec(message.clone()),
        TaskError::Lost { attempts, reason } => TaskError::Lost {
            attempts: *attempts,
            reason: reason.clone(),
        },
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
        if let Cursor::Ran {
            values,
            next_failure,
            position,
            ..
        } = &mut self.current
        {
            if *position != *next_failure {
                if let Some(value) = values.next() {
                    *position += 1;
                    return Some(Ok(value));
                }
            }
        }
        self.next_slow()
    }
}

impl<I, F, T> Map<'_, I, F, T>
where
    I: Iterator,
    I::Item: Send + 'static,
    F: Fn(I::Item) -> T + Send + Sync + 'static,
    T: Send + 'static,
{
    /// The slow path of `next`: a failure in the current chunk, or the next chunk (refilling the
    /// window and waiting for a chunk to finish when none is ready).
    #[cold]
    #[inline(never)]
    fn next_slow(&mut self) -> Option<TaskResult<T>> {
        loop {
            if let Some(result) = self.current.next() {
                return Some(result);
            }
            if let Some(cursor) = self.ready.pop_front() {
                self.current = cursor;
                continue;
            }
            self.fill();
            if !self.ready.is_empty() {
                continue;
            }
            let (len, outcome) = match &mut self.in_flight {
                InFlight::Ordered(q) => {
                    let (len, future) = q.pop_front()?;
                    (len, future.wait())
                }
                InFlight::Unordered {
                    chunks, done_rx, ..
                } => {
                    if chunks.is_empty() {
                        return None;
                    }
                    let key = done_rx.recv().ok()?;
                    let (len, future) = chunks.remove(&key)?;
                    (len, future.wait())
                }
            };
            self.absorb(len, outcome);
        }
    }
}

impl<I: Iterator, F, T> fmt::Debug for Map<'_, I, F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map")
            .field("chunk", &self.chunk)
            .field("window", &self.window)
            .field(
                "buffered",
                &(self.current.len() + self.ready.iter().map(Cursor::len).sum::<usize>()),
            )
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Applies `f` to every input on the pool's workers, lazily; see [`Map`]. For inputs already
    /// in a slice, when every result is wanted at once, [`map_slice`](Pool::map_slice) is several
    /// times faster: it writes results in place instead of handing each one through this iterator.
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

    fn drain<T>(mut cursor: Cursor<T>) -> Vec<Result<T, String>> {
        std::iter::from_fn(|| cursor.next())
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    }

    #[test]
    fn cursor_puts_failures_back_at_their_positions() {
        let output = ChunkOutput {
            values: vec![10, 11, 13],
            failures: vec![
                (0, TaskError::Cancelled),
                (3, TaskError::Cancelled),
                (5, TaskError::Cancelled),
            ],
            elapsed: Duration::ZERO,
        };
        let cursor = Cursor::ran(output);
        assert_eq!(cursor.len(), 6);
        let got: Vec<Option<i32>> = drain(cursor).into_iter().map(Result::ok).collect();
        assert_eq!(got, [None, Some(10), Some(11), None, Some(13), None]);
    }

    #[test]
    fn run_chunk_keeps_order_and_isolates_a_panicking_item() {
        let output = run_chunk(
            &|x: u32| {
                assert!(x != 2, "two is not allowed");
                x * 10
            },
            vec![0, 1, 2, 3],
        );
        let got = drain(Cursor::ran(output));
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], Ok(0));
        assert_eq!(got[1], Ok(10));
        assert!(
            got[2]
                .as_ref()
                .is_err_and(|e| e.contains("two is not allowed"))
        );
        assert_eq!(got[3], Ok(30));
    }

    #[test]
    fn a_failed_chunk_gives_each_input_the_outcome() {
        let cursor: Cursor<u8> = Cursor::Failed {
            error: TaskError::Cancelled,
            left: 3,
        };
        let got = drain(cursor);
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(Result::is_err));
    }
}
