//! Crash storms on a process pool: 1,000 items on 3 workers, items ending in 13 abort their worker
//! and items ending in 57 panic, with and without recycling (`max_tasks_per_worker(5)`), through
//! `submit_task` and through `consume_task` with 4 consumers. Every item's outcome is checked
//! exactly, and every item must have run exactly once: each run appends the item's number to a
//! file before it does anything else, so a task that was blamed for its neighbour's crash, or sent
//! again after it ran, shows.
//!
//! This test binary is its own worker program: `main` calls `martelli::init()` first. It has its
//! own small runner (`harness = false`): `cargo test -p martelli --test processes_storm [filter]`.
//! Each storm runs `MARTELLI_STRESS_ROUNDS` rounds (5 by default).

#[path = "support/runner.rs"]
mod runner;
#[path = "support/tasks.rs"]
mod tasks;

use martelli::{ItemError, JoinableQueue, Pool, TaskError, TaskResult};
use std::collections::BTreeMap;
use std::time::Duration;

/// Items per round.
const ITEMS: u64 = 1_000;
/// Workers of the pool.
const WORKERS: usize = 3;
/// Consumers of the queue (more than workers, so some items wait behind others in a worker).
const CONSUMERS: usize = 4;
/// Tasks a worker runs before it is recycled, when recycling is on.
const RECYCLE_AFTER: usize = 5;

// ---- the task --------------------------------------------------------------------------------

