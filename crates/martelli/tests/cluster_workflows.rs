//! Workflows (docs/protocol.md, "Addition 5"): chains, groups and chords, against a real
//! `redis-server` (started by each test), with real worker processes killed with SIGKILL while a
//! chord's members finish.
#![cfg(feature = "cluster")]

use martelli::TaskError;
use martelli::cluster::{
    Client, FlowOptions, OnMemberFailure, RecordState, Step, TaskRecord, Tasks, Worker,
    WorkerOptions, serve,
};
use martelli_testkit::poll;
use martelli_testkit::proc::{KillOnDrop, Signal, child_test};
use martelli_testkit::redis::RedisServer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A stream entry's fields.
type Fields = Vec<(String, Vec<u8>)>;

const LIMIT: Duration = Duration::from_secs(60);

fn fast(options: WorkerOptions) -> WorkerOptions {
    options
        .poll(Duration::from_millis(50))
        .lease(Duration::from_millis(500))
}

/// `add((a, b))`, `double(x)` (one plain argument), `fail((x,))`, `square((n,))` and `sum((xs,))`,
/// which counts its runs in `sums`.
fn tasks(sums: Arc<AtomicU32>) -> Tasks {
    Tasks::new()
        .typed("add", |(a, b): (i64, i64)| Ok::<_, std::io::Error>(a + b))
        .typed("double", |x: i64| Ok::<_, std::io::Error>(2 * x))
        .typed("fail", |(x,): (i64,)| {
            Err::<i64, _>(std::io::Error::other(format!("boom at {x}")))
        })
        .typed("square", |(n,): (i64,)| {
            if n < 0 {
                return Err(std::io::Error::other(format!("negative member {n}")));
            }
            Ok(n * n)
        })
        .typed("sum", move |(xs,): (Vec<Option<i64>>,)| {
            sums.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(xs.into_iter().map(|x| x.unwrap_or(0)).sum::<i64>())
        })
}

fn ended(client: &Client, id: &str) -> TaskRecord {
    poll::read_until(
        &format!("task {id} to end"),
        LIMIT,
        || client.status(id).unwrap(),
        |r| r.as_ref().is_some_and(|r| r.state.is_ended()),
    )
    .unwrap()
}

fn field(raw: &mut redis::Connection, key: &str, field: &str) -> Option<String> {
    redis::cmd("HGET").arg(key).arg(field).query(raw).unwrap()
}

#[test]
fn a_chain_passes_each_result_to_the_next() {
    let redis = RedisServer::start();
    let client = Client::connect(&redis.url()).unwrap();
    let worker = Worker::start(
        &redis.url(),
        tasks(Arc::default()),
        fast(WorkerOptions::new()),
    )
    .unwrap();
    // add(1, 2) = 3; add(3, 10) = 13; double(13) = 26 (the value as the whole payload).
    let chain = client
        .chain([
            Step::new("add", &(1, 2)).unwrap(),
            Step::new("add", &(10,)).unwrap(),
            Step::new("double", &()).unwrap().whole(),
        ])
        .unwrap();
    assert_eq!(chain.steps().len(), 3);
    assert_eq!(chain.id(), chain.steps()[2]);
    let record = ended(&client, chain.id());
    assert_eq!(record.state, RecordState::Done, "{record:?}");
    assert_eq!(
        client.result::<i64>(chain.id()).unwrap().unwrap().unwrap(),
        26
    );
    // Each step's own record holds its value.
    assert_eq!(
        client
            .result::<i64>(&chain.steps()[0])
            .unwrap()
            .unwrap()
            .unwrap(),
        3
    );
    assert_eq!(
        client
            .result::<i64>(&chain.steps()[1])
            .unwrap()
            .unwrap()
            .unwrap(),
        13
    );
    // A chain of one step is that task.
    let one = client.chain([Step::new("add", &(2, 2)).unwrap()]).unwrap();
    ended(&client, one.id());
    assert_eq!(client.result::<i64>(one.id()).unwrap().unwrap().unwrap(), 4);
    worker.stop();
    let report = worker.join().unwrap();
    assert_eq!(report.succeeded, 4, "{report:?}");
}

