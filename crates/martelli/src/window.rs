//! The windowed core that [`Pool::map`](crate::Pool::map) and
//! [`Pool::map_task`](crate::Pool::map_task) share: inputs pulled from the caller's iterator a chunk
//! at a time, at most `window` chunks in flight (so an endless input runs in bounded memory), chunk
//! sizes adapted toward a target time, and exactly one outcome handed out per input, in input order
//! (or, for `map`, in completion order).
//!
//! What differs between the two maps is how a chunk reaches a worker and what comes back: a closure
//! run in this process ([`map`](crate::map)), or a registered task that may cross to another process
//! or machine ([`task_map`](crate::task_map)). That is the [`Chunks`] trait.
//!
//! # The hand-out path
//!
//! The consuming thread touches every result, so its cost per item bounds the whole map for tiny
//! items. A finished chunk comes back as one vector of values with the few items that failed set
//! apart by position ([`ChunkOutput`]); a chunk without failures (the usual case) is handed out
//! straight from its vector ([`Handout`]), so [`Window::next`] is a comparison, a load and an
//! increment. A chunk with failures goes through a [`Cursor`] that puts each failure back at its
//! position.
//!
//! # Buffers go round
//!
//! The vectors a chunk travels in (its inputs, its values) are kept when they are empty and used
//! again for a later chunk: the worker drains the inputs and hands their vector back with the
//! values, and [`Handout`] gives back the values' vector once it has handed every value out. So a
//! long map allocates a few chunks' worth of buffers at its start and then none: no page faults and
//! no trips of the allocator to the kernel per chunk (with chunks of 16 Ki 8-byte items, each
//! buffer is 128 KiB, at glibc's threshold for a fresh `mmap`, which a freed buffer had to be
//! faulted in again). At most [`SPARE`] empty buffers of each kind are kept, so memory stays
//! bounded by the window: `window` chunks in flight, plus that many empty buffers.

use crate::error::{TaskError, TaskFailure, TaskResult};
use crate::future::Future;
use crate::options::TaskOptions;
use crate::pool::Pool;
use std::collections::{HashMap, VecDeque};
use std::iter::Fuse;
use std::ptr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

/// What a chunk produced, in a shape that is cheap to hand out: the values of the inputs that
/// succeeded, in input order, and the failures with their positions in the chunk (ascending).
pub(crate) struct ChunkOutput<T> {
    pub(crate) values: Vec<T>,
    pub(crate) failures: Vec<(usize, TaskError)>,
    /// How long the chunk ran on its worker, when the worker measured it (else the window uses the
    /// time from submission to completion).
    pub(crate) elapsed: Option<Duration>,
}

impl<T> ChunkOutput<T> {
    /// Splits one outcome per input into values and failures.
    pub(crate) fn from_results(results: Vec<TaskResult<T>>) -> Self {
        let mut values = Vec::with_capacity(results.len());
        let mut failures = Vec::new();
        for (position, result) in results.into_iter().enumerate() {
            match result {
                Ok(value) => values.push(value),
                Err(error) => failures.push((position, error)),
            }
        }
        ChunkOutput {
            values,
            failures,
            elapsed: None,
        }
    }
}

/// A chunk that did not reach a worker: every input of it gets `error`; with `stop`, no more inputs
/// are taken (an endless input would otherwise be drained for nothing).
pub(crate) struct Refused {
    pub(crate) error: TaskError,
    pub(crate) stop: bool,
}

/// Empty buffers of each kind (inputs, values) the window keeps for later chunks: in the steady
/// state one chunk's inputs are being pulled while another's values are handed out, so two of each
/// are enough for every chunk to find one.
pub(crate) const SPARE: usize = 2;

/// Empty vectors kept for later chunks (see the module's documentation).
pub(crate) struct Spares<T>(Vec<Vec<T>>);

impl<T> Spares<T> {
    fn new() -> Self {
        Spares(Vec::new())
    }

    /// An empty vector with room for `n` elements: a kept one when it has the room (one too small
    /// is dropped, not grown: growing an empty vector copies its old capacity for nothing).
    pub(crate) fn take(&mut self, n: usize) -> Vec<T> {
        room_for(self.0.pop().unwrap_or_default(), n)
    }

    /// Keeps `buffer` (emptied) for a later chunk, unless enough are kept already.
    pub(crate) fn keep(&mut self, mut buffer: Vec<T>) {
        if buffer.capacity() > 0 && self.0.len() < SPARE {
            buffer.clear();
            self.0.push(buffer);
        }
    }
}

