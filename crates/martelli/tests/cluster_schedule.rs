//! Periodic tasks (docs/protocol.md, "Addition 4"): schedules in Redis fired by any number of
//! schedulers, each tick once, with the catch-up rules after a pause. Against a real
//! `redis-server` started by each test. Doubles are found by tick id: the task of a tick has the id
//! `NAME@TICK`, and the tests read every task queued. (Schedulers killed with SIGKILL, as real
//! processes, are in the CLI's tests: `crates/martelli-cli/tests/schedule_cli.rs`.)
#![cfg(feature = "cluster")]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use martelli::cluster::{
    CatchUp, Client, RecordState, Schedule, ScheduleError, Scheduler, SchedulerOptions, Schedules,
    Tasks, Worker, WorkerOptions,
};
use martelli_testkit::redis::RedisServer;
use martelli_testkit::{envelope, poll};

const LIMIT: Duration = Duration::from_secs(60);
const STREAM: &str = "martelli:q:default:normal";

/// A task a schedule queued: its tick (from its id) and when it was queued (its entry id).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Queued {
    id: String,
    tick: u64,
    added_ms: u64,
}

/// Every task schedule `name` queued, oldest first.
fn queued(raw: &mut redis::Connection, name: &str) -> Vec<Queued> {
    envelope::queued(raw, STREAM)
        .into_iter()
        .filter_map(|task| {
            let tick = task.id.strip_prefix(&format!("{name}@"))?;
            Some(Queued {
                tick: tick.parse().expect("a tick in ms"),
                added_ms: task.added_ms,
                id: task.id.clone(),
            })
        })
        .collect()
}

/// No tick twice, ticks in order, on the grid of `every_ms`, and none queued before its time.
fn check_once_each(tasks: &[Queued], every_ms: u64) {
    let ids: HashSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids.len(), tasks.len(), "a tick fired twice: {tasks:?}");
    for pair in tasks.windows(2) {
        assert!(pair[0].tick < pair[1].tick, "ticks out of order: {tasks:?}");
    }
    for t in tasks {
        assert_eq!(t.tick % every_ms, 0, "off the grid: {t:?}");
        assert!(t.added_ms >= t.tick, "queued before its tick: {t:?}");
    }
}

fn broker_ms(raw: &mut redis::Connection) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query(raw).unwrap();
    s * 1000 + us / 1000
}

fn options() -> SchedulerOptions {
    SchedulerOptions::default().quiet(true)
}

#[test]
fn three_schedulers_fire_each_tick_once() {
    poll::within(LIMIT, || {
        let redis = RedisServer::start();
        let mut raw = redis.raw();
        let schedules = Schedules::connect(&redis.url(), &options()).unwrap();
        schedules
            .add(&Schedule::every("tick", Duration::from_secs(1), "noop").unwrap())
            .unwrap();
        let schedulers: Vec<Scheduler> = (0..3)
            .map(|_| Scheduler::start(&redis.url(), options()).unwrap())
            .collect();
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(6500));
        for s in &schedulers {
            s.stop();
        }
        let elapsed = start.elapsed();
        let reports: Vec<_> = schedulers.into_iter().map(|s| s.join().unwrap()).collect();
        let tasks = queued(&mut raw, "tick");
        check_once_each(&tasks, 1000);
        let fired: u64 = reports.iter().map(|r| r.fired).sum();
        assert_eq!(fired, tasks.len() as u64, "{reports:?}");
        // About one per second (a loaded machine may coalesce a tick, never add one).
        let most = elapsed.as_secs() + 1;
        assert!(
            tasks.len() as u64 >= 4 && tasks.len() as u64 <= most,
            "{} ticks in {elapsed:?}: {tasks:?}",
            tasks.len()
        );
        let info = schedules.get("tick").unwrap().expect("the schedule");
        assert_eq!(info.fired, tasks.len() as u64);
        assert_eq!(info.last_fired_ms, tasks.last().map(|t| t.tick));
        assert!(info.next_ms.unwrap() > info.last_fired_ms.unwrap());
    });
}

/// Runs one scheduler until `n` more tasks were queued; returns them all.
fn run_until(redis: &RedisServer, name: &str, n: usize) -> Vec<Queued> {
    let mut raw = redis.raw();
    let before = queued(&mut raw, name).len();
    let scheduler = Scheduler::start(&redis.url(), options()).unwrap();
    poll::read_until(
        "the schedule to fire",
        LIMIT,
        || queued(&mut raw, name),
        |t| t.len() >= before + n,
    );
    scheduler.stop();
    scheduler.join().unwrap();
    queued(&mut raw, name)
}

#[test]
fn after_a_pause_the_latest_missed_tick_fires_once() {
    poll::within(LIMIT, || {
        let redis = RedisServer::start();
        let mut raw = redis.raw();
        let schedules = Schedules::connect(&redis.url(), &options()).unwrap();
        schedules
            .add(&Schedule::every("latest", Duration::from_secs(1), "noop").unwrap())
            .unwrap();
        let before = run_until(&redis, "latest", 1);
        let last = before.last().unwrap().tick;
        // No scheduler for 3.5 s: three ticks or more are missed.
        std::thread::sleep(Duration::from_millis(3500));
        let resumed = broker_ms(&mut raw);
        let after = run_until(&redis, "latest", 1);
        check_once_each(&after, 1000);
        let first = &after[before.len()];
        assert!(
            first.tick >= resumed / 1000 * 1000 && first.tick >= last + 3000,
            "the first tick after the pause is the latest one due ({} after a resume at \
             {resumed}), not an old one: {after:?}",
            first.tick
        );
        let info = schedules.get("latest").unwrap().unwrap();
        assert_eq!(info.fired, after.len() as u64);
        assert_eq!(info.skipped, 0);
    });
}

