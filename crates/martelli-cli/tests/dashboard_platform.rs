//! The dashboard's "Schedules, limits, retries & chords" view in a real browser (headless
//! Chromium, see `browser/mod.rs`): periodic schedules fired by a real `martelli schedule run`
//! process, a rate limit set with `martelli ratelimit`, a task waiting for its retry in the
//! delayed set, and chords run by a real worker (one waiting on a member, one finished), all
//! against a private `redis-server`. Every wait has a time limit.

mod browser;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use browser::{Browser, Dashboard};
use martelli::cluster::{Client, Step, Tasks, Worker, WorkerOptions};
use martelli_testkit::proc::KillOnDrop;
use martelli_testkit::redis::RedisServer;
use serde::Serialize;

const SLOW: Duration = Duration::from_secs(30);

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

/// Runs `martelli ARGS… --cluster URL` to its end; panics unless it succeeds.
fn ok(url: &str, args: &[&str]) {
    let child = martelli()
        .args(with_cluster(args, url))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("martelli starts");
    let out = KillOnDrop::new(child).output(SLOW);
    assert!(out.status.success(), "martelli {args:?}: {out:?}");
}

#[derive(Serialize)]
struct RetryPolicy {
    max: u32,
}

#[derive(Serialize)]
struct AttemptError<'a> {
    attempt: u32,
    status: &'a str,
    error: &'a str,
    worker: &'a str,
    at: u64,
}

/// A task envelope waiting for its first retry (docs/protocol.md, "Addition 2").
#[derive(Serialize)]
struct Retrying<'a> {
    v: u32,
    id: &'a str,
    task: &'a str,
    #[serde(with = "serde_bytes")]
    payload: &'a [u8],
    max_attempts: u32,
    attempts: u32,
    retry: RetryPolicy,
    retries: u32,
    errors: Vec<AttemptError<'a>>,
}

