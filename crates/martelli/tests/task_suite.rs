//! The semantics suite in registered tasks, on all five backends: inline, threads, async,
//! processes and the cluster (a private `redis-server` and an in-process worker serving the
//! `#[martelli::task]` functions below). `backend_suite!` (tests/common) runs the same behaviours
//! with closures on the in-process backends; this file is its half that every tier shares.
//!
//! Each trial is named `BACKEND::BEHAVIOUR`: `cargo nextest run --all-features --test task_suite
//! -E 'test(/^processes::/)'`. The binary is its own worker program (`main` calls
//! `martelli::init()` first), so the process pool re-runs it as its workers.
//!
//! # What the out-of-process backends do not share, and why
//!
//! These behaviours of `backend_suite!` stay in-process only:
//! - **closures** (`submit`, `submit_fallible`, `map`, `try_submit` handing the closure back): code
//!   does not travel to another process or machine; processes and the cluster refuse a closure with
//!   `Error::NotATask` (tests/processes.rs, tests/cluster_pool.rs check that refusal);
//! - **scopes** (`Pool::scope` borrowing the caller's stack): a borrow cannot cross a process
//!   boundary;
//! - **`WorkerLocal` state through an initializer**: processes and the cluster refuse the
//!   `initializer` setting at `build()` (their workers are other programs);
//! - **a failure's source by type** (`TaskFailure::downcast_ref`): an error crosses as its message,
//!   so only the message is shared (checked here);
//! - **a map over an endless iterator pulling a bounded number of inputs**: `map_task` sends inputs
//!   in chunks whose window the backends size differently; the bound is checked per backend in
//!   their own files.

use martelli::cluster::{Registered, Worker, WorkerOptions};
use martelli::{Pool, Shutdown, TaskError, WaitMode};
use martelli_testkit::redis::RedisServer;
use std::sync::mpsc;
use std::time::Duration;

// ---- the tasks -------------------------------------------------------------------------------

#[martelli::task]
fn suite_triple(x: u64) -> u64 {
    x * 3
}

#[martelli::task]
fn suite_double_unless_seven(x: u32) -> u32 {
    if x == 7 {
        panic!("seven");
    }
    x * 2
}

#[martelli::task]
fn suite_panics(message: String) -> u32 {
    panic!("{message}")
}

#[martelli::task]
fn suite_fails(path: String) -> Result<u8, std::io::Error> {
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("no such file: {path}"),
    ))
}

// ---- the backends ----------------------------------------------------------------------------

/// A pool and, for the cluster, its broker and worker (stopped after the pool, broker last).
struct Env {
    pool: Option<Pool>,
    cluster: Option<(Worker, RedisServer)>,
}

impl Env {
    fn pool(&self) -> &Pool {
        self.pool
            .as_ref()
            .expect("the pool lives as long as its Env")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        drop(self.pool.take());
        if let Some((worker, redis)) = self.cluster.take() {
            worker.stop();
            let _ = worker.join();
            drop(redis);
        }
    }
}

fn local(pool: Pool) -> Env {
    Env {
        pool: Some(pool),
        cluster: None,
    }
}

fn cluster() -> Env {
    let redis = RedisServer::start();
    let options = WorkerOptions::new()
        .concurrency(3)
        .poll(Duration::from_millis(50))
        .lease(Duration::from_millis(500));
    let worker = Worker::start(&redis.url(), Registered, options).expect("a worker starts");
    let pool = Pool::cluster(&redis.url()).expect("a cluster pool");
    Env {
        pool: Some(pool),
        cluster: Some((worker, redis)),
    }
}

