//! The cluster backend against a real `redis-server` (started by each test on a free port) and real
//! worker processes (this test binary re-run as a child, killed with real signals).
#![cfg(feature = "cluster")]

use martelli::cluster::{Client, ClusterError, SubmitOptions, Tasks, Worker, WorkerOptions, serve};
use martelli::{Priority, TaskError};
use martelli_testkit::proc::child_test;
use martelli_testkit::redis::RedisServer;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn fast(options: WorkerOptions) -> WorkerOptions {
    options
        .poll(Duration::from_millis(50))
        .lease(Duration::from_millis(500))
}

fn tasks() -> Tasks {
    Tasks::new()
        .raw("echo", |b: &[u8]| Ok(b.to_vec()))
        .typed("add", |(a, b): (i64, i64)| Ok::<_, std::io::Error>(a + b))
        .typed("fail", |msg: String| {
            Err::<(), _>(std::io::Error::other(msg))
        })
        .typed("boom", |n: u32| -> Result<u32, std::io::Error> {
            panic!("boom {n}")
        })
        .typed("sleep_ms", |ms: u64| {
            std::thread::sleep(Duration::from_millis(ms));
            Ok::<_, std::io::Error>(ms)
        })
}

fn expect_lost(result: Result<impl std::fmt::Debug, TaskError>) -> (u32, String) {
    match result {
        Err(TaskError::Lost { attempts, reason }) => (attempts, reason),
        other => panic!("expected Lost, got {other:?}"),
    }
}

