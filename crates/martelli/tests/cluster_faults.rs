//! The cluster under faults, against a real `redis-server` (started by each test on a free port):
//! a broker that drops its connections while a worker starts, envelopes a worker refuses, tasks out
//! of attempts, and a broker restarted without persistence under running and queued tasks.
#![cfg(feature = "cluster")]

use martelli::cluster::{Client, OnLost, Tasks, Worker, WorkerOptions};
use martelli::{Status, TaskError};
use martelli_testkit::envelope::Envelope;
use martelli_testkit::poll;
use martelli_testkit::redis::RedisServer;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

/// The longest any wait of these tests lasts before it fails.
const LIMIT: Duration = Duration::from_secs(30);

fn fast(options: WorkerOptions) -> WorkerOptions {
    options
        .poll(Duration::from_millis(50))
        .lease(Duration::from_millis(500))
}

fn tasks() -> Tasks {
    Tasks::new()
        .typed("add", |(a, b): (i64, i64)| Ok::<_, std::io::Error>(a + b))
        .typed("sleep_ms", |ms: u64| {
            std::thread::sleep(Duration::from_millis(ms));
            Ok::<_, std::io::Error>(ms)
        })
}

/// Waits for a future at most [`LIMIT`].
#[track_caller]
fn within<T>(future: martelli::Future<T>, what: &str) -> martelli::TaskResult<T> {
    match future.wait_timeout(LIMIT) {
        Ok(result) => result,
        Err(_) => panic!("{what}: no outcome within {LIMIT:?}"),
    }
}

/// A TCP proxy to the redis-server on `target` that closes at once the connections it accepts
/// whose number (from 0) is in `drop`, and forwards the others: a broker that drops a client
/// just after accepting it, as one does while it shuts down or restarts.
fn dropping_proxy(target: u16, drop: &'static [usize]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().enumerate() {
            let Ok(client) = client else { continue };
            if drop.contains(&n) {
                let _ = client.shutdown(Shutdown::Both);
                continue;
            }
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Both);
                });
            }
        }
    });
    format!("redis://127.0.0.1:{port}")
}

#[test]
fn a_worker_whose_broker_drops_it_while_starting_reconnects_and_serves() {
    let redis = RedisServer::start();
    // The first connection is dropped during its handshake; so are the write connection of the
    // second attempt and the one after.
    let url = dropping_proxy(redis.port, &[0, 2, 3]);
    let worker = Worker::start(&url, tasks(), fast(WorkerOptions::new().concurrency(1)))
        .expect("a broker that drops the connection is waited for, not an error at start");
    let client = Client::connect(&redis.url()).unwrap();
    let sum = client.submit::<_, i64>("add", &(2, 3)).unwrap();
    assert_eq!(within(sum, "a task on the worker").unwrap(), 5);
    worker.stop();
    assert_eq!(worker.join().unwrap().succeeded, 1);

    // A client starts the same way.
    let url = dropping_proxy(redis.port, &[0]);
    Client::connect(&url).expect("the client waits for a broker that dropped it");
}

/// A result envelope as a test reads it back from a reply list.
#[derive(Debug, serde::Deserialize)]
struct WireResult {
    id: String,
    status: String,
    error: Option<String>,
    attempts: u32,
}

/// Pops one result from `list` (waiting at most [`LIMIT`]).
fn pop_result(raw: &mut redis::Connection, list: &str) -> WireResult {
    let (_, bytes): (String, Vec<u8>) = redis::cmd("BLPOP")
        .arg(list)
        .arg(LIMIT.as_secs())
        .query(raw)
        .unwrap_or_else(|e| panic!("no result on {list} within {LIMIT:?}: {e}"));
    rmp_serde::from_slice(&bytes).expect("a result envelope")
}

/// Queues a hand-written envelope on the normal stream.
fn xadd_envelope(raw: &mut redis::Connection, envelope: &Envelope<'_>) {
    let _: String = redis::cmd("XADD")
        .arg("martelli:q:default:normal")
        .arg("*")
        .arg("e")
        .arg(envelope.encode())
        .query(raw)
        .unwrap();
}