/// `buffer` emptied, with room for `n` elements: itself when it has the room, else a new vector
/// (growing an empty vector would copy its old capacity for nothing).
pub(crate) fn room_for<T>(mut buffer: Vec<T>, n: usize) -> Vec<T> {
    if buffer.capacity() < n {
        return Vec::with_capacity(n);
    }
    buffer.clear();
    buffer
}

/// How one kind of map sends a chunk to the pool and reads what comes back.
pub(crate) trait Chunks {
    /// One input.
    type In;
    /// One input's value.
    type Out;
    /// What a chunk's future resolves to.
    type Done: Send + 'static;
    /// Sends `items` to the pool as one task; `values` is an empty vector the chunk may write its
    /// values into (kept from an earlier chunk, so it often has room already).
    fn submit(
        &mut self,
        pool: &Pool,
        options: TaskOptions,
        items: Vec<Self::In>,
        values: Vec<Self::Out>,
    ) -> Result<Future<Self::Done>, Refused>;
    /// Reads a finished chunk; the vector its inputs came in, when it comes back, goes to `inputs`.
    fn output(done: Self::Done, inputs: &mut Spares<Self::In>) -> ChunkOutput<Self::Out>;
}

/// How automatic chunk sizes move: toward chunks that take `target`, at most `max` inputs, growing
/// by at most `growth` times per finished chunk (`None`: straight to the ideal size).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizing {
    pub(crate) target: Duration,
    pub(crate) max: usize,
    pub(crate) growth: Option<usize>,
}

/// The values of a chunk without failures, handed out from the front of their vector, whose buffer
/// is given back for a later chunk once every value is out.
///
/// Rules the code keeps (each `// SAFETY:` comment below cites them):
/// 1. `buf` has length 0 at all times, so the vector itself never reads, drops or hands out an
///    element: the elements are this struct's to move out or drop.
/// 2. The slots `pos..end` of `buf`'s allocation hold initialised values not yet handed out;
///    `end <= buf.capacity()`, and the slots before `pos` were moved out.
pub(crate) struct Handout<T> {
    buf: Vec<T>,
    pos: usize,
    end: usize,
}

impl<T> Handout<T> {
    pub(crate) fn new(mut values: Vec<T>) -> Self {
        let end = values.len();
        // SAFETY: shortening a vector's length never exposes uninitialised slots; the `end` values
        // stay initialised in place and are now this struct's (rules 1 and 2).
        unsafe { values.set_len(0) };
        Handout {
            buf: values,
            pos: 0,
            end,
        }
    }

    fn empty() -> Self {
        Handout::new(Vec::new())
    }

    #[inline]
    pub(crate) fn next(&mut self) -> Option<T> {
        if self.pos == self.end {
            return None;
        }
        // SAFETY: `pos < end`, so the slot is inside the allocation and holds an initialised value
        // not yet handed out (rule 2); `pos` moves past it at once, so it is read exactly once.
        let value = unsafe { ptr::read(self.buf.as_ptr().add(self.pos)) };
        self.pos += 1;
        Some(value)
    }

    pub(crate) fn len(&self) -> usize {
        self.end - self.pos
    }

    /// The emptied vector, once every value has been handed out (else `None`).
    fn take_buffer(&mut self) -> Option<Vec<T>> {
        if self.pos != self.end {
            return None;
        }
        self.pos = 0;
        self.end = 0;
        Some(std::mem::take(&mut self.buf))
    }
}

impl<T> Drop for Handout<T> {
    fn drop(&mut self) {
        let left = ptr::slice_from_raw_parts_mut(
            // SAFETY: `pos <= end <= capacity` (rule 2), so the offset stays inside the allocation.
            unsafe { self.buf.as_mut_ptr().add(self.pos) },
            self.end - self.pos,
        );
        self.pos = self.end;
        // SAFETY: the slots `pos..end` hold initialised values not handed out (rule 2), dropped
        // here exactly once; `buf` then frees its allocation without touching them (rule 1).
        unsafe { ptr::drop_in_place(left) };
    }
}

