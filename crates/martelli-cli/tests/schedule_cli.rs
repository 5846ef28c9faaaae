//! End-to-end tests of `martelli schedule`: schedules added from the command line and fired by
//! real `martelli schedule run` processes against a private `redis-server`, with schedulers killed
//! by SIGKILL at random moments. A tick fired twice is found by its task id (`NAME@TICK`).

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use martelli_testkit::proc::{KillOnDrop, Signal};
use martelli_testkit::redis::RedisServer;
use martelli_testkit::{envelope, poll};

const LIMIT: Duration = Duration::from_secs(90);
const STREAM: &str = "martelli:q:default:normal";

fn martelli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_martelli"))
}

/// `args` with `--cluster URL` before a `--` (after which comes a command), or at the end.
fn with_cluster<'a>(args: &[&'a str], url: &'a str) -> Vec<&'a str> {
    let at = args.iter().position(|a| *a == "--").unwrap_or(args.len());
    let mut out = args[..at].to_vec();
    out.extend(["--cluster", url]);
    out.extend(&args[at..]);
    out
}

/// Runs `martelli schedule ARGS… --cluster URL` to its end.
fn schedule(url: &str, args: &[&str]) -> std::process::Output {
    let child = martelli()
        .arg("schedule")
        .args(with_cluster(args, url))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("martelli starts");
    KillOnDrop::new(child).output(LIMIT)
}

/// Starts a scheduler process.
fn scheduler(url: &str) -> KillOnDrop {
    KillOnDrop::new(
        martelli()
            .args(["schedule", "run", "--quiet", "--cluster", url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("martelli starts"),
    )
}

/// The ticks of the tasks `name` queued, in stream order; every envelope checked.
fn ticks(raw: &mut redis::Connection, name: &str) -> Vec<u64> {
    envelope::queued(raw, STREAM)
        .into_iter()
        .filter_map(|queued| {
            assert_eq!(queued.task, "martelli.shell");
            let tick = queued.id.strip_prefix(&format!("{name}@"))?;
            Some(tick.parse().expect("a tick in ms"))
        })
        .collect()
}

/// No tick twice, in order, on the 1-second grid; returns how many ticks of the grid between the
/// first and the last are missing.
fn check(ticks: &[u64]) -> u64 {
    let unique: HashSet<u64> = ticks.iter().copied().collect();
    assert_eq!(unique.len(), ticks.len(), "a tick fired twice: {ticks:?}");
    assert!(
        ticks.windows(2).all(|w| w[0] < w[1]),
        "out of order: {ticks:?}"
    );
    assert!(
        ticks.iter().all(|t| t % 1000 == 0),
        "off the grid: {ticks:?}"
    );
    match (ticks.first(), ticks.last()) {
        (Some(first), Some(last)) => (last - first) / 1000 + 1 - ticks.len() as u64,
        _ => 0,
    }
}

#[test]
fn three_scheduler_processes_fire_each_tick_once() {
    poll::within(LIMIT, || {
        let redis = RedisServer::start();
        let url = redis.url();
        let mut raw = redis.raw();
        let added = schedule(&url, &["add", "beat", "--every", "1s", "--", "true"]);
        assert!(added.status.success(), "{added:?}");
        let schedulers: Vec<KillOnDrop> = (0..3).map(|_| scheduler(&url)).collect();
        poll::read_until(
            "ticks to fire",
            LIMIT,
            || ticks(&mut raw, "beat"),
            |t| t.len() >= 6,
        );
        for mut s in schedulers {
            s.signal(Signal::TERM);
            assert!(s.wait_for(LIMIT).success());
        }
        let fired = ticks(&mut raw, "beat");
        let missing = check(&fired);
        assert!(
            missing <= 1,
            "{missing} tick(s) lost with three schedulers: {fired:?}"
        );
    });
}

#[test]
fn schedulers_killed_at_random_moments_neither_lose_nor_double_a_tick() {
    poll::within(LIMIT, || {
        let redis = RedisServer::start();
        let url = redis.url();
        let mut raw = redis.raw();
        let added = schedule(&url, &["add", "kill", "--every", "1s", "--", "true"]);
        assert!(added.status.success(), "{added:?}");
        // One scheduler lives throughout; two others are killed with SIGKILL at random moments
        // (mid-look, mid-script, asleep) and started again.
        let _steady = scheduler(&url);
        let mut victims: Vec<KillOnDrop> = (0..2).map(|_| scheduler(&url)).collect();
        let mut seed: u64 = std::process::id().into();
        println!("seed {seed}");
        let end = Instant::now() + Duration::from_secs(8);
        let mut kills = 0;
        while Instant::now() < end {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            std::thread::sleep(Duration::from_millis(50 + (seed >> 33) % 400));
            let i = (seed >> 40) as usize % victims.len();
            victims[i].signal(Signal::KILL);
            victims[i].wait_for(LIMIT);
            victims[i] = scheduler(&url);
            kills += 1;
        }
        let fired = ticks(&mut raw, "kill");
        let missing = check(&fired);
        assert!(fired.len() >= 5, "{kills} kills; {fired:?}");
        assert!(missing <= 1, "{missing} tick(s) lost: {fired:?}");
    });
}

#[test]
fn bad_schedules_get_a_clear_error_and_change_nothing() {
    poll::within(LIMIT, || {
        let redis = RedisServer::start();
        let url = redis.url();
        let bad = schedule(&url, &["add", "b", "--cron", "0 25 * * *", "--", "true"]);
        assert_eq!(bad.status.code(), Some(1));
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(
            err.contains("hour field") && err.contains("\"25\""),
            "{err}"
        );
        let bad = schedule(&url, &["add", "b", "--every", "10 parsecs", "--", "true"]);
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(err.contains("invalid interval"), "{err}");
        let ok = schedule(&url, &["add", "b", "--every", "1h", "--", "true"]);
        assert!(ok.status.success(), "{ok:?}");
        let again = schedule(&url, &["add", "b", "--every", "1h", "--", "true"]);
        assert_eq!(again.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&again.stderr).contains("--replace"));
        let list = schedule(&url, &["list", "--json"]);
        let json: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
        assert_eq!(json["schedules"].as_array().unwrap().len(), 1);
        assert_eq!(json["schedules"][0]["timing"], "every 1h");
        let gone = schedule(&url, &["remove", "nope"]);
        assert_eq!(gone.status.code(), Some(1));
        assert!(schedule(&url, &["remove", "b"]).status.success());
    });
}

#[test]
fn a_worker_with_scheduler_fires_and_runs_the_commands() {
    poll::within(LIMIT, || {
        let redis = RedisServer::start();
        let url = redis.url();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("ticks");
        let line = format!("echo tick >> {}", file.display());
        let added = schedule(&url, &["add", "w", "--every", "1s", "--shell", &line]);
        assert!(added.status.success(), "{added:?}");
        let worker = KillOnDrop::new(
            martelli()
                .args([
                    "worker",
                    "--scheduler",
                    "--cluster",
                    &url,
                    "-j",
                    "2",
                    "--poll",
                    "0.05",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("the worker starts"),
        );
        poll::until("two ticks to run", LIMIT, || {
            std::fs::read_to_string(&file).is_ok_and(|t| t.lines().count() >= 2)
        });
        worker.signal(Signal::TERM);
        let out = worker.output(LIMIT);
        assert!(out.status.success(), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("scheduler stopped"), "{err}");
    });
}
