//! The cluster under faults, against a real `redis-server` (started by each test on a free port):
//! a broker that drops its connections while a worker starts, envelopes a worker refuses, tasks out
//! of attempts, and a broker restarted without persistence under running and queued tasks.
#![cfg(feature = "cluster")]

use martelli::cluster::{Client, Tasks, Worker, WorkerOptions};
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
fn xadd_envelope(raw: &mut redis::Connection, envelope: &impl serde::Serialize) {
    let bytes = rmp_serde::to_vec_named(envelope).unwrap();
    let _: String = redis::cmd("XADD")
        .arg("martelli:q:default:normal")
        .arg("*")
        .arg("e")
        .arg(bytes)
        .query(raw)
        .unwrap();
}

#[derive(serde::Serialize)]
struct Envelope<'a> {
    v: u32,
    id: &'a str,
    task: &'a str,
    #[serde(with = "serde_bytes")]
    payload: &'a [u8],
    reply: &'a str,
    max_attempts: u32,
    attempts: u32,
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
            &Envelope {
                v: *v,
                id: &id,
                task: "add",
                payload: &payload,
                reply: "test:reply",
                max_attempts: *max_attempts,
                attempts: 0,
            },
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
    xadd_envelope(
        &mut raw,
        &Envelope {
            v: 1,
            id: "spent",
            task: "add",
            payload: &rmp_serde::to_vec(&(1, 2)).unwrap(),
            reply: "test:reply",
            max_attempts: 3,
            attempts: 3,
        },
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
