//! The cluster platform's additions to the protocol (docs/protocol.md, "Additions to version 1"):
//! task records read by id from any process, and retries with backoff. Against a real
//! `redis-server` (started by each test), with real worker processes killed with SIGKILL where a
//! test needs a worker to die at the worst moment.
#![cfg(feature = "cluster")]

use martelli::TaskError;
use martelli::cluster::{
    Client, RecordState, Retry, RetryOn, SubmitOptions, Tasks, Worker, WorkerOptions, serve,
};
use martelli_testkit::poll;
use martelli_testkit::proc::child_test;
use martelli_testkit::redis::RedisServer;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);

fn fast(options: WorkerOptions) -> WorkerOptions {
    options
        .poll(Duration::from_millis(50))
        .lease(Duration::from_millis(500))
}

fn tasks() -> Tasks {
    Tasks::new()
        .typed("add", |(a, b): (i64, i64)| Ok::<_, std::io::Error>(a + b))
        .typed("fail", |msg: String| {
            Err::<(), _>(std::io::Error::other(msg))
        })
}

/// A stream entry's fields.
type Fields = Vec<(String, Vec<u8>)>;

/// The dead letters' fields, newest last.
fn dead_letters(raw: &mut redis::Connection) -> Vec<Fields> {
    let entries: Vec<(String, Fields)> = redis::cmd("XRANGE")
        .arg("martelli:q:default:dead")
        .arg("-")
        .arg("+")
        .query(raw)
        .unwrap();
    entries.into_iter().map(|(_, fields)| fields).collect()
}

fn field<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
}

#[test]
fn a_record_is_read_by_id_from_another_client_until_its_ttl_ends() {
    let redis = RedisServer::start();
    let sender = Client::connect(&redis.url()).unwrap();
    let reader = Client::connect(&redis.url()).unwrap();

    // Sent before any worker runs: the record says queued.
    let keep = SubmitOptions::new().result_ttl(Duration::from_secs(600));
    let keeping = sender.with(keep);
    let sum = keeping.send("add", &(40, 2)).unwrap();
    let failed = keeping.send("fail", "disk full").unwrap();
    sender.flush();
    let record = reader.status(&sum).unwrap().expect("a record");
    assert_eq!(record.state, RecordState::Queued);
    assert_eq!(record.task, "add");
    assert!(reader.result::<i64>(&sum).unwrap().is_none());

    let worker = Worker::start(&redis.url(), tasks(), fast(WorkerOptions::new())).unwrap();
    let record = poll::read_until(
        "the task to end",
        LIMIT,
        || reader.status(&sum).unwrap().expect("a record"),
        |r| r.state.is_ended(),
    );
    assert_eq!(record.state, RecordState::Done);
    assert_eq!(record.attempts, 1);
    assert!(record.worker.is_some());
    assert_eq!(reader.result::<i64>(&sum).unwrap().unwrap().unwrap(), 42);

    let record = poll::read_until(
        "the failing task to end",
        LIMIT,
        || reader.status(&failed).unwrap().expect("a record"),
        |r| r.state.is_ended(),
    );
    assert_eq!(record.state, RecordState::Failed);
    assert_eq!(record.status(), Some("failed"));
    match reader.result::<()>(&failed).unwrap() {
        Some(Err(TaskError::Failed(failure))) => assert_eq!(failure.message(), "disk full"),
        other => panic!("expected Failed, got {other:?}"),
    }

    // A task submitted with a future keeps a record too when asked; and the record expires.
    let short = SubmitOptions::new()
        .result_ttl(Duration::from_millis(300))
        .id("chosen-id");
    let future = sender.with(short).submit::<_, i64>("add", &(1, 2)).unwrap();
    assert_eq!(future.wait().unwrap(), 3);
    assert_eq!(
        reader.result::<i64>("chosen-id").unwrap().unwrap().unwrap(),
        3
    );
    poll::until("the record to expire", LIMIT, || {
        reader.status("chosen-id").unwrap().is_none()
    });
    assert!(reader.status("no-such-task").unwrap().is_none());

    // Without a result TTL, a submitted task keeps no record.
    let mut raw = redis.raw();
    let plain = sender.submit::<_, i64>("add", &(2, 2)).unwrap();
    assert_eq!(plain.wait().unwrap(), 4);
    let records: Vec<String> = redis::cmd("KEYS")
        .arg("martelli:task:*")
        .query(&mut raw)
        .unwrap();
    assert_eq!(records.len(), 2, "{records:?}");

    worker.stop();
    worker.join().unwrap();
}