#[test]
fn round_trips_every_outcome() {
    let redis = RedisServer::start();
    // `held` returns only when the test releases it, after its caller's deadline has passed.
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let tasks = tasks().typed("held", move |n: u64| {
        release_rx.lock().unwrap().recv().unwrap();
        Ok::<_, std::io::Error>(n)
    });
    let worker = Worker::start(
        &redis.url(),
        tasks,
        fast(WorkerOptions::new().concurrency(2)),
    )
    .unwrap();
    let client = Client::connect(&redis.url()).unwrap();

    let echo = client.submit_raw("echo", b"hello".to_vec()).unwrap();
    let add = client.submit::<_, i64>("add", &(40, 2)).unwrap();
    let fail = client.submit::<_, ()>("fail", "disk full").unwrap();
    let boom = client.submit::<_, u32>("boom", &7u32).unwrap();
    let unknown = client.submit::<_, ()>("no_such_task", &()).unwrap();
    let slow = client
        .with(SubmitOptions::new().timeout(Duration::from_millis(200)))
        .submit::<_, u64>("held", &1u64)
        .unwrap();
    let wrong_type = client.submit::<_, String>("add", &(1, 2)).unwrap();

    assert_eq!(echo.wait().unwrap(), b"hello");
    assert_eq!(add.wait().unwrap(), 42);
    match fail.wait() {
        Err(TaskError::Failed(failure)) => assert_eq!(failure.message(), "disk full"),
        other => panic!("expected Failed, got {other:?}"),
    }
    match boom.wait() {
        Err(TaskError::Panicked { message }) => assert_eq!(message, "boom 7"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    let (attempts, reason) = expect_lost(unknown.wait());
    assert_eq!(attempts, 1);
    assert!(reason.contains("unknown task \"no_such_task\""), "{reason}");
    // The task is still running (unreleased): the deadline resolved its future.
    match slow.wait() {
        Err(TaskError::TimedOut { after }) => assert_eq!(after, Duration::from_millis(200)),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    release_tx.send(()).unwrap();
    match wrong_type.wait() {
        Err(TaskError::Failed(f)) => {
            assert!(f.message().contains("could not decode the result"), "{f}")
        }
        other => panic!("expected a decode failure, got {other:?}"),
    }

    // The unknown task went to the dead-letter stream with its reason.
    let mut raw = redis.raw();
    let dead: Vec<redis::Value> = redis::cmd("XRANGE")
        .arg("martelli:q:default:dead")
        .arg("-")
        .arg("+")
        .query(&mut raw)
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert!(format!("{dead:?}").contains("no_such_task"));

    worker.stop();
    let report = worker.join().unwrap();
    // echo, add, the mistyped add, and held, which the worker ran to the end after its caller's
    // deadline; fail and boom failed.
    assert_eq!(report.succeeded, 4, "{report:?}");
    assert_eq!(report.failed, 2, "{report:?}");
    assert_eq!(report.dead_lettered, 1, "{report:?}");
}

#[test]
fn many_tasks_on_two_workers_each_result_arrives_once() {
    const N: u64 = 3_000;
    let redis = RedisServer::start();
    let w1 = Worker::start(
        &redis.url(),
        tasks(),
        fast(WorkerOptions::new().concurrency(4)),
    )
    .unwrap();
    let w2 = Worker::start(
        &redis.url(),
        tasks(),
        fast(WorkerOptions::new().concurrency(4)),
    )
    .unwrap();
    let client = Client::connect(&redis.url()).unwrap();
    let futures: Vec<_> = (0..N)
        .map(|i| client.submit::<_, i64>("add", &(i as i64, 1)).unwrap())
        .collect();
    let mut got: Vec<i64> = futures.into_iter().map(|f| f.wait().unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, (1..=N as i64).collect::<Vec<_>>());
    assert_eq!(client.pending(), 0);
    w1.stop();
    w2.stop();
    let (r1, r2) = (w1.join().unwrap(), w2.join().unwrap());
    assert_eq!(r1.succeeded + r2.succeeded, N, "{r1:?} {r2:?}");
    // Acknowledged entries are deleted: the streams hold nothing once every result is in.
    let mut raw = redis.raw();
    let len: u64 = redis::cmd("XLEN")
        .arg("martelli:q:default:normal")
        .query(&mut raw)
        .unwrap();
    assert_eq!(len, 0);
}

/// The `e` fields of a stream's entries, oldest first.
fn entries(raw: &mut redis::Connection, stream: &str) -> Vec<Vec<u8>> {
    let value: redis::Value = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(raw)
        .unwrap();
    let mut out = Vec::new();
    if let redis::Value::Array(items) = value {
        for item in items {
            if let redis::Value::Array(parts) = item {
                if let Some(redis::Value::Array(fields)) = parts.get(1) {
                    for pair in fields.chunks(2) {
                        if let [redis::Value::BulkString(k), redis::Value::BulkString(v)] = pair {
                            if k == b"e" {
                                out.push(v.clone());
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// Fields of the dead-letter stream's entries, as text.
fn dead_letters(raw: &mut redis::Connection) -> Vec<String> {
    let value: redis::Value = redis::cmd("XRANGE")
        .arg("martelli:q:default:dead")
        .arg("-")
        .arg("+")
        .query(raw)
        .unwrap();
    match value {
        redis::Value::Array(items) => items.iter().map(|i| format!("{i:?}")).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn a_task_delivered_twice_reaches_the_caller_once() {
    let redis = RedisServer::start();
    let client = Client::connect(&redis.url()).unwrap();
    let fut = client.submit::<_, i64>("add", &(2, 2)).unwrap();
    client.flush();
    // Queue the very same envelope a second time, as a producer retrying after a lost reply would.
    let mut raw = redis.raw();
    let queued = entries(&mut raw, "martelli:q:default:normal");
    assert_eq!(queued.len(), 1);
    let _: String = redis::cmd("XADD")
        .arg("martelli:q:default:normal")
        .arg("*")
        .arg("e")
        .arg(&queued[0])
        .query(&mut raw)
        .unwrap();
    let worker = Worker::start(
        &redis.url(),
        tasks(),
        fast(WorkerOptions::new().concurrency(1)),
    )
    .unwrap();
    assert_eq!(fut.wait().unwrap(), 4);
    // Results are popped in order: once a later task's result is in, both copies were seen.
    assert_eq!(
        client
            .submit::<_, i64>("add", &(3, 3))
            .unwrap()
            .wait()
            .unwrap(),
        6
    );
    assert_eq!(client.dropped_results(), 1);
    worker.stop();
    assert_eq!(worker.join().unwrap().succeeded, 3);
}

#[test]
fn priorities_run_high_first_and_delayed_tasks_wait_in_redis() {
    let redis = RedisServer::start();
    let client = Client::connect(&redis.url()).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let seen = order.clone();
    let tasks = Tasks::new().typed("record", move |label: String| {
        seen.lock().unwrap().push(label.clone());
        Ok::<_, std::io::Error>(label)
    });
    let submit = |label: &str, priority| {
        client
            .with(SubmitOptions::new().priority(priority))
            .submit::<_, String>("record", label)
            .unwrap()
    };
    let mut futures = vec![
        submit("low", Priority::Low),
        submit("normal", Priority::Normal),
    ];
    futures.push(submit("high", Priority::High));
    let delayed_at = Instant::now();
    let delayed = client
        .with(SubmitOptions::new().delay(Duration::from_millis(400)))
        .submit::<_, String>("record", "delayed")
        .unwrap();
    client.flush();
    let mut raw = redis.raw();
    let waiting: u64 = redis::cmd("ZCARD")
        .arg("martelli:q:default:delayed")
        .query(&mut raw)
        .unwrap();
    assert_eq!(waiting, 1, "the delayed task waits in the sorted set");

    let worker = Worker::start(
        &redis.url(),
        tasks,
        fast(WorkerOptions::new().concurrency(1)),
    )
    .unwrap();
    for f in futures {
        f.wait().unwrap();
    }
    assert_eq!(delayed.wait().unwrap(), "delayed");
    assert!(
        delayed_at.elapsed() >= Duration::from_millis(400),
        "ran before its delay"
    );
    assert_eq!(*order.lock().unwrap(), ["high", "normal", "low", "delayed"]);
    worker.stop();
    worker.join().unwrap();
}

#[test]
fn malformed_and_oversized_entries_are_dead_lettered_and_the_worker_goes_on() {
    let redis = RedisServer::start();
    let options = fast(WorkerOptions::new().concurrency(2)).max_payload(2048);
    let worker = Worker::start(&redis.url(), tasks(), options).unwrap();
    let client = Client::connect(&redis.url()).unwrap();
    let mut raw = redis.raw();
    let stream = "martelli:q:default:normal";
    let xadd = |raw: &mut redis::Connection, field: &str, value: &[u8]| {
        let _: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg(field)
            .arg(value)
            .query(raw)
            .unwrap();
    };
    // Not MessagePack; no envelope field; a version from the future; over the size limit.
    xadd(&mut raw, "e", b"\xc1 not msgpack");
    xadd(&mut raw, "task", b"add");
    let future_version = client_envelope(99, "echo", b"x");
    xadd(&mut raw, "e", &future_version);
    let big = client_envelope(1, "echo", &vec![7u8; 4096]);
    xadd(&mut raw, "e", &big);

    // The worker is unharmed: the next task runs.
    assert_eq!(
        client
            .submit_raw("echo", b"still here".to_vec())
            .unwrap()
            .wait()
            .unwrap(),
        b"still here"
    );
    // Dead letters and results are stored by the same writer but in batches of their own, so the
    // task's result may come before the last dead letter: wait for all four (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut letters = dead_letters(&mut raw);
    while letters.len() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        letters = dead_letters(&mut raw);
    }
    assert_eq!(letters.len(), 4, "{letters:#?}");
    assert!(
        letters[0].contains("not a valid MessagePack"),
        "{}",
        letters[0]
    );
    assert!(
        letters[1].contains("has no \\\"e\\\" field"),
        "{}",
        letters[1]
    );
    assert!(
        letters[2].contains("unsupported envelope version 99"),
        "{}",
        letters[2]
    );
    assert!(letters[3].contains("oversized entry"), "{}", letters[3]);
    assert!(
        letters[3].contains("truncated"),
        "an oversized entry is kept only as a sample"
    );

    // A client refuses an oversized task up front.
    let small = Client::builder(redis.url())
        .max_payload(1024)
        .build()
        .unwrap();
    match small.submit_raw("echo", vec![0u8; 4096]) {
        Err(e @ ClusterError::PayloadTooLarge { .. }) => {
            assert!(e.to_string().contains("over the limit of 1024"))
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    worker.stop();
    let report = worker.join().unwrap();
    assert_eq!(report.dead_lettered, 4, "{report:?}");
    assert_eq!(report.succeeded, 1, "{report:?}");
}

/// A task envelope as another producer would write it (MessagePack map with named fields).
fn client_envelope(version: u32, task: &str, payload: &[u8]) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Envelope<'a> {
        v: u32,
        id: &'a str,
        task: &'a str,
        #[serde(with = "serde_bytes")]
        payload: &'a [u8],
    }
    rmp_serde::to_vec_named(&Envelope {
        v: version,
        id: "raw-1",
        task,
        payload,
    })
    .unwrap()
}

#[test]
fn a_wrong_password_or_no_broker_is_a_clear_error() {
    let redis = RedisServer::with_args(&["--requirepass", "s3cret"]);
    let wrong = format!("redis://:nope@127.0.0.1:{}", redis.port);
    let err = Client::connect(&wrong).unwrap_err();
    assert!(err.is_auth(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("refused the credentials"), "{text}");
    assert!(!text.contains("nope"), "the password is not shown: {text}");
    let err = Worker::start(&redis.url(), tasks(), WorkerOptions::new()).unwrap_err();
    assert!(err.is_auth(), "no password at all: {err:?}");

    let right = format!("redis://:s3cret@127.0.0.1:{}", redis.port);
    let worker = Worker::start(&right, tasks(), fast(WorkerOptions::new().concurrency(1))).unwrap();
    let client = Client::connect(&right).unwrap();
    assert_eq!(
        client
            .submit::<_, i64>("add", &(1, 2))
            .unwrap()
            .wait()
            .unwrap(),
        3
    );
    worker.stop();
    worker.join().unwrap();

    let closed = RedisServer::start();
    let url = closed.url();
    drop(closed);
    let err = Client::connect(&url).unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
    assert!(
        err.to_string().contains("cannot reach the Redis broker"),
        "{err}"
    );
}

#[test]
fn client_and_worker_reconnect_after_a_redis_restart() {
    let mut redis = RedisServer::start();
    let worker = Worker::start(
        &redis.url(),
        tasks(),
        fast(WorkerOptions::new().concurrency(2)),
    )
    .unwrap();
    let client = Client::connect(&redis.url()).unwrap();
    assert_eq!(
        client
            .submit::<_, i64>("add", &(1, 1))
            .unwrap()
            .wait()
            .unwrap(),
        2
    );
    // Without persistence the restart loses the consumer group; the worker recreates it (NOGROUP).
    redis.restart();
    let futures: Vec<_> = (0..20)
        .map(|i| client.submit::<_, i64>("add", &(i, 1)).unwrap())
        .collect();
    let got: Vec<i64> = futures.into_iter().map(|f| f.wait().unwrap()).collect();
    assert_eq!(got, (1..=20).collect::<Vec<_>>());
    worker.stop();
    assert_eq!(worker.join().unwrap().succeeded, 21);
}

#[test]
fn with_aof_a_redis_restart_loses_no_task() {
    let dir = std::env::temp_dir().join(format!(
        "martelli-aof-{}-{}",
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
    let futures: Vec<_> = (0..50)
        .map(|i| client.submit::<_, i64>("add", &(i, 1)).unwrap())
        .collect();
    client.flush();
    // Killed, not shut down: only what the append-only file holds survives.
    redis.restart();
    let worker = Worker::start(
        &redis.url(),
        tasks(),
        fast(WorkerOptions::new().concurrency(2)),
    )
    .unwrap();
    // Without the AOF these tasks would be gone: fail rather than wait for ever.
    let got: Vec<i64> = futures
        .into_iter()
        .map(|f| match f.wait_timeout(Duration::from_secs(60)) {
            Ok(result) => result.unwrap(),
            Err(_) => panic!("a task queued before the restart was lost"),
        })
        .collect();
    assert_eq!(got, (1..=50).collect::<Vec<_>>());
    worker.stop();
    assert_eq!(worker.join().unwrap().succeeded, 50);
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stop_finishes_the_running_task() {
    let redis = RedisServer::start();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let started_tx = Mutex::new(started_tx);
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let tasks = Tasks::new().typed("gate", move |n: u32| {
        started_tx.lock().unwrap().send(()).unwrap();
        release_rx.lock().unwrap().recv().unwrap();
        Ok::<_, std::io::Error>(n)
    });
    let worker = Worker::start(
        &redis.url(),
        tasks,
        fast(WorkerOptions::new().concurrency(1)),
    )
    .unwrap();
    let client = Client::connect(&redis.url()).unwrap();
    let fut = client.submit::<_, u32>("gate", &5u32).unwrap();
    started_rx.recv().unwrap();
    worker.stop();
    release_tx.send(()).unwrap();
    let report = worker.join().unwrap();
    assert_eq!(fut.wait().unwrap(), 5);
    assert_eq!(report.succeeded, 1);
}

// ---- worker processes ------------------------------------------------------------------------------

const CHILD_URL: &str = "MARTELLI_TEST_CLUSTER_CHILD";

/// A worker in a child process: this test binary re-run with only `child_worker_entry` selected.
fn spawn_child_worker(url: &str) -> Child {
    child_test("child_worker_entry", CHILD_URL, url, false)
}

/// Not a test: the `main` of the child worker process the tests below start and kill. Its tasks
/// report their start on the Redis list `test:started` (with the child's pid), then `hang` waits for
/// ever and `crash` aborts the process.
#[test]
#[ignore = "the entry point of child worker processes, run by other tests"]
fn child_worker_entry() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let announce = {
        let url = url.clone();
        move || {
            let mut raw = redis::Client::open(url.as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            let _: () = redis::cmd("RPUSH")
                .arg("test:started")
                .arg(std::process::id())
                .query(&mut raw)
                .unwrap();
        }
    };
    let a2 = announce.clone();
    let a3 = announce.clone();
    let tasks = Tasks::new()
        .typed("hang", move |_: ()| -> Result<String, std::io::Error> {
            announce();
            loop {
                std::thread::park();
            }
        })
        .typed("crash", move |_: ()| -> Result<(), std::io::Error> {
            a2();
            std::process::abort()
        })
        .typed("slow_ok", move |ms: u64| {
            a3();
            std::thread::sleep(Duration::from_millis(ms));
            Ok::<_, std::io::Error>(ms)
        })
        .typed("double", |n: u64| Ok::<_, std::io::Error>(2 * n));
    serve(&url, tasks, fast(WorkerOptions::new().concurrency(2))).unwrap();
}

/// Blocks until a child task announces its start; returns the child's pid.
fn wait_started(raw: &mut redis::Connection) -> u32 {
    let (_, pid): (String, u32) = redis::cmd("BLPOP")
        .arg("test:started")
        .arg(30)
        .query(raw)
        .expect("a task started in time");
    pid
}

#[test]
fn a_worker_killed_mid_task_loses_nothing_the_task_completes_on_another() {
    let redis = RedisServer::start();
    let client = Client::connect(&redis.url()).unwrap();
    let mut raw = redis.raw();
    let mut child = spawn_child_worker(&redis.url());
    let fut = client.submit::<_, String>("hang", &()).unwrap();
    let pid = wait_started(&mut raw);
    assert_eq!(pid, child.id());
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // Another worker, where `hang` returns: it reclaims the task once the dead worker's lease expires.
    let tasks = Tasks::new().typed("hang", |_: ()| {
        Ok::<_, std::io::Error>("finished elsewhere".to_owned())
    });
    let worker = Worker::start(
        &redis.url(),
        tasks,
        fast(WorkerOptions::new().concurrency(1)),
    )
    .unwrap();
    assert_eq!(fut.wait().unwrap(), "finished elsewhere");
    worker.stop();
    let report = worker.join().unwrap();
    assert_eq!(report.reclaimed, 1, "{report:?}");
    assert_eq!(report.succeeded, 1, "{report:?}");
}

#[test]
fn a_poison_task_is_dead_lettered_after_max_attempts() {
    let redis = RedisServer::start();
    let client = Client::connect(&redis.url()).unwrap();
    let mut raw = redis.raw();
    let fut = client
        .with(SubmitOptions::new().max_attempts(2))
        .submit::<_, ()>("crash", &())
        .unwrap();
    // Two deliveries, each killing its worker.
    for _ in 0..2 {
        let mut child = spawn_child_worker(&redis.url());
        assert_eq!(wait_started(&mut raw), child.id());
        let status = child.wait().unwrap();
        assert!(!status.success(), "the crash task aborts its worker");
    }
    // A third worker must not run it (its `crash` would succeed): it is out of attempts.
    let tasks = Tasks::new().typed("crash", |_: ()| Ok::<_, std::io::Error>(()));
    let worker = Worker::start(
        &redis.url(),
        tasks,
        fast(WorkerOptions::new().concurrency(1)),
    )
    .unwrap();
    let (attempts, reason) = expect_lost(fut.wait());
    assert_eq!(attempts, 2);
    assert!(reason.contains("gave up after 2 attempt(s)"), "{reason}");
    let letters = dead_letters(&mut raw);
    assert_eq!(letters.len(), 1);
    assert!(letters[0].contains("gave up after 2"), "{}", letters[0]);
    worker.stop();
    let report = worker.join().unwrap();
    assert_eq!(
        (report.succeeded, report.dead_lettered),
        (0, 1),
        "{report:?}"
    );
}

#[test]
fn sigterm_stops_a_worker_process_after_its_running_task() {
    let redis = RedisServer::start();
    let client = Client::connect(&redis.url()).unwrap();
    let mut raw = redis.raw();
    let mut child = spawn_child_worker(&redis.url());
    let fut = client.submit::<_, u64>("slow_ok", &300u64).unwrap();
    assert_eq!(wait_started(&mut raw), child.id());
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) with a valid signal number on our own child's pid has no memory effects.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert!(status.success(), "a graceful stop exits 0: {status:?}");
    assert_eq!(
        fut.wait().unwrap(),
        300,
        "the running task finished and its result was stored"
    );
}

#[test]
fn tasks_survive_workers_killed_and_restarted_at_random() {
    const N: u64 = 10_000;
    let redis = RedisServer::start();
    let client = Client::connect(&redis.url()).unwrap();
    let mut children = vec![
        spawn_child_worker(&redis.url()),
        spawn_child_worker(&redis.url()),
    ];
    let futures: Vec<_> = (0..N)
        .map(|i| client.submit::<_, u64>("double", &i).unwrap())
        .collect();
    // Kill a worker (SIGKILL) after a pseudo-random number of results, four times, starting a fresh
    // one each time: whatever the dead worker held is reclaimed after its lease.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut kills: Vec<u64> = (0..4)
        .map(|_| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            100 + (seed >> 33) % (N - 200)
        })
        .collect();
    kills.sort_unstable();
    let mut seen = vec![0u32; N as usize];
    for (done, future) in martelli::as_completed(futures).enumerate() {
        let value = future.wait().unwrap();
        seen[(value / 2) as usize] += 1;
        if kills.first() == Some(&(done as u64)) {
            kills.remove(0);
            let victim = done % 2;
            children[victim].kill().unwrap();
            children[victim].wait().unwrap();
            children[victim] = spawn_child_worker(&redis.url());
        }
    }
    assert!(kills.is_empty());
    assert!(
        seen.iter().all(|&n| n == 1),
        "every result arrives exactly once"
    );
    assert_eq!(client.pending(), 0);
    for child in &mut children {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