/// A finished chunk whose outcomes are being handed out, one per input, in input order.
pub(crate) enum Cursor<T> {
    /// The chunk ran without a failure: its values, handed out as they are.
    Fast(Handout<T>),
    /// The chunk ran: values, with failures interleaved at their positions.
    Ran {
        values: std::vec::IntoIter<T>,
        failures: std::vec::IntoIter<(usize, TaskError)>,
        /// The position of the next failure (`usize::MAX`: none left).
        next_failure: usize,
        position: usize,
    },
    /// The chunk as a whole failed (cancelled, timed out, its worker died, …): each of its `left`
    /// inputs gets the same outcome.
    Failed { error: TaskError, left: usize },
}

/// The position of the first failure in `failures`, `usize::MAX` when there is none.
fn first_position(failures: &[(usize, TaskError)]) -> usize {
    failures
        .first()
        .map_or(usize::MAX, |(position, _)| *position)
}

impl<T> Cursor<T> {
    pub(crate) fn ran(output: ChunkOutput<T>) -> Self {
        if output.failures.is_empty() {
            return Cursor::Fast(Handout::new(output.values));
        }
        let failures = output.failures.into_iter();
        Cursor::Ran {
            values: output.values.into_iter(),
            next_failure: first_position(failures.as_slice()),
            failures,
            position: 0,
        }
    }

    fn empty() -> Self {
        Cursor::Failed {
            error: TaskError::Cancelled,
            left: 0,
        }
    }