/// A backend's name and how to make its pool.
type Backend = (&'static str, fn() -> Env);

const BACKENDS: &[Backend] = &[
    ("inline", || local(Pool::inline())),
    ("threads", || local(Pool::threads(3).unwrap())),
    ("async", || local(Pool::event_loop().unwrap())),
    ("processes", || local(Pool::processes(2).unwrap())),
    ("cluster", cluster),
];

// ---- the behaviours --------------------------------------------------------------------------

fn submit_task_returns_the_value(pool: &Pool) {
    assert_eq!(
        pool.submit_task(suite_triple, (14,))
            .unwrap()
            .wait()
            .unwrap(),
        42
    );
}

fn many_submissions_each_resolve_once(pool: &Pool) {
    let futures: Vec<_> = (0..300u64)
        .map(|i| pool.submit_task(suite_triple, (i,)).unwrap())
        .collect();
    let sum: u64 = futures.into_iter().map(|f| f.wait().unwrap()).sum();
    assert_eq!(sum, 3 * (0..300u64).sum::<u64>());
}

fn a_panic_is_an_outcome_and_the_pool_goes_on(pool: &Pool) {
    let bad = pool.submit_task(suite_panics, ("boom 7".into(),)).unwrap();
    match bad.wait() {
        Err(TaskError::Panicked { message }) => assert_eq!(message, "boom 7"),
        other => panic!("expected a panic outcome, got {other:?}"),
    }
    // Every worker survives: more tasks than workers still run.
    let n = (pool.workers().max(1) * 3) as u64;
    let futures: Vec<_> = (0..n)
        .map(|i| pool.submit_task(suite_triple, (i,)).unwrap())
        .collect();
    let got: Vec<u64> = futures.into_iter().map(|f| f.wait().unwrap()).collect();
    assert_eq!(got, (0..n).map(|i| i * 3).collect::<Vec<_>>());
}

fn a_returned_error_is_failed_with_its_message(pool: &Pool) {
    let fut = pool.submit_task(suite_fails, ("a.txt".into(),)).unwrap();
    match fut.wait() {
        Err(TaskError::Failed(failure)) => {
            assert_eq!(failure.message(), "no such file: a.txt")
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

fn as_completed_yields_every_future_once(pool: &Pool) {
    let futures: Vec<_> = (0..50u64)
        .map(|i| pool.submit_task(suite_triple, (i,)).unwrap())
        .collect();
    let mut got: Vec<u64> = martelli::as_completed(futures)
        .map(|f| f.wait().unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..50u64).map(|i| i * 3).collect::<Vec<_>>());
}

fn wait_all_returns_every_future_done(pool: &Pool) {
    let futures: Vec<_> = (0..20u64)
        .map(|i| pool.submit_task(suite_triple, (i,)).unwrap())
        .collect();
    let waited = martelli::wait(futures, WaitMode::All, None);
    assert_eq!(waited.done.len(), 20);
    assert!(waited.pending.is_empty());
    assert!(waited.done.iter().all(|f| f.is_done()));
}

fn map_task_keeps_input_order_and_reports_each_panic(pool: &Pool) {
    let out: Vec<_> = pool
        .map_task(suite_double_unless_seven, (0..20u32).map(|x| (x,)))
        .collect();
    assert_eq!(out.len(), 20);
    for (i, r) in out.into_iter().enumerate() {
        if i == 7 {
            assert!(r.unwrap_err().is_panic());
        } else {
            assert_eq!(r.unwrap(), i as u32 * 2);
        }
    }
}

fn on_done_runs_once_with_the_outcome(pool: &Pool) {
    let (tx, rx) = mpsc::channel();
    let fut = pool.submit_task(suite_triple, (3,)).unwrap();
    fut.on_done(move |r| {
        tx.send(*r.as_ref().unwrap()).unwrap();
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(60)).unwrap(), 9);
    // Registered after completion: runs at once, on this thread.
    let (tx2, rx2) = mpsc::channel();
    fut.on_done(move |r| tx2.send(r.is_ok()).unwrap());
    assert!(rx2.try_recv().unwrap());
    assert_eq!(fut.wait().unwrap(), 9);
}

fn submitting_after_shutdown_is_an_error(pool: &Pool) {
    pool.shutdown(Shutdown::Wait);
    assert!(pool.is_shut_down());
    assert!(matches!(
        pool.submit_task(suite_triple, (1,)),
        Err(martelli::Error::ShutDown)
    ));
    // Shutting down twice is harmless.
    pool.shutdown(Shutdown::CancelPending);
}

/// A behaviour's name and its check.
type Behaviour = (&'static str, fn(&Pool));

const BEHAVIOURS: &[Behaviour] = &[
    (
        "submit_task_returns_the_value",
        submit_task_returns_the_value,
    ),
    (
        "many_submissions_each_resolve_once",
        many_submissions_each_resolve_once,
    ),
    (
        "a_panic_is_an_outcome_and_the_pool_goes_on",
        a_panic_is_an_outcome_and_the_pool_goes_on,
    ),
    (
        "a_returned_error_is_failed_with_its_message",
        a_returned_error_is_failed_with_its_message,
    ),
    (
        "as_completed_yields_every_future_once",
        as_completed_yields_every_future_once,
    ),
    (
        "wait_all_returns_every_future_done",
        wait_all_returns_every_future_done,
    ),
    (
        "map_task_keeps_input_order_and_reports_each_panic",
        map_task_keeps_input_order_and_reports_each_panic,
    ),
    (
        "on_done_runs_once_with_the_outcome",
        on_done_runs_once_with_the_outcome,
    ),
    (
        "submitting_after_shutdown_is_an_error",
        submitting_after_shutdown_is_an_error,
    ),
];

// ---- the runner ------------------------------------------------------------------------------

fn main() {
    martelli::init();
    let mut args = libtest_mimic::Arguments::from_args();
    // One trial at a time unless asked: the process pools' trials share this program's workers.
    args.test_threads.get_or_insert(1);
    let trials = BACKENDS
        .iter()
        .flat_map(|&(backend, make)| {
            BEHAVIOURS.iter().map(move |&(behaviour, check)| {
                libtest_mimic::Trial::test(format!("{backend}::{behaviour}"), move || {
                    let env = make();
                    check(env.pool());
                    Ok(())
                })
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit()
}