#[test]
fn a_refused_envelope_that_names_its_reply_list_gets_a_lost_result() {
    let redis = RedisServer::start();
    let mut raw = redis.raw();
    let worker = Worker::start(
        &redis.url(),
        tasks(),
        fast(WorkerOptions::new().concurrency(1)),
    )
    .unwrap();
    let payload = rmp_serde::to_vec(&(1, 2)).unwrap();
    let refused = [
        (2, 3, "a version this worker does not speak", "version 2"),
        (1, 0, "no attempt allowed", "0 attempts"),
    ];
    for (i, (v, max_attempts, what, says)) in refused.iter().enumerate() {
        let id = format!("refused-{i}");
        xadd_envelope(
            &mut raw,
            &Envelope::new(&id, "add", &payload)
                .version(*v)
                .reply("test:reply")
                .max_attempts(*max_attempts),
        );
        let result = pop_result(&mut raw, "test:reply");
        assert_eq!(result.id, id, "{what}");
        assert_eq!(result.status, "lost", "{what}: {result:?}");
        let error = result.error.unwrap_or_default();
        assert!(error.contains(says), "{what}: {error}");
    }
    worker.stop();
    assert_eq!(worker.join().unwrap().dead_lettered, 2);
}

#[test]
fn a_task_out_of_attempts_on_its_first_delivery_says_where_they_went() {
    let redis = RedisServer::start();
    let mut raw = redis.raw();
    // A producer re-queued it after three attempts of its own: none is left.
    let payload = rmp_serde::to_vec(&(1, 2)).unwrap();
    xadd_envelope(
        &mut raw,
        &Envelope::new("spent", "add", &payload)
            .reply("test:reply")
            .max_attempts(3)
            .attempts(3),
    );
    let worker = Worker::start(
        &redis.url(),
        tasks(),
        fast(WorkerOptions::new().concurrency(1)),
    )
    .unwrap();
    let result = pop_result(&mut raw, "test:reply");
    assert_eq!(result.status, "lost", "{result:?}");
    assert_eq!(result.attempts, 3);
    let error = result.error.unwrap_or_default();
    assert!(error.contains("gave up after 3 attempt(s)"), "{error}");
    assert!(
        error.contains("3 spent before this entry was queued"),
        "{error}"
    );
    assert!(
        !error.contains("lease"),
        "no lease lapsed on a first delivery: {error}"
    );
    worker.stop();
    worker.join().unwrap();
}