#[test]
fn a_failed_step_stops_the_chain_with_its_error() {
    let redis = RedisServer::start();
    let client = Client::connect(&redis.url()).unwrap();
    let worker = Worker::start(
        &redis.url(),
        tasks(Arc::default()),
        fast(WorkerOptions::new()),
    )
    .unwrap();
    let chain = client
        .chain([
            Step::new("add", &(1, 2)).unwrap(),
            Step::new("fail", &()).unwrap(),
            Step::new("add", &(100,)).unwrap(),
        ])
        .unwrap();
    let record = ended(&client, chain.id());
    assert_eq!(record.state, RecordState::Failed, "{record:?}");
    match client.result::<i64>(chain.id()).unwrap() {
        Some(Err(TaskError::Failed(failure))) => assert_eq!(
            failure.message(),
            "chain step 2 of 3 (task fail) failed (failed): boom at 3",
            "the chain's error names the step and carries its error"
        ),
        other => panic!("expected the chain to fail, got {other:?}"),
    }
    // The failed step's own record has its error; the last step never ran.
    let step = ended(&client, &chain.steps()[1]);
    assert_eq!(step.error(), Some("boom at 3"));
    worker.stop();
    let report = worker.join().unwrap();
    assert_eq!(
        report.succeeded, 1,
        "only the first step returned: {report:?}"
    );
    assert_eq!(report.failed, 1, "{report:?}");
    // Bad steps are refused before anything is queued.
    let err = client
        .chain([
            Step::new("add", &(1, 2)).unwrap(),
            Step::new("double", &5).unwrap(),
        ])
        .unwrap_err();
    assert!(err.to_string().contains("Step::whole"), "{err}");
    assert!(client.chain(Vec::new()).is_err());
}

#[test]
fn a_group_fans_out_and_is_read_in_order() {
    let redis = RedisServer::start();
    let client = Client::connect(&redis.url()).unwrap();
    let worker = Worker::start(
        &redis.url(),
        tasks(Arc::default()),
        fast(WorkerOptions::new().concurrency(4)),
    )
    .unwrap();
    let group = client
        .group((0..20).map(|n| Step::new("square", &(n,)).unwrap()))
        .unwrap();
    assert_eq!(group.ids().len(), 20);
    let values: Vec<i64> = group
        .ids()
        .iter()
        .map(|id| {
            ended(&client, id);
            client.result::<i64>(id).unwrap().unwrap().unwrap()
        })
        .collect();
    assert_eq!(values, (0..20).map(|n| n * n).collect::<Vec<i64>>());
    worker.stop();
    worker.join().unwrap();
}

#[test]
fn a_chord_calls_back_once_with_every_value_in_member_order() {
    let redis = RedisServer::start();
    let client = Client::connect(&redis.url()).unwrap();
    let sums = Arc::new(AtomicU32::new(0));
    let worker = Worker::start(
        &redis.url(),
        tasks(sums.clone()),
        fast(WorkerOptions::new().concurrency(8)),
    )
    .unwrap();
    let chord = client
        .chord(
            (0..100).map(|n| Step::new("square", &(n,)).unwrap()),
            Step::new("sum", &()).unwrap(),
        )
        .unwrap();
    assert_eq!(chord.members().len(), 100);
    let record = ended(&client, chord.id());
    assert_eq!(record.state, RecordState::Done, "{record:?}");
    let expected: i64 = (0..100).map(|n| n * n).sum();
    assert_eq!(
        client.result::<i64>(chord.id()).unwrap().unwrap().unwrap(),
        expected
    );
    worker.stop();
    let report = worker.join().unwrap();
    assert_eq!(sums.load(Ordering::SeqCst), 1, "the callback ran once");
    assert_eq!(report.succeeded, 101, "{report:?}");
    let mut raw = redis.raw();
    let key = format!("martelli:flow:{}", "*");
    let flows: Vec<String> = redis::cmd("KEYS").arg(&key).query(&mut raw).unwrap();
    assert_eq!(flows.len(), 1);
    assert_eq!(
        field(&mut raw, &flows[0], "state").as_deref(),
        Some("fired")
    );
    assert_eq!(field(&mut raw, &flows[0], "done").as_deref(), Some("100"));
}