#[test]
fn a_running_task_reads_as_running() {
    let redis = RedisServer::start();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    let tasks = Tasks::new().typed("held", move |n: u64| {
        release_rx.lock().unwrap().recv().unwrap();
        Ok::<_, std::io::Error>(n)
    });
    let worker = Worker::start(&redis.url(), tasks, fast(WorkerOptions::new())).unwrap();
    let client = Client::connect(&redis.url()).unwrap();
    let id = client.send("held", &7u64).unwrap();
    let record = poll::read_until(
        "the task to start",
        LIMIT,
        || client.status(&id).unwrap(),
        |r| r.as_ref().is_some_and(|r| r.state == RecordState::Running),
    )
    .unwrap();
    assert_eq!(record.attempts, 1);
    assert_eq!(record.worker.as_deref(), Some(worker.consumer()));
    release_tx.send(()).unwrap();
    let record = poll::read_until(
        "the task to end",
        LIMIT,
        || client.status(&id).unwrap().unwrap(),
        |r| r.state.is_ended(),
    );
    assert_eq!(record.value::<u64>().unwrap().unwrap(), 7);
    worker.stop();
    worker.join().unwrap();
}

#[test]
fn retries_back_off_then_succeed_and_keep_each_error() {
    let redis = RedisServer::start();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let tasks = Tasks::new().typed("flaky", move |n: u32| {
        let call = c.fetch_add(1, Ordering::SeqCst) + 1;
        if call <= 2 {
            Err(std::io::Error::other(format!("transient failure {call}")))
        } else {
            Ok(n * 2)
        }
    });
    let worker = Worker::start(&redis.url(), tasks, fast(WorkerOptions::new())).unwrap();
    let client = Client::connect(&redis.url()).unwrap();
    let options = SubmitOptions::new()
        .retry(
            Retry::new(3)
                .backoff(Duration::from_millis(100))
                .jitter(false),
        )
        .result_ttl(Duration::from_secs(600))
        .id("flaky-1");
    let start = Instant::now();
    let future = client
        .with(options)
        .submit::<_, u32>("flaky", &21u32)
        .unwrap();
    assert_eq!(future.wait().unwrap(), 42);
    // Two retries: 100 ms, then 200 ms.
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let record = client.status("flaky-1").unwrap().unwrap();
    assert_eq!(record.state, RecordState::Done);
    let errors: Vec<(u32, &str)> = record
        .errors
        .iter()
        .map(|e| (e.attempt, e.error.as_str()))
        .collect();
    assert_eq!(
        errors,
        [(1, "transient failure 1"), (2, "transient failure 2")]
    );
    assert!(record.errors.iter().all(|e| e.status == "failed"));
    worker.stop();
    let report = worker.join().unwrap();
    assert_eq!(report.retried, 2, "{report:?}");
    assert_eq!(report.succeeded, 1, "{report:?}");
    assert!(dead_letters(&mut redis.raw()).is_empty());
}