#[test]
fn after_a_pause_skip_fires_none_of_the_missed_ticks() {
    poll::within(LIMIT, || {
        let redis = RedisServer::start();
        let mut raw = redis.raw();
        let schedules = Schedules::connect(&redis.url(), &options()).unwrap();
        let schedule = Schedule::every("skip", Duration::from_secs(1), "noop")
            .unwrap()
            .catch_up(CatchUp::Skip);
        schedules.add(&schedule).unwrap();
        let before = run_until(&redis, "skip", 1);
        std::thread::sleep(Duration::from_millis(3500));
        let resumed = broker_ms(&mut raw);
        let after = run_until(&redis, "skip", 1);
        check_once_each(&after, 1000);
        let first = &after[before.len()];
        assert!(
            first.tick > resumed,
            "a missed tick fired ({} ≤ the resume at {resumed}): {after:?}",
            first.tick
        );
        let info = schedules.get("skip").unwrap().unwrap();
        assert!(info.skipped >= 1, "{info:?}");
        assert_eq!(info.catch_up, CatchUp::Skip);
    });
}

#[test]
fn a_cron_schedule_fires_on_whole_seconds() {
    poll::within(LIMIT, || {
        let redis = RedisServer::start();
        let schedules = Schedules::connect(&redis.url(), &options()).unwrap();
        schedules
            .add(&Schedule::cron("everysec", "* * * * * *", "noop").unwrap())
            .unwrap();
        let tasks = run_until(&redis, "everysec", 3);
        check_once_each(&tasks, 1000);
        let info = schedules.get("everysec").unwrap().unwrap();
        assert_eq!(info.timing, "cron * * * * * *");
    });
}

#[test]
fn a_scheduled_task_runs_on_a_worker_and_keeps_its_record() {
    poll::within(LIMIT, || {
        let redis = RedisServer::start();
        let schedules = Schedules::connect(&redis.url(), &options()).unwrap();
        let schedule = Schedule::every("sum", Duration::from_secs(1), "add")
            .unwrap()
            .args(&(2, 3))
            .unwrap()
            .result_ttl(Duration::from_secs(600));
        schedules.add(&schedule).unwrap();
        let tasks = Tasks::new().typed("add", |(a, b): (i64, i64)| Ok::<_, std::io::Error>(a + b));
        let worker = Worker::start(
            &redis.url(),
            tasks,
            WorkerOptions::new().poll(Duration::from_millis(50)),
        )
        .unwrap();
        let scheduler = Scheduler::start(&redis.url(), options()).unwrap();
        let id = poll::read_until(
            "a tick to fire",
            LIMIT,
            || schedules.get("sum").unwrap().unwrap().last_id,
            Option::is_some,
        )
        .unwrap();
        scheduler.stop();
        let client = Client::connect(&redis.url()).unwrap();
        let record = poll::read_until(
            "the scheduled task to end",
            LIMIT,
            || client.status(&id).unwrap().expect("a record"),
            |r| r.state.is_ended(),
        );
        assert_eq!(record.state, RecordState::Done, "{record:?}");
        assert_eq!(record.task, "add");
        let value = client.result::<i64>(&id).unwrap().expect("a result");
        assert_eq!(value.unwrap(), 5);
        scheduler.join().unwrap();
        worker.stop();
        worker.join().unwrap();
    });
}

#[test]
fn schedules_are_added_replaced_disabled_and_removed() {
    poll::within(LIMIT, || {
        let redis = RedisServer::start();
        let mut raw = redis.raw();
        let schedules = Schedules::connect(&redis.url(), &options()).unwrap();
        let every = Schedule::every("s", Duration::from_secs(1), "noop").unwrap();
        schedules.add(&every).unwrap();
        let again = schedules.add(&every).unwrap_err();
        assert!(matches!(again, ScheduleError::Exists(_)), "{again}");
        assert!(again.to_string().contains("replace"), "{again}");

        // Disabled: its ticks pass without a task.
        assert!(schedules.set_enabled("s", false).unwrap());
        let scheduler = Scheduler::start(&redis.url(), options()).unwrap();
        poll::read_until(
            "ticks to pass",
            LIMIT,
            || schedules.get("s").unwrap().unwrap().skipped,
            |&n| n >= 2,
        );
        assert!(queued(&mut raw, "s").is_empty());

        // Replaced by a cron schedule, enabled: the state stays.
        let cron = Schedule::cron("s", "* * * * * *", "noop").unwrap();
        assert!(schedules.replace(&cron).unwrap());
        let info = schedules.get("s").unwrap().unwrap();
        assert!(info.skipped >= 2 && info.enabled, "{info:?}");
        poll::read_until(
            "a tick to fire",
            LIMIT,
            || queued(&mut raw, "s"),
            |t| !t.is_empty(),
        );

        assert!(schedules.remove("s").unwrap());
        assert!(!schedules.remove("s").unwrap());
        assert!(schedules.list().unwrap().is_empty());
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg("martelli:schedules")
            .arg(0)
            .arg(-1)
            .query(&mut raw)
            .unwrap();
        assert!(members.is_empty());
        scheduler.stop();
        scheduler.join().unwrap();
    });
}

#[test]
fn bad_input_gets_a_clear_error() {
    let e = Schedule::cron("x", "0 3 * * 8", "noop")
        .unwrap_err()
        .to_string();
    assert!(e.contains("day-of-week"), "{e}");
    let e = Schedule::every("x", Duration::ZERO, "noop")
        .unwrap_err()
        .to_string();
    assert!(e.contains("interval"), "{e}");
    let e = Schedule::every("a name", Duration::from_secs(1), "noop")
        .unwrap_err()
        .to_string();
    assert!(e.contains("schedule name"), "{e}");
}
