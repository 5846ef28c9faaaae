//! A consumer group: its consumers' loop, their counters, and the item a failed task hands back.

use super::{ErrorSink, Failure, ItemError, TaskFn};
use crate::error::{TaskError, TaskFailure};
use crate::queue::{JoinableQueue, StopSignal};
use crate::sync::{Arc, AtomicU64, Mutex, Ordering};
use crate::task::Task;
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

#[derive(Debug)]
pub(super) struct Counters {
    pub(super) stop: StopSignal,
    /// Consumers started (or about to be) and not yet returned.
    pub(super) live: AtomicU64,
    pub(super) processed: AtomicU64,
    pub(super) failed: AtomicU64,
}

pub(super) struct LiveGuard(Arc<Counters>);

/// Consumer `index` of `group`, ready to run where it is hosted. It holds its share of the group's
/// live count: dropped unrun (a refused job, a thread that never started), the count still falls.
pub(super) fn consumer<T, R>(
    group: &Arc<Group<T, R>>,
    index: usize,
) -> impl FnOnce() + Send + 'static
where
    T: Send + 'static,
    R: Send + 'static,
{
    let live = LiveGuard(Arc::clone(&group.counters));
    let member = Arc::clone(group);
    move || {
        let _live = live;
        member.serve(index);
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(super) struct Group<T, R> {
    pub(super) input: JoinableQueue<T>,
    pub(super) output: Option<JoinableQueue<R>>,
    pub(super) errors: ErrorSink,
    pub(super) task: std::sync::Arc<TaskFn<T, R>>,
    pub(super) counters: Arc<Counters>,
    /// The consumers' threads when they run on threads of their own; empty on pool workers.
    pub(super) threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl<T: Send + 'static, R> Group<T, R> {
    /// Waits for the consumers that run on threads of their own (not for the calling thread, when
    /// it is one of them: an `on_error` callback may shut the pool down).
    pub(super) fn join(&self) {
        let handles = std::mem::take(&mut *self.threads.lock());
        let me = std::thread::current().id();
        for handle in handles {
            if handle.thread().id() != me {
                // `serve` catches the task's panics; a consumer thread has nothing else to report.
                let _ = handle.join();
            }
        }
    }

    /// One consumer's life: the loop of the module documentation.
    pub(super) fn serve(&self, index: usize) {
        let stop = &self.counters.stop;
        // `Err` is Closed (closed and drained) or Stopped.
        while let Ok(item) = self.input.get_or_stop(stop) {
            let delivered = self.output.is_some();
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                // An unwanted result is dropped in here, where a panicking `Drop` is caught too.
                (self.task)(item).map(|value| delivered.then_some(value))
            }))
            .unwrap_or_else(|payload| Err(TaskError::panicked(payload).into()));
            match (outcome, &self.output) {
                (Ok(Some(value)), Some(output)) => {
                    if output.put_or_stop(value, stop).is_err() {
                        self.report(
                            index,
                            TaskError::Failed(TaskFailure::from_message(
                                "the output queue was closed, so the item's result was dropped \
                                 (close a stage's output only after joining its input)",
                            ))
                            .into(),
                        );
                    }
                }
                (Ok(_), _) => {}
                (Err(failure), _) => self.report(index, failure),
            }
            // Counted before `task_done`, so that once `join` returns the counters are complete.
            self.counters.processed.fetch_add(1, Ordering::Relaxed);
            if self.input.task_done().is_err() {
                self.report(
                    index,
                    TaskError::Failed(TaskFailure::from_message(
                        "task_done failed for an item this consumer took: other code called task_done \
                         on the input queue for items it never took, so its join is miscounted",
                    ))
                    .into(),
                );
            }
        }
    }

    fn report(&self, consumer: usize, failure: Failure<T>)
    where
        T: Send + 'static,
    {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        let item = failure
            .item
            .map(|item| std::sync::Mutex::new(Box::new(item) as Box<dyn Any + Send>));
        let failure = ItemError {
            error: failure.error,
            consumer,
            item,
        };
        match &self.errors {
            ErrorSink::Stderr => eprintln!(
                "martelli: {failure} (collect failures with Consume::errors or Consume::on_error)"
            ),
            ErrorSink::Queue(queue) => {
                if let Err(failure) = queue.put_or_stop(failure, &self.counters.stop) {
                    eprintln!("martelli: {failure} (the error queue was closed)");
                }
            }
            ErrorSink::Callback(callback) => {
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| callback(failure))) {
                    eprintln!(
                        "martelli: a consumer's on_error callback panicked: {}",
                        crate::error::panic_message(payload.as_ref())
                    );
                }
            }
        }
    }

    /// Sets the stop flag, then wakes every queue a consumer may block on so it sees the flag.
    pub(super) fn stop(&self) {
        self.counters.stop.fire();
        self.input.wake_all();
        if let Some(output) = &self.output {
            output.wake_all();
        }
        if let ErrorSink::Queue(errors) = &self.errors {
            errors.wake_all();
        }
    }
}

/// Runs task `T` in this process on `args`, keeping an encoded copy of them to hand back with a
/// failure (the task takes its arguments by value). A panic is caught here, so that its item comes
/// back too.
pub(super) fn run_keeping_item<T: Task>(args: T::Args) -> Result<T::Output, Failure<T::Args>> {
    let copy = postcard::to_allocvec(&args).ok();
    let error = match catch_unwind(AssertUnwindSafe(|| T::run(args))) {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(failure)) => TaskError::Failed(failure),
        Err(payload) => TaskError::panicked(payload),
    };
    let item = copy.and_then(|bytes| postcard::from_bytes(&bytes).ok());
    Err(Failure { error, item })
}
