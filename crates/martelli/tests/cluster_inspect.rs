//! `cluster::Inspector` and `cluster::DeadLetters` against a real `redis-server` (started by each
//! test on a free port): finding a task wherever it is, paging through 10,000 dead letters, and
//! requeueing or discarding them, with real workers where a test needs one.
#![cfg(feature = "cluster")]

use martelli::cluster::{
    DeadLetterError, Inspector, InspectorOptions, PageStart, TaskState, Tasks, Worker,
    WorkerOptions,
};
use martelli_testkit::envelope::Envelope;
use martelli_testkit::poll;
use martelli_testkit::redis::RedisServer;
use std::time::Duration;

const NORMAL: &str = "martelli:q:default:normal";
const HIGH: &str = "martelli:q:default:high";
const DEAD: &str = "martelli:q:default:dead";
const DELAYED: &str = "martelli:q:default:delayed";

/// A task envelope with a key this version does not know.
fn envelope(id: &str, task: &str, payload: &[u8], attempts: u32) -> Vec<u8> {
    Envelope::new(id, task, payload)
        .attempts(attempts)
        .unknown_key("kept")
        .encode()
}

fn inspector(redis: &RedisServer) -> Inspector {
    Inspector::connect(&redis.url(), &InspectorOptions::new()).expect("the inspector connects")
}

/// Adds a dead letter as a worker writes it.
fn letter(conn: &mut redis::Connection, id: &str, stream: &str, e: Option<&[u8]>) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(DEAD)
        .arg("*")
        .arg("reason")
        .arg("unknown task \"t\"")
        .arg("stream")
        .arg(stream)
        .arg("entry")
        .arg("1-1")
        .arg("attempts")
        .arg(1)
        .arg("worker")
        .arg("w")
        .arg("at")
        .arg(1)
        .arg("id")
        .arg(id);
    match e {
        Some(e) => cmd.arg("e").arg(e),
        None => cmd.arg("sample").arg(&b"abc"[..]).arg("truncated").arg(1),
    };
    cmd.query(conn).expect("XADD a letter")
}

/// A stream entry as read: its id and its fields.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

fn entries(conn: &mut redis::Connection, key: &str) -> Vec<Vec<u8>> {
    let reply: Vec<StreamEntry> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query(conn)
        .expect("XRANGE");
    reply
        .into_iter()
        .filter_map(|(_, fields)| fields.into_iter().find(|(k, _)| k == "e").map(|(_, v)| v))
        .collect()
}

#[test]
fn a_task_is_found_wherever_it_is() {
    let redis = RedisServer::start();
    let mut raw = redis.raw();
    let mut inspector = inspector(&redis);
    // Waiting, in the high stream.
    let _: String = redis::cmd("XADD")
        .arg(HIGH)
        .arg("*")
        .arg("e")
        .arg(envelope("w1", "resize", b"<b>x</b>", 1))
        .query(&mut raw)
        .unwrap();
    let view = inspector.task("default", "w1").unwrap();
    assert!(
        matches!(
            view.state,
            Some(TaskState::Waiting {
                priority: "high",
                ..
            })
        ),
        "{view:?}"
    );
    let e = view.envelope.expect("the envelope");
    assert_eq!(
        (e.task.as_str(), e.payload.preview.as_str()),
        ("resize", "<b>x</b>")
    );
    assert_eq!(view.attempts, Some(1));
    // Held: read by a consumer of the group.
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(HIGH)
        .arg("martelli")
        .arg("0")
        .query(&mut raw)
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("martelli")
        .arg("node-1-0000abcd")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(HIGH)
        .arg(">")
        .query(&mut raw)
        .unwrap();
    let view = inspector.task("default", "w1").unwrap();
    match view.state {
        Some(TaskState::Held {
            consumer,
            deliveries,
            ..
        }) => {
            assert_eq!((consumer.as_str(), deliveries), ("node-1-0000abcd", 1));
        }
        other => panic!("held, not {other:?}"),
    }
    assert_eq!(
        view.attempts,
        Some(2),
        "the envelope's attempt and this delivery"
    );
    // Delayed.
    let mut member = b"2".to_vec();
    member.extend(envelope("d1", "later", b"", 0));
    let _: u64 = redis::cmd("ZADD")
        .arg(DELAYED)
        .arg(4_000_000_000_000u64)
        .arg(member)
        .query(&mut raw)
        .unwrap();
    let view = inspector.task("default", "d1").unwrap();
    assert!(
        matches!(
            view.state,
            Some(TaskState::Delayed {
                priority: "low",
                due_ms: 4_000_000_000_000
            })
        ),
        "{view:?}"
    );
    let page = inspector.delayed("default", 0, 10).unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.tasks[0].envelope.as_ref().unwrap().id, "d1");
    // Dead-lettered, with its tombstone (cancelled).
    letter(&mut raw, "x1", NORMAL, Some(&envelope("x1", "t", b"", 0)));
    let _: () = redis::cmd("SET")
        .arg("martelli:cancel:x1")
        .arg(1)
        .query(&mut raw)
        .unwrap();
    let view = inspector.task("default", "x1").unwrap();
    match &view.state {
        Some(TaskState::Dead { letter }) => assert_eq!(letter.reason, "unknown task \"t\""),
        other => panic!("dead, not {other:?}"),
    }
    assert!(view.cancelled && view.complete);
    // Nowhere.
    let view = inspector.task("default", "nope").unwrap();
    assert!(view.state.is_none() && view.complete);
    // The queues are found from their keys.
    assert_eq!(inspector.queues().unwrap(), ["default"]);
}

