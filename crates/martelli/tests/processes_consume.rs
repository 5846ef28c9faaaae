//! Daemon consumers of a queue on a process pool (`Pool::consume_task`), and `TaskPool`, with real
//! worker processes.
//!
//! This test binary is its own worker program: `main` calls `martelli::init()` first. It has its own
//! small runner (`harness = false`): `cargo test --test processes_consume [filter]`.

#[path = "support/runner.rs"]
mod runner;

use martelli::{
    ConsumeError, ItemError, JoinableQueue, Pool, Shutdown, TaskError, TaskOptions, TaskPool,
};
use std::collections::BTreeMap;
use std::time::Duration;

// ---- the tasks -------------------------------------------------------------------------------

/// The item and the worker process that handled it.
#[martelli::task]
fn tag_with_pid(n: u64) -> (u64, u32) {
    (n, std::process::id())
}

/// Aborts its worker on 13; doubles everything else.
#[martelli::task]
fn double_or_abort(n: u64) -> u64 {
    if n == 13 {
        std::process::abort();
    }
    n * 2
}

#[martelli::task]
fn slow_square(n: u64, ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    n * n
}

#[martelli::task]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

// ---- the tests -------------------------------------------------------------------------------

fn main() {
    martelli::init();
    runner::run(&[
        (
            "every_item_is_processed_once_in_a_worker_process",
            every_item_is_processed_once_in_a_worker_process,
        ),
        (
            "a_crashing_item_fails_alone_and_consumers_go_on",
            a_crashing_item_fails_alone_and_consumers_go_on,
        ),
        (
            "a_timeout_fails_the_item_and_kills_only_its_worker",
            a_timeout_fails_the_item_and_kills_only_its_worker,
        ),
        (
            "closures_are_refused_on_a_process_pool",
            closures_are_refused_on_a_process_pool,
        ),
        ("consumer_counts_are_checked", consumer_counts_are_checked),
        (
            "drop_finishes_the_items_in_hand_and_joins_the_consumers",
            drop_finishes_the_items_in_hand_and_joins_the_consumers,
        ),
        (
            "consume_task_on_a_thread_pool_runs_in_this_process",
            consume_task_on_a_thread_pool_runs_in_this_process,
        ),
        (
            "task_pool_runs_the_same_code_on_threads_and_processes",
            task_pool_runs_the_same_code_on_threads_and_processes,
        ),
    ]);
}

fn drain<T>(queue: &JoinableQueue<T>) -> Vec<T> {
    let mut out = Vec::new();
    while let Ok(item) = queue.try_get() {
        out.push(item);
        queue.task_done().expect("task_done for an item taken");
    }
    out
}

fn every_item_is_processed_once_in_a_worker_process() {
    let pool = Pool::processes(2).expect("a process pool starts");
    let input = JoinableQueue::bounded(16);
    let output = JoinableQueue::new();
    let consumers = pool
        .consume_task(tag_with_pid, &input)
        .consumers(4) // more consumers than workers: items in flight while results travel
        .output(&output)
        .start()
        .expect("consumers start on a process pool");
    assert_eq!(consumers.count(), 4);
    let producer_items = 1_000u64;
    for n in 0..producer_items {
        input.put((n,)).expect("the input queue is open");
    }
    input
        .join_timeout(Duration::from_secs(60))
        .expect("every item done");
    assert_eq!(consumers.processed(), producer_items);
    assert_eq!(consumers.failed(), 0);
    let results = drain(&output);
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    for (n, pid) in &results {
        assert!(seen.insert(*n, *pid).is_none(), "item {n} delivered twice");
        assert_ne!(*pid, std::process::id(), "item {n} ran in the parent");
    }
    assert_eq!(seen.len() as u64, producer_items, "every item delivered");
    let pids: std::collections::BTreeSet<u32> = seen.values().copied().collect();
    assert_eq!(pids.len(), 2, "both workers served the queue: {pids:?}");
    input.close();
    consumers.wait();
}

