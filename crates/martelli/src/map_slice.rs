//! [`Pool::map_slice`]: an eager parallel map over inputs already in memory, writing every result in
//! place.
//!
//! # How it works
//!
//! The output is one buffer of `inputs.len()` uninitialised slots. The index range is cut into
//! chunks (about sixteen per worker, so that a slow worker is made up for by the others), and one
//! scoped task per worker claims chunks from an atomic counter until none is left, writing each
//! result straight into its slot. The caller waits once, for all of them. No result crosses a
//! channel or an iterator: the cost per item is the call of `f` and one store.
//!
//! Rules the code keeps (each `// SAFETY:` comment below cites them):
//! 1. A chunk is claimed by exactly one task (`fetch_add` hands out each index once), so two tasks
//!    never write the same slot, and the buffer outlives the tasks (they are joined by the scope
//!    before `map_slice` reads it).
//! 2. A slot is initialised exactly when the chunk that holds it was reported complete; a chunk
//!    interrupted by a panic drops the results it had written before the panic escapes it
//!    ([`ChunkGuard`]).
//! 3. The buffer's length is set to `inputs.len()` only when every chunk completed; otherwise the
//!    completed chunks' results are dropped one by one and the buffer is freed as empty.

use crate::error::TaskError;
use crate::pool::Pool;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Chunks per worker: enough for the workers to even out, few enough that claiming one is rare.
const CHUNKS_PER_WORKER: usize = 16;

/// The output buffer, shared by the tasks that fill disjoint parts of it.
struct Slots<R>(*mut MaybeUninit<R>);

// SAFETY: the tasks write disjoint slots (rule 1) and results move to the caller's thread, which
// needs `R: Send`; the pointer itself is only an address.
unsafe impl<R: Send> Send for Slots<R> {}
// SAFETY: as above: shared access only ever writes disjoint slots.
unsafe impl<R: Send> Sync for Slots<R> {}

/// Drops the results a chunk has written so far if the chunk unwinds (rule 2).
struct ChunkGuard<R> {
    start: *mut MaybeUninit<R>,
    written: usize,
}

impl<R> Drop for ChunkGuard<R> {
    fn drop(&mut self) {
        for i in 0..self.written {
            // SAFETY: the first `written` slots from `start` were initialised by this chunk and not
            // handed out yet; the chunk is being abandoned, so nothing else reads them.
            unsafe { (*self.start.add(i)).assume_init_drop() };
        }
    }
}

/// What one task reports: the chunks it completed, and the first panic it met.
struct Report {
    completed: Vec<Range<usize>>,
    panic: Option<TaskError>,
}

/// The shared plan: the inputs, the chunking, the counter chunks are claimed from.
struct Plan<'a, T, F, R> {
    inputs: &'a [T],
    f: &'a F,
    slots: Slots<R>,
    chunk: usize,
    chunks: usize,
    next: AtomicUsize,
    /// Set by the first panic: the others stop claiming (the call fails anyway).
    failed: AtomicBool,
}

impl<T, F, R> Plan<'_, T, F, R>
where
    T: Sync,
    F: Fn(&T) -> R + Sync,
    R: Send,
{
    /// Claims and fills chunks until none is left (one task's whole life).
    fn work(&self) -> Report {
        let mut report = Report {
            completed: Vec::new(),
            panic: None,
        };
        while !self.failed.load(Ordering::Relaxed) {
            let index = self.next.fetch_add(1, Ordering::Relaxed);
            if index >= self.chunks {
                break;
            }
            let start = index * self.chunk;
            let end = (start + self.chunk).min(self.inputs.len());
            match catch_unwind(AssertUnwindSafe(|| self.fill(start..end))) {
                Ok(()) => match report.completed.last_mut() {
                    Some(last) if last.end == start => last.end = end,
                    _ => report.completed.push(start..end),
                },
                Err(payload) => {
                    self.failed.store(true, Ordering::Relaxed);
                    report.panic = Some(TaskError::panicked(payload));
                    break;
                }
            }
        }
        report
    }

    /// Writes `f(input)` into the slot of every index in `range`.
    fn fill(&self, range: Range<usize>) {
        let inputs = &self.inputs[range.clone()];
        let mut guard = ChunkGuard {
            // SAFETY: `range.start <= inputs.len()`, the buffer's capacity, so the pointer stays
            // within (or one past) the allocation.
            start: unsafe { self.slots.0.add(range.start) },
            written: 0,
        };
        for (i, input) in inputs.iter().enumerate() {
            let value = (self.f)(input);
            // SAFETY: slot `range.start + i` lies in this chunk, which only this task writes (rule
            // 1), and it is uninitialised: nothing was written there before.
            unsafe { (*guard.start.add(i)).write(value) };
            guard.written = i + 1;
        }
        std::mem::forget(guard);
    }
}

