//! `cluster::status` against a real `redis-server` (started by each test on a free port): queue
//! depths per priority, delayed and dead letters, workers from their heartbeats, consumers that
//! hold tasks without one, and throughput from two readings.
#![cfg(feature = "cluster")]

use martelli::Priority;
use martelli::cluster::{
    Client, ClusterStatus, StatusOptions, SubmitOptions, Tasks, Worker, WorkerOptions,
};
use martelli_testkit::poll;
use martelli_testkit::redis::RedisServer;
use std::sync::Mutex;
use std::time::Duration;

fn now(url: &str) -> ClusterStatus {
    martelli::cluster::status(url, &StatusOptions::new().sample(Duration::ZERO))
        .expect("status reads")
}

/// Polls the status until `ready` holds (at most 20 s).
fn wait_for(url: &str, what: &str, ready: impl Fn(&ClusterStatus) -> bool) -> ClusterStatus {
    poll::read_until(what, Duration::from_secs(20), || now(url), ready)
}

#[test]
fn an_empty_broker_reads_as_empty() {
    let redis = RedisServer::start();
    let s = now(&redis.url());
    assert_eq!(s.queue.name, "default");
    assert_eq!(s.queue.streams.len(), 3);
    assert_eq!(
        (s.queue.waiting, s.queue.held, s.queue.delayed, s.queue.dead),
        (0, 0, 0, 0)
    );
    assert!(s.workers.is_empty());
    assert!(s.throughput.is_none());
}

#[test]
fn depths_per_priority_delayed_dead_letters_and_workers() {
    let redis = RedisServer::start();
    let url = redis.url();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let tasks = Tasks::new().typed("held", move |n: u64| {
        release_rx.lock().unwrap().recv().unwrap();
        Ok::<_, std::io::Error>(n)
    });
    let worker = Worker::start(
        &url,
        tasks,
        WorkerOptions::new()
            .concurrency(1)
            .poll(Duration::from_millis(50))
            .lease(Duration::from_millis(600)),
    )
    .unwrap();
    let client = Client::connect(&url).unwrap();
    let first = client.submit::<_, u64>("held", &1u64).unwrap();
    let s = wait_for(&url, "the first task held", |s| s.queue.held == 1);
    assert_eq!(s.queue.streams[1].held, 1);
    // Two more wait behind it: one high, one low.
    let high = client
        .with(SubmitOptions::new().priority(Priority::High))
        .submit::<_, u64>("held", &2u64)
        .unwrap();
    let low = client
        .with(SubmitOptions::new().priority(Priority::Low))
        .submit::<_, u64>("held", &3u64)
        .unwrap();
    let _later = client
        .with(SubmitOptions::new().delay(Duration::from_secs(600)))
        .submit::<_, u64>("held", &4u64)
        .unwrap();
    let s = wait_for(&url, "two waiting and one delayed", |s| {
        s.queue.waiting == 2 && s.queue.delayed == 1
    });
    let by_priority: Vec<(&str, u64, u64)> = s
        .queue
        .streams
        .iter()
        .map(|st| (st.priority.as_str(), st.waiting, st.held))
        .collect();
    assert_eq!(
        by_priority,
        [("high", 1, 0), ("normal", 0, 1), ("low", 1, 0)]
    );
    assert_eq!(s.queue.streams[1].key, "martelli:q:default:normal");
    // The worker, from its heartbeat.
    let w = s
        .workers
        .iter()
        .find(|w| w.consumer == worker.consumer())
        .unwrap_or_else(|| panic!("the worker is listed: {s:#?}"));
    assert!(w.alive);
    assert_eq!(w.concurrency, Some(1));
    assert_eq!(w.queue.as_deref(), Some("default"));
    assert_eq!(w.lease_ms, Some(600));
    assert_eq!(w.pid, Some(u64::from(std::process::id())));
    for _ in 0..3 {
        release_tx.send(()).unwrap();
    }
    assert_eq!(first.wait().unwrap(), 1);
    assert_eq!(high.wait().unwrap(), 2);
    assert_eq!(low.wait().unwrap(), 3);
    let s = wait_for(&url, "three successes in the heartbeat", |s| {
        s.workers.iter().any(|w| w.succeeded == 3)
    });
    assert_eq!((s.queue.waiting, s.queue.held), (0, 0));
    // An unknown task is dead-lettered.
    let lost = client.submit::<_, u64>("no-such-task", &0u64).unwrap();
    assert!(lost.wait().is_err());
    // The worker's counter reaches its heartbeat at its next renewal.
    wait_for(&url, "one dead letter, counted by the worker", |s| {
        s.queue.dead == 1 && s.workers.iter().any(|w| w.dead_lettered == 1)
    });
    worker.stop();
    worker.join().unwrap();
    // A stopped worker deletes its heartbeat.
    let s = now(&url);
    assert!(s.workers.is_empty(), "{s:#?}");
}

#[test]
fn a_consumer_holding_tasks_without_a_heartbeat_is_listed_as_not_alive() {
    let redis = RedisServer::start();
    let url = redis.url();
    let client = Client::connect(&url).unwrap();
    let _task = client.submit_raw("anything", b"x".to_vec()).unwrap();
    client.flush();
    // A consumer that read the task and died (no worker here creates the group: do it by hand).
    let mut raw = redis.raw();
    let stream = "martelli:q:default:normal";
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("martelli")
        .arg("0")
        .arg("MKSTREAM")
        .exec(&mut raw)
        .unwrap();
    redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("martelli")
        .arg("ghost-1-deadbeef")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .exec(&mut raw)
        .unwrap();
    let s = now(&url);
    assert_eq!((s.queue.waiting, s.queue.held), (0, 1));
    assert_eq!(s.workers.len(), 1, "{s:#?}");
    let ghost = &s.workers[0];
    assert_eq!(ghost.consumer, "ghost-1-deadbeef");
    assert!(!ghost.alive);
    assert_eq!(ghost.held, 1);
    assert_eq!(ghost.heartbeat_age_ms, None);
}

#[test]
fn throughput_counts_what_was_added_and_done_between_the_readings() {
    let redis = RedisServer::start();
    let url = redis.url();
    let worker = Worker::start(
        &url,
        Tasks::new().raw("echo", |b: &[u8]| Ok(b.to_vec())),
        WorkerOptions::new()
            .concurrency(2)
            .poll(Duration::from_millis(50)),
    )
    .unwrap();
    let client = Client::connect(&url).unwrap();
    let sampler = {
        let url = url.clone();
        std::thread::spawn(move || {
            martelli::cluster::status(
                &url,
                &StatusOptions::new().sample(Duration::from_millis(1500)),
            )
        })
    };
    // Well after the first reading and well before the second.
    std::thread::sleep(Duration::from_millis(300));
    let futures: Vec<_> = (0..20)
        .map(|i| client.submit_raw("echo", vec![i]).unwrap())
        .collect();
    for f in futures {
        f.wait().unwrap();
    }
    let s = sampler.join().unwrap().unwrap();
    let t = s.throughput.expect("a throughput with a sample interval");
    let seconds = t.interval_ms as f64 / 1e3;
    assert!(seconds >= 1.5, "{t:?}");
    assert_eq!((t.submitted_per_s * seconds).round(), 20.0, "{t:?}");
    assert_eq!((t.completed_per_s * seconds).round(), 20.0, "{t:?}");
    worker.stop();
    worker.join().unwrap();
}