#[test]
fn requeueing_resets_attempts_keeps_the_envelope_and_refuses_what_cannot_run() {
    let redis = RedisServer::start();
    let mut raw = redis.raw();
    let mut inspector = inspector(&redis);
    let spent = letter(&mut raw, "a", HIGH, Some(&envelope("a", "t", b"p", 3)));
    let sample = letter(&mut raw, "b", NORMAL, None);
    let garbage = letter(&mut raw, "c", NORMAL, Some(b"\xc1 not an envelope"));
    let mut dead = inspector.dead_letters("default");
    dead.requeue(&spent).unwrap();
    // Back on the stream it came from, attempts 0, the unknown key kept.
    let queued = entries(&mut raw, HIGH);
    assert_eq!(queued.len(), 1);
    let back: rmpv::Value = rmpv::decode::read_value(&mut queued[0].as_slice()).unwrap();
    let get = |k: &str| {
        back.as_map()
            .unwrap()
            .iter()
            .find(|(key, _)| key.as_str() == Some(k))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("attempts"), Some(rmpv::Value::from(0)));
    assert_eq!(get("x_future"), Some(rmpv::Value::from("kept")));
    assert_eq!(get("id"), Some(rmpv::Value::from("a")));
    // Requeued once only.
    assert!(matches!(
        dead.requeue(&spent),
        Err(DeadLetterError::NotFound { .. })
    ));
    for letter in [&sample, &garbage] {
        let e = dead.requeue(letter).unwrap_err();
        assert!(matches!(e, DeadLetterError::NotRequeueable { .. }), "{e}");
        assert!(e.to_string().contains("cannot be requeued"), "{e}");
    }
    assert!(matches!(
        dead.requeue("nonsense"),
        Err(DeadLetterError::InvalidId { .. })
    ));
    // Requeue all skips them too; discard all removes every letter there.
    let bulk = dead.requeue_all().unwrap();
    assert_eq!((bulk.done, bulk.skipped), (0, 2));
    dead.discard(&sample).unwrap();
    assert!(matches!(
        dead.discard(&sample),
        Err(DeadLetterError::NotFound { .. })
    ));
    assert_eq!(dead.discard_all().unwrap().done, 1);
    let len: u64 = redis::cmd("XLEN").arg(DEAD).query(&mut raw).unwrap();
    assert_eq!(len, 0);
}

#[test]
fn ten_thousand_dead_letters_page_and_requeue_to_a_worker() {
    let redis = RedisServer::start();
    let mut raw = redis.raw();
    let mut pipe = redis::pipe();
    const N: usize = 10_000;
    for n in 0..N {
        let id = format!("t{n}");
        pipe.cmd("XADD")
            .arg(DEAD)
            .arg("*")
            .arg("reason")
            .arg("gave up")
            .arg("stream")
            .arg(NORMAL)
            .arg("id")
            .arg(&id)
            .arg("e")
            // Every attempt spent: without its attempts back it would be dead-lettered again.
            .arg(envelope(&id, "echo", id.as_bytes(), 3))
            .ignore();
    }
    pipe.exec(&mut raw).unwrap();
    let mut inspector = inspector(&redis);
    // Older pages to the end, then newer pages back: every letter once, in order.
    let mut dead = inspector.dead_letters("default");
    let mut seen = Vec::new();
    let mut page = dead.page(PageStart::Newest, 500).unwrap();
    assert_eq!(page.total, N as u64);
    assert!(!page.newer);
    loop {
        seen.extend(page.letters.iter().map(|l| l.id.clone().unwrap()));
        if !page.older {
            break;
        }
        let last = page.letters.last().unwrap().letter.clone();
        page = dead.page(PageStart::Before(&last), 500).unwrap();
    }
    let expected: Vec<String> = (0..N).rev().map(|n| format!("t{n}")).collect();
    assert_eq!(seen, expected);
    let first = page.letters.first().unwrap().letter.clone();
    let back = dead.page(PageStart::After(&first), 50).unwrap();
    assert_eq!(back.letters.last().unwrap().id.as_deref(), Some("t500"));
    assert!(back.newer && back.older);
    // Requeue all: every task runs on a worker that knows it.
    let bulk = dead.requeue_all().unwrap();
    assert_eq!((bulk.done, bulk.skipped), (N as u64, 0));
    let worker = Worker::start(
        &redis.url(),
        Tasks::new().raw("echo", |b: &[u8]| Ok(b.to_vec())),
        WorkerOptions::default().concurrency(8),
    )
    .unwrap();
    poll::until("every requeued task run", Duration::from_secs(60), || {
        let len: u64 = redis::cmd("XLEN").arg(NORMAL).query(&mut raw).unwrap();
        len == 0
    });
    let len: u64 = redis::cmd("XLEN").arg(DEAD).query(&mut raw).unwrap();
    assert_eq!(
        len, 0,
        "none was dead-lettered again: each had its attempts back"
    );
    worker.stop();
    worker.join().unwrap();
}
