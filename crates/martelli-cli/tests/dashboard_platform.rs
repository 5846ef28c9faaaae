//! The dashboard's "Schedules, limits & retries" view in a real browser (headless Chromium, see
//! `browser/mod.rs`): periodic schedules fired by a real `martelli schedule run` process, a rate
//! limit set with `martelli ratelimit`, and a task waiting for its retry in the delayed set, all
//! against a private `redis-server`. Every wait has a time limit.

mod browser;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use browser::Browser;
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

/// Starts the dashboard on a free loopback port; its address.
fn dashboard(url: &str) -> (KillOnDrop, String) {
    let mut child = martelli()
        .args(["dashboard", "--cluster", url, "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the dashboard starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let process = KillOnDrop::new(child);
    let (found, address) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("serving http://").nth(1) {
                let _ = found.send(rest.split('/').next().unwrap_or_default().to_owned());
            }
        }
    });
    let addr = address
        .recv_timeout(SLOW)
        .expect("the dashboard says where it serves");
    (process, addr)
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

    let _scheduler = KillOnDrop::new(
        martelli()
            .args(["schedule", "run", "--quiet", "--cluster", &url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the scheduler starts"),
    );
    let (_dash, addr) = dashboard(&url);
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
}