    pub(crate) fn next(&mut self) -> Option<TaskResult<T>> {
        match self {
            Cursor::Fast(values) => values.next().map(Ok),
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

    pub(crate) fn len(&self) -> usize {
        match self {
            Cursor::Fast(values) => values.len(),
            Cursor::Ran {
                values, failures, ..
            } => values.len() + failures.len(),
            Cursor::Failed { left, .. } => *left,
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

/// A chunk on its way: its length, when it was sent, and its future.
type Sent<D> = (usize, Instant, Future<D>);

enum InFlight<D> {
    Ordered(VecDeque<Sent<D>>),
    Unordered {
        chunks: HashMap<u64, Sent<D>>,
        done_tx: Sender<u64>,
        done_rx: Receiver<u64>,
    },
}

/// The window: see the module's documentation. `C` sends chunks ([`Chunks`]), whose futures resolve
/// to `D` and whose inputs' values are `O` (spelled out, so that the struct needs no bounds).
pub(crate) struct Window<'p, I: Iterator, C, D, O> {
    pool: &'p Pool,
    chunks: C,
    inputs: Fuse<I>,
    options: TaskOptions,
    sizing: Sizing,
    fixed_chunk: bool,
    chunk: usize,
    window: usize,
    in_flight: InFlight<D>,
    /// The values of the chunk being handed out, when it has no failures: the fast path.
    fast: Handout<O>,
    /// Empty vectors for later chunks' inputs and values.
    spare_inputs: Spares<I::Item>,
    spare_values: Spares<O>,
    /// The chunk being handed out, when it has failures (else empty).
    current: Cursor<O>,
    /// Finished chunks waiting to be handed out, oldest first.
    ready: VecDeque<Cursor<O>>,
    /// A chunk was refused for good: no more inputs are taken.
    refused: bool,
}

impl<I: Iterator, C, D, O> Window<'_, I, C, D, O> {
    pub(crate) fn chunk(&self) -> usize {
        self.chunk
    }

    pub(crate) fn window(&self) -> usize {
        self.window
    }

    /// Outcomes received and not yet handed out.
    pub(crate) fn buffered(&self) -> usize {
        self.fast.len() + self.current.len() + self.ready.iter().map(Cursor::len).sum::<usize>()
    }
}

impl<'p, I, C, D, O> Window<'p, I, C, D, O>
where
    I: Iterator,
    C: Chunks<In = I::Item, Done = D, Out = O>,
    D: Send + 'static,
{
    pub(crate) fn new(pool: &'p Pool, chunks: C, inputs: I, sizing: Sizing) -> Self {
        Window {
            pool,
            chunks,
            inputs: inputs.fuse(),
            options: TaskOptions::default(),
            sizing,
            fixed_chunk: false,
            chunk: 1,
            window: (pool.workers() * 2).max(2),
            in_flight: InFlight::Ordered(VecDeque::new()),
            fast: Handout::empty(),
            spare_inputs: Spares::new(),
            spare_values: Spares::new(),
            current: Cursor::empty(),
            ready: VecDeque::new(),
            refused: false,
        }
    }

    /// Results in input order (the default).
    pub(crate) fn ordered(&mut self) {
        self.in_flight = InFlight::Ordered(VecDeque::new());
    }

    /// Results as chunks finish.
    pub(crate) fn unordered(&mut self) {
        let (done_tx, done_rx) = mpsc::channel();
        self.in_flight = InFlight::Unordered {
            chunks: HashMap::new(),
            done_tx,
            done_rx,
        };
    }

    /// A fixed chunk size (0 is taken as 1).
    pub(crate) fn set_chunk(&mut self, n: usize) {
        self.chunk = n.max(1);
        self.fixed_chunk = true;
    }

    /// At most `n` chunks in flight (0 is taken as 1).
    pub(crate) fn set_window(&mut self, n: usize) {
        self.window = n.max(1);
    }

    pub(crate) fn set_options(&mut self, options: TaskOptions) {
        self.options = options;
    }

    fn in_flight_len(&self) -> usize {
        match &self.in_flight {
            InFlight::Ordered(q) => q.len(),
            InFlight::Unordered { chunks, .. } => chunks.len(),
        }
    }

    /// Submits chunks until the window is full or the inputs end (or a chunk is refused).
    fn fill(&mut self) {
        while !self.refused && self.in_flight_len() < self.window {
            let expected = self.chunk.min(self.inputs.size_hint().0);
            let mut items = self.spare_inputs.take(expected);
            items.extend(self.inputs.by_ref().take(self.chunk));
            if items.is_empty() {
                self.spare_inputs.keep(items);
                return;
            }
            let len = items.len();
            let values = self.spare_values.take(0);
            match self.chunks.submit(self.pool, self.options, items, values) {
                Ok(future) => {
                    let sent = (len, Instant::now(), future);
                    match &mut self.in_flight {
                        InFlight::Ordered(q) => q.push_back(sent),
                        InFlight::Unordered {
                            chunks, done_tx, ..
                        } => {
                            let key = sent.2.id().as_u64();
                            let tx = done_tx.clone();
                            sent.2.add_hook(Box::new(move || {
                                let _ = tx.send(key);
                            }));
                            chunks.insert(key, sent);
                        }
                    }
                }
                Err(Refused { error, stop }) => {
                    self.refused = stop;
                    self.ready.push_back(Cursor::Failed { error, left: len });
                    return;
                }
            }
        }
    }

    /// Moves automatic chunk sizes toward the target time, after a chunk of `len` inputs took `took`.
    fn adapt(&mut self, len: usize, took: Duration) {
        if self.fixed_chunk || len == 0 {
            return;
        }
        let Sizing {
            target,
            max,
            growth,
        } = self.sizing;
        // A chunk cut short by the end of the inputs says little when growth is limited.
        if growth.is_some() && len < self.chunk {
            return;
        }
        let per_item = took.as_nanos() / len as u128;
        // Items too fast to measure: the largest chunk.
        let ideal = target
            .as_nanos()
            .checked_div(per_item)
            .map_or(max, |n| usize::try_from(n).unwrap_or(max));
        let cap = growth.map_or(max, |g| self.chunk.saturating_mul(g).min(max));
        self.chunk = ideal.clamp(1, cap.max(1));
    }

    fn absorb(&mut self, len: usize, sent: Instant, outcome: TaskResult<D>) {
        match outcome {
            Ok(done) => {
                let output = C::output(done, &mut self.spare_inputs);
                let took = output.elapsed.unwrap_or_else(|| sent.elapsed());
                self.adapt(output.values.len() + output.failures.len(), took);
                self.ready.push_back(Cursor::ran(output));
            }
            Err(error) => self.ready.push_back(Cursor::Failed { error, left: len }),
        }
    }

    /// The next outcome: the fast path inline, the rest in [`next_slow`](Window::next_slow).
    #[inline]
    pub(crate) fn next(&mut self) -> Option<TaskResult<O>> {
        if let Some(value) = self.fast.next() {
            return Some(Ok(value));
        }
        self.next_slow()
    }

    /// A chunk with failures, or the next chunk (refilling the window and waiting for a chunk to
    /// finish when none is ready).
    #[cold]
    #[inline(never)]
    fn next_slow(&mut self) -> Option<TaskResult<O>> {
        loop {
            if let Some(value) = self.fast.next() {
                return Some(Ok(value));
            }
            if let Some(result) = self.current.next() {
                return Some(result);
            }
            if let Some(cursor) = self.ready.pop_front() {
                match cursor {
                    Cursor::Fast(values) => {
                        if let Some(buffer) = self.fast.take_buffer() {
                            self.spare_values.keep(buffer);
                        }
                        self.fast = values;
                    }
                    cursor => self.current = cursor,
                }
                continue;
            }
            self.fill();
            if !self.ready.is_empty() {
                continue;
            }
            let (len, sent, outcome) = match &mut self.in_flight {
                InFlight::Ordered(q) => {
                    let (len, sent, future) = q.pop_front()?;
                    (len, sent, future.wait())
                }
                InFlight::Unordered {
                    chunks, done_rx, ..
                } => {
                    if chunks.is_empty() {
                        return None;
                    }
                    let key = done_rx.recv().ok()?;
                    let (len, sent, future) = chunks.remove(&key)?;
                    (len, sent, future.wait())
                }
            };
            self.absorb(len, sent, outcome);
        }
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
            elapsed: None,
        };
        let cursor = Cursor::ran(output);
        assert_eq!(cursor.len(), 6);
        let got: Vec<Option<i32>> = drain(cursor).into_iter().map(Result::ok).collect();
        assert_eq!(got, [None, Some(10), Some(11), None, Some(13), None]);
    }

    #[test]
    fn from_results_splits_values_and_failures_by_position() {
        let output =
            ChunkOutput::from_results(vec![Ok(1), Err(TaskError::Cancelled), Ok(3), Ok(4)]);
        assert_eq!(output.values, [1, 3, 4]);
        assert_eq!(output.failures.len(), 1);
        assert_eq!(output.failures[0].0, 1);
        let got: Vec<Option<i32>> = drain(Cursor::ran(output))
            .into_iter()
            .map(Result::ok)
            .collect();
        assert_eq!(got, [Some(1), None, Some(3), Some(4)]);
    }

    #[test]
    fn handout_gives_values_in_order_then_its_buffer_back_with_its_room() {
        let mut values = Vec::with_capacity(64);
        values.extend(["a", "b", "c"].map(String::from));
        let mut handout = Handout::new(values);
        assert_eq!(handout.len(), 3);
        assert!(handout.take_buffer().is_none(), "values are left");
        assert_eq!(handout.next().as_deref(), Some("a"));
        assert_eq!(handout.next().as_deref(), Some("b"));
        assert_eq!(handout.len(), 1);
        assert_eq!(handout.next().as_deref(), Some("c"));
        assert_eq!(handout.next(), None);
        let buffer = handout.take_buffer().expect("every value is out");
        assert!(buffer.is_empty());
        assert!(buffer.capacity() >= 64);
        assert_eq!(handout.next(), None);
        assert_eq!(handout.len(), 0);
    }

    #[test]
    fn handout_drops_each_value_not_handed_out_exactly_once() {
        let shared = std::sync::Arc::new(());
        let values: Vec<_> = (0..10).map(|_| std::sync::Arc::clone(&shared)).collect();
        let mut handout = Handout::new(values);
        let first = handout.next();
        let second = handout.next();
        assert_eq!(std::sync::Arc::strong_count(&shared), 11);
        drop(handout);
        assert_eq!(std::sync::Arc::strong_count(&shared), 3);
        drop((first, second));
        assert_eq!(std::sync::Arc::strong_count(&shared), 1);
    }

    #[test]
    fn handout_of_zero_sized_values() {
        let mut handout = Handout::new(vec![(); 5]);
        assert_eq!(std::iter::from_fn(|| handout.next()).count(), 5);
        assert!(handout.take_buffer().is_some());
    }

    #[test]
    fn spares_keep_a_bounded_number_and_drop_buffers_too_small() {
        let mut spares: Spares<u64> = Spares::new();
        for _ in 0..5 {
            spares.keep(Vec::with_capacity(100));
        }
        spares.keep(Vec::new());
        assert_eq!(spares.0.len(), SPARE);
        let kept = spares.take(50);
        assert!(kept.is_empty() && kept.capacity() >= 100);
        let fresh = spares.take(1_000);
        assert!(fresh.is_empty() && fresh.capacity() >= 1_000);
        assert!(spares.0.is_empty());
        let mut full = vec![1u64, 2, 3];
        full.reserve(10);
        spares.keep(full);
        assert!(spares.take(3).is_empty(), "a kept buffer comes back empty");
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