/// Records `n` in the file at `path` (as `tasks::record`), then aborts its worker if `n` ends in
/// 13, panics if it ends in 57, and doubles it otherwise.
#[martelli::task]
fn storm_item(path: String, n: u64) -> u64 {
    tasks::record::call(path, n);
    match expected(n) {
        Expected::Aborts => {
            eprintln!("item {n} aborts its worker on purpose");
            std::process::abort()
        }
        Expected::Panics => panic!("item {n} panics on purpose"),
        Expected::Doubled => n * 2,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Aborts,
    Panics,
    Doubled,
}

fn expected(n: u64) -> Expected {
    match n % 100 {
        13 => Expected::Aborts,
        57 => Expected::Panics,
        _ => Expected::Doubled,
    }
}

// ---- the runner ------------------------------------------------------------------------------

fn main() {
    martelli::init();
    runner::run(&[
        (
            "storm_submit_task_without_recycling",
            storm_submit_task_without_recycling,
        ),
        (
            "storm_submit_task_with_recycling",
            storm_submit_task_with_recycling,
        ),
        (
            "storm_consume_task_without_recycling",
            storm_consume_task_without_recycling,
        ),
        (
            "storm_consume_task_with_recycling",
            storm_consume_task_with_recycling,
        ),
    ]);
}

// ---- helpers ---------------------------------------------------------------------------------

/// How many rounds each storm runs: `MARTELLI_STRESS_ROUNDS`, or 5.
fn rounds() -> usize {
    std::env::var("MARTELLI_STRESS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

fn storm_pool(recycle: bool) -> Pool {
    let mut builder = Pool::builder().processes(WORKERS);
    if recycle {
        builder = builder.max_tasks_per_worker(RECYCLE_AFTER);
    }
    builder.build().expect("a process pool starts")
}

/// A fresh file for the runs of one round.
fn record_file(what: &str, round: usize) -> String {
    let path = std::env::temp_dir().join(format!(
        "martelli-storm-{what}-{}-{round}",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    path.display().to_string()
}

/// Checks that every item ran exactly once; removes the file.
#[track_caller]
fn assert_each_ran_once(path: &str, what: &str) {
    let mut runs: BTreeMap<u64, usize> = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        *runs.entry(line.parse().expect("a number")).or_insert(0) += 1;
    }
    let _ = std::fs::remove_file(path);
    let twice: Vec<_> = runs.iter().filter(|&(_, &c)| c > 1).collect();
    assert!(
        twice.is_empty(),
        "{what}: items that ran more than once (item, runs): {twice:?}"
    );
    let never: Vec<u64> = (0..ITEMS).filter(|n| !runs.contains_key(n)).collect();
    assert!(never.is_empty(), "{what}: items that never ran: {never:?}");
    assert_eq!(runs.len() as u64, ITEMS, "{what}: runs of items never sent");
}

/// Checks one item's outcome against what it does.
#[track_caller]
fn assert_outcome(n: u64, outcome: &TaskResult<u64>, what: &str) {
    match (expected(n), outcome) {
        (Expected::Doubled, Ok(v)) => assert_eq!(*v, n * 2, "{what}: item {n}"),
        (Expected::Panics, Err(TaskError::Panicked { message })) => {
            assert!(
                message.contains(&format!("item {n} panics")),
                "{what}: item {n}: {message}"
            )
        }
        (Expected::Aborts, Err(TaskError::WorkerDied(death))) => {
            assert_eq!(
                death.signal,
                Some(libc::SIGABRT),
                "{what}: item {n}: {death}"
            );
            assert!(
                death.stderr_tail.contains(&format!("item {n} aborts")),
                "{what}: item {n}: the death report is another item's: {death}"
            );
        }
        (expected, outcome) => panic!("{what}: item {n} should have {expected:?}, got {outcome:?}"),
    }
}

// ---- the storms ------------------------------------------------------------------------------

fn storm_submit_task_without_recycling() {
    storm_submit_task(false);
}

fn storm_submit_task_with_recycling() {
    storm_submit_task(true);
}

fn storm_consume_task_without_recycling() {
    storm_consume_task(false);
}

fn storm_consume_task_with_recycling() {
    storm_consume_task(true);
}

/// Every item submitted at once (so short tasks are pipelined behind each other), then each
/// future checked.
fn storm_submit_task(recycle: bool) {
    for round in 0..rounds() {
        let what = format!("submit_task, recycling {recycle}, round {round}");
        let pool = storm_pool(recycle);
        let path = record_file("submit", round);
        let futures: Vec<_> = (0..ITEMS)
            .map(|n| {
                pool.submit_task(storm_item, (path.clone(), n))
                    .expect("submitted")
            })
            .collect();
        for (n, future) in (0..ITEMS).zip(futures) {
            let outcome = future
                .wait_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("{what}: item {n} did not finish within 120 s"));
            assert_outcome(n, &outcome, &what);
        }
        drop(pool);
        assert_each_ran_once(&path, &what);
    }
}

/// Every item through a queue served by 4 consumers on 3 workers; each failed item comes back
/// in its `ItemError`.
fn storm_consume_task(recycle: bool) {
    for round in 0..rounds() {
        let what = format!("consume_task, recycling {recycle}, round {round}");
        let pool = storm_pool(recycle);
        let path = record_file("consume", round);
        let input = JoinableQueue::new();
        let output = JoinableQueue::new();
        let errors: JoinableQueue<ItemError> = JoinableQueue::new();
        let consumers = pool
            .consume_task(storm_item, &input)
            .consumers(CONSUMERS)
            .output(&output)
            .errors(&errors)
            .start()
            .expect("consumers start");
        for n in 0..ITEMS {
            input
                .put((path.clone(), n))
                .expect("the input queue is open");
        }
        input
            .join_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("{what}: the items were not done within 120 s"));
        let mut outcomes: BTreeMap<u64, TaskResult<u64>> = BTreeMap::new();
        while let Ok(value) = output.try_get() {
            output.task_done().expect("task_done for an item taken");
            let n = value / 2;
            assert!(
                outcomes.insert(n, Ok(value)).is_none(),
                "{what}: item {n} delivered twice"
            );
        }
        while let Ok(mut failure) = errors.try_get() {
            errors.task_done().expect("task_done for an item taken");
            let (_, n) = failure
                .take_item::<(String, u64)>()
                .unwrap_or_else(|| panic!("{what}: a failure without its item: {failure}"));
            assert!(
                outcomes.insert(n, Err(failure.into_error())).is_none(),
                "{what}: item {n} reported twice"
            );
        }
        for n in 0..ITEMS {
            match outcomes.get(&n) {
                Some(outcome) => assert_outcome(n, outcome, &what),
                None => panic!("{what}: item {n} has no outcome"),
            }
        }
        assert_eq!(consumers.processed(), ITEMS, "{what}");
        input.close();
        consumers.wait();
        drop(pool);
        assert_each_ran_once(&path, &what);
    }
}