impl Pool {
    /// Applies `f` to every element of `inputs` on the pool's workers and returns the results in
    /// input order: an eager parallel map for inputs already in memory, like rayon's
    /// `par_iter().map(f).collect()`.
    ///
    /// The index range is split into chunks that the workers claim until none is left, and each
    /// result is written in place into the output vector, so the cost per item is little more than
    /// the call of `f`. The calling thread waits, once, for all of them. `f` and the inputs are
    /// borrowed: nothing needs to be `'static` or cloned.
    ///
    /// If `f` panics on some item, the others that already ran are dropped and the call returns
    /// that panic as [`TaskError::Panicked`]; if the pool is shut down (or shuts down with
    /// [`Shutdown::CancelPending`](crate::Shutdown::CancelPending) meanwhile) it returns
    /// [`TaskError::Cancelled`].
    ///
    /// Use `map_slice` when the inputs are a slice (or a `Vec`) and you want every result at once.
    /// Use [`map`](Pool::map) when the inputs come from an iterator — endless, lazy, or too many to
    /// hold — when you want results as they come ([`Map::unordered`](crate::Map::unordered)), or
    /// when you want one outcome per item (a panicking item fails only itself there).
    ///
    /// ```
    /// use martelli::Pool;
    ///
    /// let pool = Pool::threads(2)?;
    /// let inputs: Vec<u64> = (0..10_000).collect();
    /// let doubled = pool.map_slice(|x| x * 2, &inputs)?;
    /// assert_eq!(doubled[1234], 2468);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_slice<T, R, F>(&self, f: F, inputs: &[T]) -> Result<Vec<R>, TaskError>
    where
        T: Sync,
        R: Send,
        F: Fn(&T) -> R + Sync,
    {
        let n = inputs.len();
        let mut out: Vec<R> = Vec::with_capacity(n);
        if n == 0 {
            return Ok(out);
        }
        let workers = self.workers().max(1);
        let chunk = n.div_ceil(workers * CHUNKS_PER_WORKER).max(1);
        let chunks = n.div_ceil(chunk);
        let plan = Plan {
            inputs,
            f: &f,
            slots: Slots(out.spare_capacity_mut().as_mut_ptr()),
            chunk,
            chunks,
            next: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
        };
        let tasks = workers.min(chunks);
        // The futures are waited for after the scope has joined the tasks: a worker of this pool
        // calling `map_slice` must reach the scope's join, which runs queued tasks itself, rather
        // than block in `wait` on a task only it could run.
        let futures: Vec<_> = self.scope(|s| {
            (0..tasks)
                .filter_map(|_| s.submit(|| plan.work()).ok())
                .collect()
        });
        let mut reports: Vec<Report> = futures
            .into_iter()
            .filter_map(|future| future.wait().ok())
            .collect();
        let mut panic = None;
        let mut done = 0;
        for report in &mut reports {
            done += report
                .completed
                .iter()
                .map(ExactSizeIterator::len)
                .sum::<usize>();
            if panic.is_none() {
                panic = report.panic.take();
            }
        }
        if panic.is_none() && done == n {
            // SAFETY: every chunk completed, so every slot below `n` is initialised (rules 2, 3),
            // and the tasks that wrote them have been joined by the scope.
            unsafe { out.set_len(n) };
            return Ok(out);
        }
        let slots = out.spare_capacity_mut();
        for range in reports.iter().flat_map(|r| r.completed.iter()) {
            for slot in &mut slots[range.clone()] {
                // SAFETY: a completed chunk's slots are initialised (rule 2), and each chunk is
                // listed once (rule 1); the buffer's length stays 0, so nothing drops them again.
                unsafe { slot.assume_init_drop() };
            }
        }
        Err(panic.unwrap_or(TaskError::Cancelled))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::{Pool, Shutdown, TaskError};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn pools() -> Vec<Pool> {
        let mut pools = vec![Pool::inline(), Pool::threads(3).expect("a pool starts")];
        #[cfg(feature = "async")]
        pools.push(Pool::event_loop().expect("an event loop starts"));
        pools
    }

    #[test]
    fn results_come_back_in_input_order_on_every_backend() {
        let inputs: Vec<u32> = (0..10_007).collect();
        for pool in pools() {
            let out = pool.map_slice(|&x| u64::from(x) * 3, &inputs);
            let expected: Vec<u64> = inputs.iter().map(|&x| u64::from(x) * 3).collect();
            assert_eq!(out.ok(), Some(expected));
        }
    }

    #[test]
    fn empty_and_tiny_inputs() {
        let pool = Pool::threads(4).expect("a pool starts");
        assert_eq!(pool.map_slice(|&x| x, &[] as &[u8]).ok(), Some(vec![]));
        assert_eq!(pool.map_slice(|&x| x + 1, &[5u8]).ok(), Some(vec![6]));
        assert_eq!(
            pool.map_slice(|&x| x * 2, &[1u8, 2, 3]).ok(),
            Some(vec![2, 4, 6])
        );
    }

    /// Counts drops, to check that a failed call leaks nothing and drops nothing twice.
    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_panicking_item_fails_the_call_and_every_written_result_is_dropped_once() {
        let pool = Pool::threads(2).expect("a pool starts");
        let inputs: Vec<usize> = (0..5_000).collect();
        let made = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        let result = pool.map_slice(
            |&i| {
                assert!(i != 3_333, "item 3333 is bad");
                made.fetch_add(1, Ordering::SeqCst);
                Counted(Arc::clone(&dropped))
            },
            &inputs,
        );
        match result {
            Err(TaskError::Panicked { message }) => assert!(message.contains("3333 is bad")),
            other => panic!("expected a panic, got {:?}", other.map(|v| v.len())),
        }
        assert_eq!(
            made.load(Ordering::SeqCst),
            dropped.load(Ordering::SeqCst),
            "every result made was dropped exactly once"
        );
        // The pool is still usable.
        assert_eq!(
            pool.map_slice(|&i| i, &inputs[..3]).ok(),
            Some(vec![0, 1, 2])
        );
    }

    #[test]
    fn a_shut_down_pool_gives_cancelled() {
        let pool = Pool::threads(2).expect("a pool starts");
        pool.shutdown(Shutdown::Wait);
        assert!(matches!(
            pool.map_slice(|&x: &i32| x, &[1, 2, 3]),
            Err(TaskError::Cancelled)
        ));
    }

    #[test]
    fn map_slice_inside_a_task_of_the_same_pool_does_not_deadlock() {
        let pool = Arc::new(Pool::threads(1).expect("a pool starts"));
        let inner = Arc::clone(&pool);
        let sum = pool
            .submit(move || {
                let inputs: Vec<u64> = (0..1_000).collect();
                inner
                    .map_slice(|&x| x + 1, &inputs)
                    .map(|v| v.iter().sum::<u64>())
            })
            .expect("submitted")
            .wait()
            .expect("ran");
        assert_eq!(sum.ok(), Some(500_500));
    }

    #[test]
    fn borrowed_inputs_and_closure_state() {
        let pool = Pool::threads(2).expect("a pool starts");
        let words = vec!["a".to_owned(), "bb".to_owned(), "ccc".to_owned()];
        let offset = 10;
        let lengths = pool.map_slice(|w| w.len() + offset, &words);
        assert_eq!(lengths.ok(), Some(vec![11, 12, 13]));
    }
}