/// A member whose result is stored more than once (delivered again: after a worker that stored
/// its result died before it acknowledged the entry, or one presumed dead came back) counts once:
/// two extra copies of member 1 run before members 2 and 3, and the callback still waits for
/// them.
#[test]
fn a_member_run_three_times_counts_once() {
    let redis = RedisServer::start();
    let client = Client::connect(&redis.url()).unwrap();
    let sums = Arc::new(AtomicU32::new(0));
    let chord = client
        .chord(
            (1..=3).map(|n| Step::new("square", &(n,)).unwrap()),
            Step::new("sum", &()).unwrap(),
        )
        .unwrap();
    let mut raw = redis.raw();
    let entries: Vec<(String, Fields)> = redis::cmd("XRANGE")
        .arg("martelli:q:default:normal")
        .arg("-")
        .arg("+")
        .query(&mut raw)
        .unwrap();
    assert_eq!(entries.len(), 3);
    // The high stream is read first.
    for _ in 0..2 {
        let _: String = redis::cmd("XADD")
            .arg("martelli:q:default:high")
            .arg("*")
            .arg("e")
            .arg(&entries[0].1[0].1)
            .query(&mut raw)
            .unwrap();
    }
    let worker = Worker::start(
        &redis.url(),
        tasks(sums.clone()),
        fast(WorkerOptions::new().concurrency(1)),
    )
    .unwrap();
    ended(&client, chord.id());
    assert_eq!(
        client.result::<i64>(chord.id()).unwrap().unwrap().unwrap(),
        14
    );
    worker.stop();
    let report = worker.join().unwrap();
    assert_eq!(
        report.succeeded, 6,
        "five member runs and the callback: {report:?}"
    );
    assert_eq!(
        sums.load(Ordering::SeqCst),
        1,
        "the callback was queued once"
    );
}

#[test]
fn a_failed_member_fails_the_chord_unless_ignored() {
    let redis = RedisServer::start();
    let client = Client::connect(&redis.url()).unwrap();
    let sums = Arc::new(AtomicU32::new(0));
    let worker = Worker::start(
        &redis.url(),
        tasks(sums.clone()),
        fast(WorkerOptions::new().concurrency(4)),
    )
    .unwrap();
    // Member 3 of 5 (index 2) fails.
    let members = || [1, 2, -3, 4, 5].map(|n| Step::new("square", &(n,)).unwrap());
    let chord = client
        .chord(members(), Step::new("sum", &()).unwrap())
        .unwrap();
    let record = ended(&client, chord.id());
    assert_eq!(record.state, RecordState::Failed);
    match client.result::<i64>(chord.id()).unwrap() {
        Some(Err(TaskError::Failed(failure))) => assert_eq!(
            failure.message(),
            "chord member 3 of 5 (task square) failed (failed): negative member -3"
        ),
        other => panic!("expected the chord to fail, got {other:?}"),
    }
    // The other members still ran.
    for id in chord.members() {
        ended(&client, id);
    }
    // Ignored: the failed member's value is nil.
    let ignoring = FlowOptions::new().on_member_failure(OnMemberFailure::Ignore);
    let chord = client
        .chord_with(members(), Step::new("sum", &()).unwrap(), &ignoring)
        .unwrap();
    ended(&client, chord.id());
    assert_eq!(
        client.result::<i64>(chord.id()).unwrap().unwrap().unwrap(),
        1 + 4 + 16 + 25
    );
    worker.stop();
    worker.join().unwrap();
    assert_eq!(
        sums.load(Ordering::SeqCst),
        1,
        "only the ignoring chord called back"
    );
}

const CHILD_URL: &str = "MARTELLI_WORKFLOW_TEST_URL";

fn spawn_child_worker(url: &str) -> KillOnDrop {
    KillOnDrop::new(child_test("child_worker_entry", CHILD_URL, url, true))
}

/// Not a test: the `main` of the child worker processes the test below starts and kills. Its
/// `square` counts each member's runs in the hash `runs`, its `sum` its own runs in `sums`.
#[test]
#[ignore = "the entry point of child worker processes, run by other tests"]
fn child_worker_entry() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    thread_local! {
        static CONN: std::cell::RefCell<Option<redis::Connection>> = const { std::cell::RefCell::new(None) };
    }
    fn with_conn<T>(url: &str, f: impl FnOnce(&mut redis::Connection) -> T) -> T {
        CONN.with(|c| {
            let mut c = c.borrow_mut();
            let conn = c
                .get_or_insert_with(|| redis::Client::open(url).unwrap().get_connection().unwrap());
            f(conn)
        })
    }
    let square_url = url.clone();
    let sum_url = url.clone();
    let tasks = Tasks::new()
        .typed("square", move |(n,): (i64,)| {
            with_conn(&square_url, |c| {
                redis::cmd("HINCRBY")
                    .arg("runs")
                    .arg(n)
                    .arg(1)
                    .query::<i64>(c)
                    .unwrap()
            });
            // Short, uneven runs, so that kills land while results are being stored.
            std::thread::sleep(Duration::from_micros(2000 + (n as u64 * 7919) % 10_000));
            Ok::<_, std::io::Error>(n * n)
        })
        .typed("sum", move |(xs,): (Vec<i64>,)| {
            with_conn(&sum_url, |c| {
                redis::cmd("INCR").arg("sums").query::<i64>(c).unwrap()
            });
            Ok::<_, std::io::Error>(xs.iter().sum::<i64>())
        });
    serve(&url, tasks, fast(WorkerOptions::new().concurrency(8))).unwrap();
}