fn a_crashing_item_fails_alone_and_consumers_go_on() {
    let pool = Pool::processes(2).expect("a process pool starts");
    let input = JoinableQueue::new();
    let output = JoinableQueue::new();
    let errors: JoinableQueue<ItemError> = JoinableQueue::new();
    let consumers = pool
        .consume_task(double_or_abort, &input)
        .output(&output)
        .errors(&errors)
        .start()
        .expect("consumers start");
    for n in 0..40u64 {
        input.put((n,)).expect("open");
    }
    input
        .join_timeout(Duration::from_secs(60))
        .expect("every item done, the crashing one included");
    let mut doubled = drain(&output);
    doubled.sort_unstable();
    let expected: Vec<u64> = (0..40u64).filter(|&n| n != 13).map(|n| n * 2).collect();
    assert_eq!(doubled, expected);
    let mut failures = drain(&errors);
    assert_eq!(failures.len(), 1, "{failures:?}");
    match failures[0].error() {
        TaskError::WorkerDied(death) => assert_eq!(death.signal, Some(libc::SIGABRT), "{death}"),
        other => panic!("expected WorkerDied, got {other}"),
    }
    assert_eq!(
        failures[0].take_item::<(u64,)>(),
        Some((13,)),
        "the failure carries the item that crashed its worker"
    );
    assert_eq!(consumers.failed(), 1);
    // The pool replaced the dead worker: both slots still serve.
    assert_eq!(pool.submit_task(add, (2, 3)).unwrap().wait().unwrap(), 5);
    input.close();
    consumers.wait();
}

fn a_timeout_fails_the_item_and_kills_only_its_worker() {
    let pool = Pool::builder()
        .processes(2)
        .task_timeout(Duration::from_millis(300))
        .build()
        .expect("a process pool starts");
    let input = JoinableQueue::new();
    let output = JoinableQueue::new();
    let errors = JoinableQueue::new();
    let consumers = pool
        .consume_task(slow_square, &input)
        .output(&output)
        .errors(&errors)
        .start()
        .expect("consumers start");
    input.put((3, 10_000)).expect("open"); // far past the timeout
    for n in 0..10u64 {
        input.put((n, 1)).expect("open");
    }
    input
        .join_timeout(Duration::from_secs(60))
        .expect("every item done");
    let mut squares = drain(&output);
    squares.sort_unstable();
    assert_eq!(squares, (0..10u64).map(|n| n * n).collect::<Vec<_>>());
    let mut failures = drain(&errors);
    assert_eq!(failures.len(), 1);
    assert!(
        matches!(failures[0].error(), TaskError::TimedOut { .. }),
        "{}",
        failures[0]
    );
    assert_eq!(failures[0].take_item::<(u64, u64)>(), Some((3, 10_000)));
    input.close();
    consumers.wait();
}