#[test]
fn a_future_reads_running_once_a_worker_starts_it_and_cancel_still_stops_it() {
    let redis = RedisServer::start();
    let (events_tx, events) = std::sync::mpsc::channel::<&str>();
    let events_tx = std::sync::Mutex::new(events_tx);
    let spinner = tasks().typed("spin", move |_: ()| {
        events_tx.lock().unwrap().send("started").unwrap();
        let mut spins = 0u64;
        while !martelli::is_cancelled() {
            spins += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        events_tx.lock().unwrap().send("stopped").unwrap();
        Ok::<_, std::io::Error>(spins)
    });
    let worker = Worker::start(
        &redis.url(),
        spinner,
        fast(WorkerOptions::new().concurrency(1)),
    )
    .unwrap();
    let client = Client::connect(&redis.url()).unwrap();
    // Queued behind a task that holds the only slot.
    let first = client.submit::<_, u64>("sleep_ms", &300u64).unwrap();
    let spin = client.submit::<_, u64>("spin", &()).unwrap();
    assert_eq!(spin.status(), Status::Queued);
    assert_eq!(within(first, "the first task").unwrap(), 300);
    assert_eq!(events.recv_timeout(LIMIT), Ok("started"));
    poll::until("the future to read as running", LIMIT, || {
        spin.status() == Status::Running
    });
    // Cancelling a running task: not removed from a queue, but its future resolves as cancelled
    // and its worker sees the tombstone (its token fires, and it returns).
    assert!(!spin.cancel());
    assert!(matches!(
        within(spin, "the cancelled task"),
        Err(TaskError::Cancelled)
    ));
    assert_eq!(
        events.recv_timeout(LIMIT),
        Ok("stopped"),
        "the task saw its token fire"
    );
    worker.stop();
    let report = worker.join().unwrap();
    assert_eq!((report.succeeded, report.cancelled), (1, 1), "{report:?}");
}

/// Stops the broker as `redis-cli shutdown nosave` does, and starts it again on the same port:
/// everything it held is gone.
fn shutdown_nosave_and_restart(redis: &mut RedisServer) {
    let mut raw = redis.raw();
    let _ = redis::cmd("SHUTDOWN").arg("NOSAVE").exec(&mut raw);
    redis.restart();
}

/// A worker with one slot whose `nap` task says when it starts (on the receiver returned).
fn napping_worker(redis: &RedisServer) -> (Worker, std::sync::mpsc::Receiver<u64>) {
    let (started_tx, started) = std::sync::mpsc::channel::<u64>();
    let started_tx = std::sync::Mutex::new(started_tx);
    let tasks = tasks().typed("nap", move |ms: u64| {
        let _ = started_tx.lock().unwrap().send(ms);
        std::thread::sleep(Duration::from_millis(ms));
        Ok::<_, std::io::Error>(ms)
    });
    let worker = Worker::start(
        &redis.url(),
        tasks,
        fast(WorkerOptions::new().concurrency(1)),
    )
    .unwrap();
    (worker, started)
}

/// Submits four naps of 800 ms to a worker with one slot, and restarts the broker without
/// persistence while the first runs: the other three vanish with the stream.
fn four_tasks_across_a_restart(
    redis: &mut RedisServer,
    client: &Client,
    started: &std::sync::mpsc::Receiver<u64>,
) -> Vec<martelli::Future<u64>> {
    let futures: Vec<_> = (0..4)
        .map(|_| client.submit::<_, u64>("nap", &800u64).unwrap())
        .collect();
    // All four in the broker before it goes.
    client.flush();
    started.recv_timeout(LIMIT).expect("the first task starts");
    shutdown_nosave_and_restart(redis);
    futures
}

#[test]
fn tasks_lost_in_a_restart_without_persistence_are_queued_again() {
    let mut redis = RedisServer::start();
    let (worker, started) = napping_worker(&redis);
    let client = Client::connect(&redis.url()).unwrap();
    let futures = four_tasks_across_a_restart(&mut redis, &client, &started);
    for future in futures {
        assert_eq!(within(future, "a task across the restart").unwrap(), 800);
    }
    // The running one finished on its worker (its heartbeat listed it); the three queued ones
    // were queued again, once each.
    assert_eq!(client.resubmitted(), 3);
    worker.stop();
    let report = worker.join().unwrap();
    assert_eq!(report.succeeded, 4, "each task ran once: {report:?}");
}

#[test]
fn with_on_lost_fail_tasks_lost_in_a_restart_fail_as_lost() {
    let mut redis = RedisServer::start();
    let (worker, started) = napping_worker(&redis);
    let client = Client::builder(redis.url())
        .on_lost(OnLost::Fail)
        .build()
        .unwrap();
    let mut futures = four_tasks_across_a_restart(&mut redis, &client, &started).into_iter();
    let running = futures.next().unwrap();
    assert_eq!(within(running, "the running task").unwrap(), 800);
    for future in futures {
        match within(future, "a queued task across the restart") {
            Err(TaskError::Lost { attempts, reason }) => {
                assert_eq!(attempts, 0, "it never started");
                assert!(reason.contains("vanished from the broker"), "{reason}");
            }
            other => panic!("expected Lost, got {other:?}"),
        }
    }
    assert_eq!(client.resubmitted(), 0);
    worker.stop();
    assert_eq!(worker.join().unwrap().succeeded, 1);
}