/// A chord of 1,000 members while worker processes are killed with SIGKILL (or frozen past their
/// lease) at random moments as its members finish: its callback runs exactly once, with all 1,000
/// values in member order.
#[test]
fn a_chord_of_1000_calls_back_once_under_worker_kills_at_random() {
    let redis = RedisServer::start();
    let client = Client::connect(&redis.url()).unwrap();
    let mut raw = redis.raw();
    let mut children: Vec<KillOnDrop> = (0..3).map(|_| spawn_child_worker(&redis.url())).collect();
    let chord = client
        .chord(
            (0..1000).map(|n| Step::new("square", &(n,)).unwrap()),
            Step::new("sum", &()).unwrap(),
        )
        .unwrap();
    let flow_key: String = {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("martelli:flow:*")
            .query(&mut raw)
            .unwrap();
        assert_eq!(keys.len(), 1);
        keys[0].clone()
    };
    let done = |raw: &mut redis::Connection| -> u64 {
        field(raw, &flow_key, "done")
            .and_then(|d| d.parse().ok())
            .unwrap_or(0)
    };
    // Each time the count of finished members passes the next of random marks 10–60 apart
    // (watched every millisecond, so that it happens as members finish), a random worker is
    // killed (SIGKILL) and another started, or, one time in three, frozen (SIGSTOP) for longer
    // than its lease: its tasks are reclaimed and run elsewhere, and once thawed (SIGCONT) it
    // stores their results a second time. Until 950 members are counted; the last ones and the
    // callback then run on workers nobody touches, so that a second run of the callback could
    // only come from a second queueing.
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut kills = 0;
    let mut freezes = 0;
    let mut frozen: Vec<(usize, Instant)> = Vec::new();
    let mut mark = 10 + next() % 50;
    let deadline = Instant::now() + Duration::from_secs(200);
    loop {
        let counted = done(&mut raw);
        let now = Instant::now();
        frozen.retain(|&(i, thaw)| {
            if now >= thaw || counted >= 950 {
                children[i].signal(Signal::CONT);
                false
            } else {
                true
            }
        });
        if counted >= 950 {
            break;
        }
        assert!(
            now < deadline,
            "the chord's members were not all counted: {counted} of 1000 after {kills} kills"
        );
        if counted < mark {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        mark = counted + 10 + next() % 50;
        let victim = (next() % children.len() as u64) as usize;
        if frozen.iter().any(|&(i, _)| i == victim) {
            continue;
        }
        if next() % 3 == 0 {
            children[victim].signal(Signal::STOP);
            frozen.push((victim, now + Duration::from_millis(800)));
            freezes += 1;
            continue;
        }
        let mut old = std::mem::replace(&mut children[victim], spawn_child_worker(&redis.url()));
        old.child().kill().unwrap();
        old.wait_for(LIMIT);
        kills += 1;
    }
    let record = poll::read_until(
        "the chord's callback to end",
        Duration::from_secs(90),
        || client.status(chord.id()).unwrap(),
        |r| r.as_ref().is_some_and(|r| r.state.is_ended()),
    )
    .unwrap();
    assert_eq!(record.state, RecordState::Done, "{record:?}");
    let expected: i64 = (0..1000i64).map(|n| n * n).sum();
    assert_eq!(
        client.result::<i64>(chord.id()).unwrap().unwrap().unwrap(),
        expected
    );
    let sums: i64 = redis::cmd("GET").arg("sums").query(&mut raw).unwrap();
    assert_eq!(sums, 1, "the callback ran exactly once ({kills} kills)");
    // Every member ran, some more than once (their workers were killed): counted once each.
    let runs: Vec<(i64, i64)> = redis::cmd("HGETALL").arg("runs").query(&mut raw).unwrap();
    assert_eq!(runs.len(), 1000);
    let reruns = runs.iter().filter(|(_, r)| *r > 1).count();
    assert!(
        kills + freezes >= 5,
        "only {kills} kills and {freezes} freezes"
    );
    eprintln!("{kills} kills, {freezes} freezes, {reruns} members ran more than once");
    assert_eq!(field(&mut raw, &flow_key, "done").as_deref(), Some("1000"));
    assert_eq!(
        field(&mut raw, &flow_key, "state").as_deref(),
        Some("fired")
    );
}

/// The dashboard's platform view lists the queue's chords and chains through the index of
/// workflows: a chord waiting on a member (two of three done), a finished chord, a chord failed
/// by a member, a finished chain; another queue's chord is left out.
#[test]
fn the_platform_view_lists_running_and_finished_chords_and_chains() {
    use martelli::cluster::{FlowKind, FlowView, Inspector, InspectorOptions};
    use std::sync::atomic::AtomicBool;

    let redis = RedisServer::start();
    let client = Client::connect(&redis.url()).unwrap();
    let open = Arc::new(AtomicBool::new(false));
    let gate = open.clone();
    let tasks = tasks(Arc::new(AtomicU32::new(0))).typed("gate", move |(n,): (i64,)| {
        let until = Instant::now() + LIMIT;
        while !gate.load(Ordering::SeqCst) {
            if Instant::now() > until {
                return Err(std::io::Error::other("the gate was never opened"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(n * n)
    });
    let worker = Worker::start(&redis.url(), tasks, fast(WorkerOptions::new())).unwrap();
    let finished = client
        .chord(
            [3, 4].map(|n| Step::new("square", &(n,)).unwrap()),
            Step::new("sum", &()).unwrap(),
        )
        .unwrap();
    let failed = client
        .chord(
            [-1, 2].map(|n| Step::new("square", &(n,)).unwrap()),
            Step::new("sum", &()).unwrap(),
        )
        .unwrap();
    let chain = client
        .chain([
            Step::new("add", &(1, 2)).unwrap(),
            Step::new("add", &(10,)).unwrap(),
            Step::new("add", &(100,)).unwrap(),
        ])
        .unwrap();
    for id in [finished.id(), failed.id(), chain.id()] {
        ended(&client, id);
    }
    let elsewhere = Client::builder(redis.url())
        .queue("elsewhere")
        .build()
        .unwrap()
        .chord(
            [Step::new("square", &(5,)).unwrap()],
            Step::new("sum", &()).unwrap(),
        )
        .unwrap();
    let running = client
        .chord(
            [
                Step::new("square", &(1,)).unwrap(),
                Step::new("square", &(2,)).unwrap(),
                Step::new("gate", &(3,)).unwrap(),
            ],
            Step::new("sum", &()).unwrap(),
        )
        .unwrap();

    let mut inspector = Inspector::connect(&redis.url(), &InspectorOptions::new()).unwrap();
    let by_callback = |flows: &[FlowView], id: &str| -> FlowView {
        flows
            .iter()
            .find(|f| f.callback == id)
            .cloned()
            .unwrap_or_else(|| panic!("no workflow with callback {id} in {flows:?}"))
    };
    let view = poll::read_until(
        "two members of the running chord to be counted",
        LIMIT,
        || inspector.platform("default").unwrap(),
        |v| {
            v.flows
                .iter()
                .any(|f| f.callback == running.id() && f.done == 2)
        },
    );
    assert_eq!(view.flows.len(), 4, "{:?}", view.flows);
    assert!(
        view.flows.iter().all(|f| f.callback != elsewhere.id()),
        "another queue's chord is left out: {:?}",
        view.flows
    );
    // Three chords here, a chain of two workflows, and the other queue's chord.
    assert_eq!((view.flows_read, view.flows_total), (6, 6));
    // Running first.
    let first = &view.flows[0];
    assert_eq!(first.callback, running.id());
    assert_eq!(first.kind, FlowKind::Chord);
    assert_eq!((first.done, first.total, first.failed), (2, 3, 0));
    assert_eq!(first.callback_state, "waiting");
    assert_eq!(first.fired_ms, None);

    let done = by_callback(&view.flows, finished.id());
    assert_eq!(done.kind, FlowKind::Chord);
    assert_eq!((done.done, done.total, done.failed), (2, 2, 0));
    assert_eq!(done.callback_state, "done");
    assert!(done.fired_ms.is_some());

    let bad = by_callback(&view.flows, failed.id());
    assert_eq!((bad.failed, bad.failed_by), (1, Some(0)), "{bad:?}");
    assert_eq!(bad.callback_state, "failed");
    assert_eq!(bad.fired_ms, None);

    let steps = by_callback(&view.flows, chain.id());
    assert_eq!(steps.kind, FlowKind::Chain);
    assert_eq!(steps.id, chain.id());
    assert_eq!((steps.done, steps.total, steps.failed), (3, 3, 0));
    assert_eq!(steps.callback_state, "done");

    // The gate opens: the running chord fires and its callback ends.
    open.store(true, Ordering::SeqCst);
    ended(&client, running.id());
    let view = inspector.platform("default").unwrap();
    let now = by_callback(&view.flows, running.id());
    assert_eq!(
        (now.done, now.total, now.callback_state.as_str()),
        (3, 3, "done")
    );
    worker.stop();
    worker.join().unwrap();
}