#[test]
fn the_platform_view_shows_schedules_rate_limits_and_retries() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut raw = redis.raw();

    ok(
        &url,
        &["schedule", "add", "beat", "--every", "1s", "--", "true"],
    );
    ok(
        &url,
        &[
            "schedule",
            "add",
            "nightly",
            "--cron",
            "0 3 * * *",
            "--catch-up",
            "skip",
            "--shell",
            "backup",
        ],
    );
    // A name with HTML in it is shown as text.
    ok(
        &url,
        &[
            "schedule",
            "add",
            "<b>bold</b>",
            "--every",
            "1h",
            "--disabled",
            "--",
            "true",
        ],
    );
    ok(&url, &["ratelimit", "martelli.shell", "10/s"]);
    let envelope = rmp_serde::to_vec_named(&Retrying {
        v: 1,
        id: "retry-me",
        task: "flaky",
        payload: &[0x90],
        max_attempts: 3,
        attempts: 0,
        retry: RetryPolicy { max: 5 },
        retries: 1,
        errors: vec![AttemptError {
            attempt: 1,
            status: "failed",
            error: "disk full",
            worker: "w-1",
            at: 1,
        }],
    })
    .unwrap();
    let mut member = b"1".to_vec();
    member.extend_from_slice(&envelope);
    let due: u64 = 4_102_444_800_000; // 2100-01-01
    let _: i64 = redis::cmd("ZADD")
        .arg("martelli:q:default:delayed")
        .arg(due)
        .arg(member)
        .query(&mut raw)
        .unwrap();

    // Chords, run by a worker: one finished, one with two of three members done and the third
    // held at a gate. The running chord's callback has HTML in its id.
    let open = Arc::new(AtomicBool::new(false));
    let gate = open.clone();
    let tasks = Tasks::new()
        .typed("square", |(n,): (i64,)| Ok::<_, std::io::Error>(n * n))
        .typed("sum", |(xs,): (Vec<i64>,)| {
            Ok::<_, std::io::Error>(xs.into_iter().sum::<i64>())
        })
        .typed("gate", move |(n,): (i64,)| {
            let until = Instant::now() + SLOW;
            while !gate.load(Ordering::SeqCst) {
                if Instant::now() > until {
                    return Err(std::io::Error::other("the gate was never opened"));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(n)
        });
    let worker = Worker::start(
        &url,
        tasks,
        WorkerOptions::new().poll(Duration::from_millis(50)),
    )
    .unwrap();
    let client = Client::connect(&url).unwrap();
    let finished = client
        .chord(
            [3, 4].map(|n| Step::new("square", &(n,)).unwrap()),
            Step::new("sum", &()).unwrap().id("chord-done"),
        )
        .unwrap();
    let ended = martelli_testkit::poll::read_until(
        "the finished chord's callback to end",
        SLOW,
        || client.status(finished.id()).unwrap(),
        |r| r.as_ref().is_some_and(|r| r.state.is_ended()),
    );
    assert!(ended.is_some());
    client
        .chord(
            [
                Step::new("square", &(1,)).unwrap(),
                Step::new("square", &(2,)).unwrap(),
                Step::new("gate", &(3,)).unwrap(),
            ],
            Step::new("sum", &()).unwrap().id("<b>x</b>"),
        )
        .unwrap();

    let _scheduler = KillOnDrop::new(
        martelli()
            .args(["schedule", "run", "--quiet", "--cluster", &url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the scheduler starts"),
    );
    let dash = Dashboard::start(&url, "127.0.0.1:0", &[], &[]);
    let addr = dash.addr.clone();
    let mut page = Browser::launch();
    page.open(&format!("http://{addr}/#platform"));

    let row = |name: &str| {
        format!(
            "[...document.querySelectorAll('#schedules-table tbody tr')].find(r => r.cells[0].textContent === {})",
            serde_json::json!(name)
        )
    };
    // The every-second schedule fires, and the page follows its count live.
    page.wait(
        "beat listed, fired at least twice, with its next tick",
        SLOW,
        &format!(
            "(() => {{ const r = {}; return r && Number(r.cells[8].textContent) >= 2 && r.cells[7].textContent.includes('in ') && r.cells[1].textContent === 'every 1s'; }})()",
            row("beat")
        ),
    );
    let nightly = page.eval(&format!(
        "(() => {{ const r = {}; return [...r.cells].map(c => c.textContent).join('|'); }})()",
        row("nightly")
    ));
    let nightly = nightly.as_str().unwrap_or_default().to_owned();
    assert!(
        nightly.starts_with("nightly|cron 0 3 * * *|martelli.shell|default|skip|yes|–|"),
        "{nightly}"
    );
    let html = page.eval(&format!(
        "(() => {{ const r = {}; return r.cells[5].textContent + ' ' + document.querySelectorAll('#schedules-table tbody b').length; }})()",
        row("<b>bold</b>")
    ));
    assert_eq!(html, "no 0", "a disabled schedule, its name shown as text");

    assert_eq!(
        page.eval("[...document.querySelectorAll('#ratelimits-table tbody td')].slice(0, 2).map(c => c.textContent).join(' ')"),
        "martelli.shell 10/s"
    );
    let retry = page.eval("[...document.querySelectorAll('#retries-table tbody td')].map(c => c.textContent).join('|')");
    let retry = retry.as_str().unwrap_or_default().to_owned();
    assert!(
        retry.starts_with("retry-me|flaky|1/5|")
            && retry.contains("(in ")
            && retry.ends_with("|disk full"),
        "{retry}"
    );

    // The chords: the running one first (two of three members done, its callback waiting, its
    // id shown as text), then the finished one.
    let flows = "[...document.querySelectorAll('#flows-table tbody tr')].map(r => [...r.cells].map(c => c.textContent).join('|'))";
    page.wait(
        "the running chord with two members done",
        SLOW,
        &format!(
            "(() => {{ const f = {flows}; return f.length === 2 && f[0].includes('|2/3|'); }})()"
        ),
    );
    let rows = page.eval(flows);
    let rows: Vec<String> = rows
        .as_array()
        .expect("an array of rows")
        .iter()
        .map(|r| r.as_str().unwrap_or_default().to_owned())
        .collect();
    let cells: Vec<&str> = rows[0].split('|').collect();
    assert_eq!(cells[0], "chord", "{rows:?}");
    assert_eq!(
        &cells[2..7],
        ["2/3", "0", "<b>x</b>", "waiting", "–"],
        "{rows:?}"
    );
    let cells: Vec<&str> = rows[1].split('|').collect();
    assert_eq!(&cells[2..6], ["2/2", "0", "chord-done", "done"], "{rows:?}");
    assert!(cells[6].contains(" ago)"), "{rows:?}");
    assert_eq!(
        page.eval("document.querySelectorAll('#flows-table tbody b').length + ' ' + document.querySelector('#flows-table tbody tr a').getAttribute('href')"),
        "0 #task/%3Cb%3Ex%3C%2Fb%3E",
        "the callback's id is text, and its link goes to the task by id"
    );

    open.store(true, Ordering::SeqCst);
    worker.stop();
    worker.join().unwrap();
}
