//! `#[martelli::task(…)]` options on the cluster: a declared retry policy applies to a task
//! submitted without one, and a declared rate limit is written by the worker unless one is set.
//! Against a real `redis-server` started by each test.
#![cfg(feature = "cluster")]

use martelli::Task;
use martelli::cluster::{Client, RecordState, Registered, SubmitOptions, Worker, WorkerOptions};
use martelli_testkit::poll;
use martelli_testkit::redis::RedisServer;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

static RUNS: AtomicU32 = AtomicU32::new(0);

/// Fails its first two runs, then returns its argument.
#[martelli::task(retries = 3, backoff_ms = 50, factor = 1, jitter = false, retry_on = ["failed"], retry_match = ["try again"])]
fn flaky(n: u32) -> Result<u32, String> {
    if RUNS.fetch_add(1, Ordering::SeqCst) < 2 {
        return Err("busy, try again".to_owned());
    }
    Ok(n)
}

/// Always fails with an error its policy does not match.
#[martelli::task(retries = 3, backoff_ms = 50, retry_match = ["try again"])]
fn broken() -> Result<u32, String> {
    Err("disk on fire".to_owned())
}

#[martelli::task(rate_limit = "7/s")]
fn limited() -> u32 {
    7
}

#[martelli::task(rate_limit = "20/m")]
fn preset() -> u32 {
    20
}

fn fast(options: WorkerOptions) -> WorkerOptions {
    options
        .poll(Duration::from_millis(50))
        .lease(Duration::from_millis(500))
}

#[test]
fn a_declared_retry_policy_applies_to_a_submission_without_one() {
    assert_eq!(flaky::OPTIONS.retries(), Some(3));
    let redis = RedisServer::start();
    let client = Client::connect(&redis.url()).unwrap();
    let worker = Worker::start(&redis.url(), Registered, fast(WorkerOptions::new())).unwrap();
    let keep = SubmitOptions::new().result_ttl(Duration::from_secs(600));
    let id = client
        .with(keep.clone())
        .send(flaky::NAME, &(5u32,))
        .unwrap();
    client.flush();
    let record = poll::read_until(
        "the flaky task to end",
        LIMIT,
        || client.status(&id).unwrap().expect("a record"),
        |r| r.state.is_ended(),
    );
    assert_eq!(record.state, RecordState::Done, "{record:?}");
    assert_eq!(client.result::<u32>(&id).unwrap().unwrap().unwrap(), 5);
    assert_eq!(record.errors.len(), 2, "two retried runs: {record:?}");
    assert_eq!(record.errors[0].error, "busy, try again");

    // An error the policy does not match is not retried.
    let id = client.with(keep).send(broken::NAME, &()).unwrap();
    client.flush();
    let record = poll::read_until(
        "the broken task to end",
        LIMIT,
        || client.status(&id).unwrap().expect("a record"),
        |r| r.state.is_ended(),
    );
    assert_eq!(record.state, RecordState::Failed);
    assert!(record.errors.is_empty(), "{record:?}");
    worker.stop();
    let report = worker.join().unwrap();
    assert_eq!(report.retried, 2, "{report:?}");
}

#[test]
fn a_declared_rate_limit_is_written_unless_one_is_set() {
    let redis = RedisServer::start();
    let mut raw = redis.raw();
    // An operator's limit for `preset` is there before any worker.
    let _: () = redis::cmd("HSET")
        .arg("martelli:ratelimits")
        .arg(preset::NAME)
        .arg("1/1000")
        .query(&mut raw)
        .unwrap();
    let worker = Worker::start(&redis.url(), Registered, fast(WorkerOptions::new())).unwrap();
    let limits: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg("martelli:ratelimits")
        .query(&mut raw)
        .unwrap();
    assert_eq!(
        limits.get(limited::NAME).map(String::as_str),
        Some("7/1000")
    );
    assert_eq!(limits.get(preset::NAME).map(String::as_str), Some("1/1000"));
    // And it holds: 8 starts of `limited` take at least a second (7 intervals of 1/7 s).
    let client = Client::connect(&redis.url()).unwrap();
    let start = std::time::Instant::now();
    let futures: Vec<_> = (0..8)
        .map(|_| client.submit::<_, u32>(limited::NAME, &()).unwrap())
        .collect();
    for future in futures {
        assert_eq!(poll::within(LIMIT, move || future.wait()).unwrap(), 7);
    }
    assert!(
        start.elapsed() >= Duration::from_millis(950),
        "8 starts at 7/s took {:?}",
        start.elapsed()
    );
    worker.stop();
    worker.join().unwrap();
}