fn closures_are_refused_on_a_process_pool() {
    let pool = Pool::processes(1).expect("a process pool starts");
    let input: JoinableQueue<u64> = JoinableQueue::new();
    let err = pool
        .consume(|n: u64| n + 1, &input)
        .start()
        .expect_err("a closure cannot run in a worker process");
    assert!(
        matches!(
            err,
            ConsumeError::NotATask {
                backend: "processes"
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("consume_task"), "{err}");
    // A lazy map of a closure over an endless input: one outcome that says what to use, then the end
    // (the input is not drained).
    let outcomes: Vec<_> = pool.map(|n: u64| n + 1, 0..).take(10).collect();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    match &outcomes[0] {
        Err(TaskError::Failed(failure)) => {
            assert!(failure.message().contains("map_task"), "{failure}")
        }
        other => panic!("expected a failure naming map_task, got {other:?}"),
    }
}

fn consumer_counts_are_checked() {
    let pool = Pool::processes(1).expect("a process pool starts");
    let input = JoinableQueue::new();
    let err = pool
        .consume_task(add, &input)
        .consumers(0)
        .start()
        .expect_err("0 consumers");
    assert!(matches!(err, ConsumeError::NoConsumers), "{err}");
    let err = pool
        .consume_task(add, &input)
        .consumers(5_000)
        .start()
        .expect_err("too many threads");
    assert!(
        matches!(err, ConsumeError::TooManyConsumers { asked: 5_000, .. }),
        "{err}"
    );
    // Two groups may share the pool; together they stay under the cap.
    let first = pool.consume_task(add, &input).consumers(1_000).start();
    let second = pool.consume_task(add, &input).consumers(100).start();
    assert!(first.is_ok());
    assert!(
        matches!(second, Err(ConsumeError::TooManyConsumers { .. })),
        "{second:?}"
    );
    input.close();
    first.expect("started").wait();
}

fn drop_finishes_the_items_in_hand_and_joins_the_consumers() {
    let pool = Pool::processes(2).expect("a process pool starts");
    let input = JoinableQueue::new();
    let output = JoinableQueue::new();
    let consumers = pool
        .consume_task(slow_square, &input)
        .output(&output)
        .start()
        .expect("consumers start");
    for n in 0..2u64 {
        input.put((n + 2, 300)).expect("open");
    }
    // Wait until both items are taken (in hand), then drop the pool.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !input.is_empty() {
        assert!(std::time::Instant::now() < deadline, "items never taken");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(pool);
    // The consumers were joined by the drop, after finishing their items: both results are in.
    assert_eq!(consumers.running(), 0);
    let mut squares = drain(&output);
    squares.sort_unstable();
    assert_eq!(squares, [4, 9]);
    consumers.wait();
}

fn consume_task_on_a_thread_pool_runs_in_this_process() {
    let pool = Pool::threads(2).expect("a thread pool starts");
    let input = JoinableQueue::new();
    let output = JoinableQueue::new();
    pool.consume_task(tag_with_pid, &input)
        .output(&output)
        .start()
        .expect("consumers start on threads");
    for n in 0..50u64 {
        input.put((n,)).expect("open");
    }
    input.join();
    let results = drain(&output);
    assert_eq!(results.len(), 50);
    assert!(results.iter().all(|&(_, pid)| pid == std::process::id()));
}

/// The code under test, written once against `TaskPool`.
fn sum_of_pairs(pool: &TaskPool) -> (u64, Vec<u64>) {
    let one = pool
        .with(TaskOptions::new().timeout(Duration::from_secs(30)))
        .submit_task(add, (40, 2))
        .expect("submitted")
        .wait()
        .expect("a value");
    let many = pool
        .map_task(add, (0..100u64).map(|n| (n, n)))
        .collect::<Result<Vec<_>, _>>()
        .expect("values");
    (one, many)
}

fn task_pool_runs_the_same_code_on_threads_and_processes() {
    let expected = (42, (0..100u64).map(|n| 2 * n).collect::<Vec<_>>());
    for spec in ["threads:2", "processes:2"] {
        let pool = TaskPool::from_spec(spec).expect("the pool starts");
        assert_eq!(sum_of_pairs(&pool), expected, "{spec}");
        let input = JoinableQueue::new();
        let output = JoinableQueue::new();
        pool.consume_task(add, &input)
            .output(&output)
            .start()
            .expect("consumers");
        input.put((1, 2)).expect("open");
        input.join();
        assert_eq!(drain(&output), [3], "{spec}");
        pool.shutdown(Shutdown::Wait);
        assert!(pool.is_shut_down());
        assert!(
            pool.submit_task(add, (1, 1)).is_err(),
            "{spec}: closed after shutdown"
        );
    }
    let pool = TaskPool::processes(1).expect("the pool starts");
    assert_eq!(pool.kind(), "processes");
    assert!(
        matches!(
            pool.as_pool().submit(|| 1),
            Err(martelli::Error::NotATask { .. })
        ),
        "the escape hatch still refuses closures at run time"
    );
}