#[test]
fn a_task_out_of_retries_is_dead_lettered_with_every_runs_error() {
    let redis = RedisServer::start();
    let worker = Worker::start(&redis.url(), tasks(), fast(WorkerOptions::new())).unwrap();
    let client = Client::connect(&redis.url()).unwrap();
    let options = SubmitOptions::new()
        .retry(Retry::new(2).backoff(Duration::from_millis(20)))
        .result_ttl(Duration::from_secs(600))
        .id("doomed");
    let future = client
        .with(options)
        .submit::<_, ()>("fail", "still broken")
        .unwrap();
    match future.wait() {
        Err(TaskError::Failed(failure)) => {
            assert!(
                failure
                    .message()
                    .starts_with("still broken (run 3 of at most 3"),
                "{}",
                failure.message()
            );
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    let letters = dead_letters(&mut redis.raw());
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    let reason = String::from_utf8_lossy(field(letter, "reason").unwrap()).into_owned();
    assert!(
        reason.starts_with("retries exhausted: 3 run(s)"),
        "{reason}"
    );
    let errors: Vec<martelli::cluster::AttemptError> =
        rmp_serde::from_slice(field(letter, "errors").unwrap()).unwrap();
    assert_eq!(
        errors.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(errors.iter().all(|e| e.error == "still broken"));
    let record = client.status("doomed").unwrap().unwrap();
    assert_eq!(record.state, RecordState::Dead);
    worker.stop();
    let report = worker.join().unwrap();
    assert_eq!((report.retried, report.dead_lettered), (2, 1), "{report:?}");
}

#[test]
fn only_the_chosen_errors_are_retried() {
    let redis = RedisServer::start();
    let worker = Worker::start(&redis.url(), tasks(), fast(WorkerOptions::new())).unwrap();
    let client = Client::connect(&redis.url()).unwrap();
    let retry = Retry::new(5)
        .backoff(Duration::from_millis(10))
        .on(&[RetryOn::Failed])
        .matching(["transient"]);
    let options = SubmitOptions::new().retry(retry);
    let future = client
        .with(options)
        .submit::<_, ()>("fail", "permanent: bad input")
        .unwrap();
    match future.wait() {
        Err(TaskError::Failed(failure)) => assert_eq!(failure.message(), "permanent: bad input"),
        other => panic!("expected Failed, got {other:?}"),
    }
    worker.stop();
    let report = worker.join().unwrap();
    assert_eq!((report.retried, report.failed), (0, 1), "{report:?}");
    assert!(dead_letters(&mut redis.raw()).is_empty());
}

const CHILD_URL: &str = "MARTELLI_PLATFORM_TEST_URL";

fn spawn_child_worker(url: &str) -> Child {
    child_test("child_worker_entry", CHILD_URL, url, false)
}

/// Not a test: the `main` of the child worker process the test below starts and kills. Its
/// `flaky` always fails.
#[test]
#[ignore = "the entry point of child worker processes, run by other tests"]
fn child_worker_entry() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let tasks = Tasks::new().typed("flaky", |_: u32| {
        Err::<u32, _>(std::io::Error::other("failed on the child"))
    });
    serve(&url, tasks, fast(WorkerOptions::new().concurrency(1))).unwrap();
}

/// The retry state lives in Redis: the worker that scheduled a retry is killed (SIGKILL) right
/// after, and the broker restarts (with AOF) while the retry waits; another worker runs it.
#[test]
fn a_retry_survives_its_worker_killed_and_a_broker_restart_with_aof() {
    // The append-only file goes to a directory of its own, removed at the end.
    let dir = std::env::temp_dir().join(format!(
        "martelli-platform-aof-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let dir_arg = dir.to_str().unwrap().to_owned();
    let mut redis = RedisServer::with_args(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        &dir_arg,
    ]);
    let client = Client::connect(&redis.url()).unwrap();
    let options = SubmitOptions::new()
        .retry(Retry::new(1).backoff(Duration::from_secs(2)).jitter(false))
        .result_ttl(Duration::from_secs(600))
        .id("survivor");
    let future = client
        .with(options)
        .submit::<_, u32>("flaky", &5u32)
        .unwrap();
    let mut child = spawn_child_worker(&redis.url());
    let mut raw = redis.raw();
    // The retry is scheduled: the task waits in the delayed set.
    poll::until("the retry to be scheduled", LIMIT, || {
        redis::cmd("ZCARD")
            .arg("martelli:q:default:delayed")
            .query::<u64>(&mut raw)
            .unwrap()
            == 1
    });
    child.kill().unwrap();
    child.wait().unwrap();
    redis.restart();
    // Another worker, where `flaky` succeeds, runs the retry when it is due.
    let tasks = Tasks::new().typed("flaky", |n: u32| Ok::<_, std::io::Error>(n + 1));
    let worker = Worker::start(&redis.url(), tasks, fast(WorkerOptions::new())).unwrap();
    let answer = poll::within(LIMIT, move || future.wait());
    assert_eq!(answer.unwrap(), 6);
    let record = client.status("survivor").unwrap().unwrap();
    assert_eq!(record.state, RecordState::Done);
    assert_eq!(record.errors.len(), 1);
    assert_eq!(record.errors[0].error, "failed on the child");
    worker.stop();
    let report = worker.join().unwrap();
    assert_eq!(report.succeeded, 1, "{report:?}");
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_backoff_grows_and_is_capped() {
    let redis = RedisServer::start();
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let c = calls.clone();
    let tasks = Tasks::new().typed("fails", move |_: u32| {
        c.lock().unwrap().push(Instant::now());
        Err::<u32, _>(std::io::Error::other("no"))
    });
    let worker = Worker::start(&redis.url(), tasks, fast(WorkerOptions::new())).unwrap();
    let client = Client::connect(&redis.url()).unwrap();
    let retry = Retry::new(4)
        .backoff(Duration::from_millis(100))
        .factor(3)
        .max_backoff(Duration::from_millis(500))
        .jitter(false);
    let future = client
        .with(SubmitOptions::new().retry(retry))
        .submit::<_, u32>("fails", &0u32)
        .unwrap();
    assert!(future.wait().is_err());
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 5);
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    // 100, 300, 500 (capped from 900), 500 ms; each no shorter than its delay.
    for (gap, min) in gaps.iter().zip([100, 300, 500, 500]) {
        assert!(*gap >= Duration::from_millis(min), "{gaps:?}");
    }
    worker.stop();
    worker.join().unwrap();
}

/// Four workers share one rate limit, kept in Redis: tasks of the name never start faster than the
/// limit, whichever worker runs them. (How close to the limit the rate
/// stays over a minute is measured by `scripts/bench-cluster-rate.sh`, not asserted here: a loaded
/// machine can only slow the workers down.)
#[test]
fn a_rate_limit_holds_across_four_workers() {
    let redis = RedisServer::start();
    let client = Client::connect(&redis.url()).unwrap();
    client
        .set_rate_limit("tick", "20/s".parse().unwrap())
        .unwrap();
    let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers: Vec<Worker> = (0..4)
        .map(|_| {
            let s = starts.clone();
            let tasks = Tasks::new()
                .typed("tick", move |n: u32| {
                    s.lock().unwrap().push(Instant::now());
                    Ok::<_, std::io::Error>(n)
                })
                .typed("free", |n: u32| Ok::<_, std::io::Error>(n));
            Worker::start(
                &redis.url(),
                tasks,
                fast(WorkerOptions::new().concurrency(2)),
            )
            .unwrap()
        })
        .collect();
    let n = 50u32;
    let futures: Vec<_> = (0..n)
        .map(|i| client.submit::<_, u32>("tick", &i).unwrap())
        .collect();
    // A task of another name is not held back.
    let free = client.submit::<_, u32>("free", &7).unwrap();
    assert_eq!(poll::within(LIMIT, move || free.wait()).unwrap(), 7);
    for (i, future) in futures.into_iter().enumerate() {
        assert_eq!(future.wait().unwrap(), i as u32);
    }
    let mut starts = starts.lock().unwrap().clone();
    starts.sort();
    assert_eq!(starts.len(), n as usize);
    // The limit reserves start times 50 ms apart and no task starts before its reserved time
    // (it may start later, when the machine is slow): so the k-th start is at least k intervals
    // after the first task's reservation, which is at most a little before the first start.
    let interval = Duration::from_millis(50);
    let slack = Duration::from_millis(100);
    for (k, at) in starts.iter().enumerate() {
        let since = *at - starts[0] + slack;
        assert!(
            since >= interval * k as u32,
            "start {k} came {:?} after the first, sooner than {k} intervals of 50 ms",
            *at - starts[0]
        );
    }
    let mut rate_limited = 0;
    for worker in workers {
        worker.stop();
        rate_limited += worker.join().unwrap().rate_limited;
    }
    assert!(rate_limited >= u64::from(n) - 8, "{rate_limited}");
    client.clear_rate_limit("tick").unwrap();
}
