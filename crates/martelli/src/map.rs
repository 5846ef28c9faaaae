//! [`Pool::map`]: a lazy parallel map that pulls inputs only as workers free up.

use crate::error::{TaskError, TaskFailure, TaskResult};
use crate::future::Future;
use crate::pool::{Pool, TaskOptions};
use crate::sync::Arc;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::iter::Fuse;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

/// What automatic chunking aims at: chunks that take about this long, so that the cost of handing a
/// chunk to a worker (a few microseconds) stays small beside the work in it.
const TARGET_CHUNK_TIME: Duration = Duration::from_micros(200);
/// The largest automatic chunk.
const MAX_AUTO_CHUNK: usize = 16 * 1024;

type ChunkOutput<T> = (Vec<TaskResult<T>>, Duration);

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
    out: VecDeque<TaskResult<T>>,
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
            out: VecDeque::new(),
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

    /// Per-chunk task options (priority, timeout).
    pub fn options(mut self, options: TaskOptions) -> Self {
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
        while self.in_flight_len() < self.window {
            let items: Vec<I::Item> = self.inputs.by_ref().take(self.chunk).collect();
            if items.is_empty() {
                return;
            }
            let len = items.len();
            let f = Arc::clone(&self.f);
            let submitted = self.pool.submit_with(self.options, move || {
                let start = Instant::now();
                let results = items
                    .into_iter()
                    .map(|item| {
                        catch_unwind(AssertUnwindSafe(|| f(item))).map_err(TaskError::panicked)
                    })
                    .collect::<Vec<_>>();
                (results, start.elapsed())
            });
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
                // The pool is shut down: every input of the chunk gets an outcome all the same.
                Err(_) => self.out.extend((0..len).map(|_| Err(TaskError::Cancelled))),
            }
            if !self.out.is_empty() {
                return;
            }
        }
    }

    fn absorb(&mut self, len: usize, outcome: TaskResult<ChunkOutput<T>>) {
        match outcome {
            Ok((results, elapsed)) => {
                if self.fixed_chunk.is_none() && !results.is_empty() {
                    let per_item = elapsed / results.len() as u32;
                    let ideal = if per_item.is_zero() {
                        MAX_AUTO_CHUNK
                    } else {
                        (TARGET_CHUNK_TIME.as_nanos() / per_item.as_nanos()).max(1) as usize
                    };
                    self.chunk = ideal.clamp(1, MAX_AUTO_CHUNK);
                }
                self.out.extend(results);
            }
            Err(error) => self.out.extend((0..len).map(|_| Err(replicate(&error)))),
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

    fn next(&mut self) -> Option<TaskResult<T>> {
        loop {
            if let Some(result) = self.out.pop_front() {
                return Some(result);
            }
            self.fill();
            if !self.out.is_empty() {
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
            .field("buffered", &self.out.len())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Applies `f` to every input on the pool's workers, lazily; see [`Map`].
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
