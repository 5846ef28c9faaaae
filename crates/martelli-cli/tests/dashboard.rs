//! End-to-end tests of `martelli dashboard`: a private `redis-server`, real `martelli worker`
//! processes (one killed with SIGKILL), the dashboard, and a real browser (headless Chromium, see
//! `browser/mod.rs`) that reads the page and clicks its buttons. Every wait has a time limit, and
//! every process a test starts is killed when it ends.
//!
//! "Within 2 s" below is the promise: once the broker holds a change, the page shows it
//! within 2 s (the dashboard reads the broker once a second, by default).

mod browser;

use std::process::{Command, Stdio};
use std::time::Duration;

use browser::{Browser, Dashboard, http};
use martelli::cluster::{StatusOptions, status};
use martelli_testkit::envelope::Envelope;
use martelli_testkit::poll;
use martelli_testkit::proc::{KillOnDrop, Signal};
use martelli_testkit::redis::RedisServer;
use serde::Serialize;
use serde_json::Value;

/// The promise: a change the broker holds is on the page within this.
const SHOWN_WITHIN: Duration = Duration::from_secs(2);

/// For what takes processes to start or a lease to expire.
const SLOW: Duration = Duration::from_secs(30);

fn martelli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_martelli"))
}

/// `martelli worker` with a 1 s lease and a short poll, quiet.
fn worker(url: &str, name: &str, jobs: usize) -> KillOnDrop {
    KillOnDrop::new(
        martelli()
            .args(["worker", "--cluster", url, "--name", name])
            .args(["-j", &jobs.to_string(), "--lease", "1", "--poll", "0.05"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the worker starts"),
    )
}

/// A task envelope (docs/protocol.md, "Task").
fn envelope(id: &str, task: &str, payload: &[u8], max_attempts: u32) -> Vec<u8> {
    Envelope::new(id, task, payload)
        .max_attempts(max_attempts)
        .encode()
}

/// The payload of a `martelli.shell` task running `line` with `/bin/sh -c`.
fn shell(line: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Shell<'a> {
        #[serde(with = "serde_bytes")]
        shell: &'a [u8],
    }
    rmp_serde::to_vec_named(&Shell {
        shell: line.as_bytes(),
    })
    .expect("a payload encodes")
}

fn xadd(conn: &mut redis::Connection, key: &str, envelope: &[u8]) {
    let _: String = redis::cmd("XADD")
        .arg(key)
        .arg("*")
        .arg("e")
        .arg(envelope)
        .query(conn)
        .expect("XADD");
}

fn xlen(conn: &mut redis::Connection, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query(conn).expect("XLEN")
}

const NORMAL: &str = "martelli:q:default:normal";
const DEAD: &str = "martelli:q:default:dead";

/// Waits until the broker's status satisfies `ready`.
fn wait_broker(url: &str, what: &str, ready: impl Fn(&martelli::cluster::ClusterStatus) -> bool) {
    poll::until(what, SLOW, || {
        status(url, &StatusOptions::new().sample(Duration::ZERO)).is_ok_and(|s| ready(&s))
    });
}

/// JavaScript: the dead-letter table's row whose task id cell is `id`.
fn dead_row(id: &str) -> String {
    format!(
        "[...document.querySelectorAll('#dead-table tbody tr[data-letter]')].find(r => r.cells[1].textContent === {})",
        serde_json::json!(id)
    )
}

/// JavaScript: the number of rows of the dead-letter table that are letters.
const DEAD_ROWS: &str = "document.querySelectorAll('#dead-table tbody tr[data-letter]').length";

#[test]
fn the_page_shows_a_live_cluster_and_acts_on_dead_letters_in_a_real_browser() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut raw = redis.raw();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let d = dir.path().display();
    let pid = std::process::id();

    let dash = Dashboard::start(&url, "127.0.0.1:0", &[], &[]);
    let home = format!("http://{}/", dash.addr);
    let mut page = Browser::launch();
    page.open(&format!("{home}#workers"));

    // A worker starts: the page lists it as alive.
    let mut alpha = worker(&url, "alpha", 1);
    wait_broker(&url, "alpha's heartbeat", |s| {
        s.workers
            .iter()
            .any(|w| w.consumer.starts_with("alpha-") && w.alive)
    });
    page.wait(
        "alpha listed as alive",
        SHOWN_WITHIN,
        "[...document.querySelectorAll('#workers-table tr.alive')].some(r => r.dataset.consumer.startsWith('alpha-') && r.cells[0].textContent === 'alpha')",
    );

    // A task that will be dead-lettered after its worker dies (one attempt allowed), and whose
    // second run, once requeued, leaves a file; two more behind it, waiting for a gate.
    let job = format!("job-{pid}");
    let line =
        format!("if [ -e {d}/first ]; then touch {d}/requeued; else touch {d}/first; sleep 30; fi");
    xadd(
        &mut raw,
        NORMAL,
        &envelope(&job, "martelli.shell", &shell(&line), 1),
    );
    let gate = format!("while [ ! -e {d}/gate ]; do sleep 0.05; done");
    for n in 0..2 {
        xadd(
            &mut raw,
            NORMAL,
            &envelope(
                &format!("gated-{n}-{pid}"),
                "martelli.shell",
                &shell(&gate),
                3,
            ),
        );
    }
    wait_broker(&url, "one task held and two waiting", |s| {
        s.queue.held == 1 && s.queue.waiting == 2
    });
    page.open(&format!("{home}#queues"));
    page.wait(
        "the queue's row: 2 waiting, 1 held",
        SHOWN_WITHIN + Duration::from_secs(1),
        "(() => { const r = document.querySelector('#queues-table tr.total[data-queue=\"default\"]'); return r && r.cells[2].textContent === '2' && r.cells[3].textContent === '1'; })()",
    );
    // Per priority too: the normal stream holds them.
    assert_eq!(
        page.eval("[...document.querySelectorAll('#queues-table tr.priority[data-priority=\"normal\"] td')].slice(2, 4).map(c => c.textContent).join(' ')"),
        "2 1"
    );

    // The worker is killed: once its heartbeat is older than its lease, the page says it is gone.
    poll::until("the first run to start", SLOW, || {
        dir.path().join("first").exists()
    });
    alpha.signal(Signal::KILL);
    alpha.wait_for(SLOW);
    wait_broker(&url, "alpha no longer alive", |s| {
        !s.workers
            .iter()
            .any(|w| w.consumer.starts_with("alpha-") && w.alive)
    });
    page.open(&format!("{home}#workers"));
    page.wait(
        "alpha listed as gone, and since when",
        SHOWN_WITHIN,
        "[...document.querySelectorAll('#workers-table tr.gone')].some(r => r.dataset.consumer.startsWith('alpha-') && r.cells[9].textContent.startsWith('gone since'))",
    );

    // Another worker reclaims the task after the lease: its one attempt is spent, so it is
    // dead-lettered. Tasks of an unknown name are dead-lettered too, one with HTML in its name
    // and payload.
    std::fs::write(dir.path().join("gate"), b"").expect("open the gate");
    let _beta = worker(&url, "beta", 4);
    let html_id = format!("html-{pid}");
    let html_task = "<script>document.title='pwned'</script>";
    let html_payload = "<b id=\"pwned\">bold</b><img src=x onerror=\"document.title='pwned'\">";
    xadd(
        &mut raw,
        NORMAL,
        &envelope(&html_id, html_task, html_payload.as_bytes(), 3),
    );
    for n in 0..3 {
        xadd(
            &mut raw,
            NORMAL,
            &envelope(&format!("junk-{n}-{pid}"), "no.such.task", b"x", 3),
        );
    }
    poll::until("five dead letters", SLOW, || xlen(&mut raw, DEAD) == 5);
    page.open(&format!("{home}#dead"));
    page.wait(
        "five dead letters listed",
        SHOWN_WITHIN,
        &format!("{DEAD_ROWS} === 5"),
    );
    let reason = page.eval(&format!("{}.cells[3].textContent", dead_row(&job)));
    assert!(
        reason
            .as_str()
            .is_some_and(|r| r.starts_with("gave up after")),
        "{reason}"
    );

    // HTML from the broker is shown as text: in the table, and in the inspected letter.
    assert_eq!(
        page.eval(&format!("{}.cells[2].textContent", dead_row(&html_id))),
        html_task
    );
    page.eval(&format!(
        "{}.querySelector('button.inspect').click()",
        dead_row(&html_id)
    ));
    page.wait(
        "the letter's payload preview",
        SHOWN_WITHIN,
        "document.querySelector('#dead-detail pre.preview') !== null",
    );
    assert_eq!(page.text("#dead-detail pre.preview"), html_payload);
    assert_eq!(
        page.eval("document.getElementById('pwned') === null && document.querySelectorAll('main script, main img').length === 0 && document.title === 'martelli dashboard'"),
        true,
        "no element of the payload or the task name was made"
    );

    // The same task by id.
    page.open(&format!("{home}#task/{html_id}"));
    page.wait(
        "the task found as a dead letter",
        SLOW,
        "document.querySelector('#task-detail dd') !== null",
    );
    let detail = page.text("#task-detail");
    assert!(
        detail.contains("dead letter") && detail.contains(html_task),
        "{detail}"
    );
    assert_eq!(page.text("#task-detail pre.preview"), html_payload);
    assert_eq!(page.eval("document.getElementById('pwned') === null"), true);

    // Requeue the killed worker's task through the page: it runs again, on beta, and its letter
    // is gone.
    page.open(&format!("{home}#dead"));
    page.wait(
        "the dead letters",
        SHOWN_WITHIN,
        &format!("{DEAD_ROWS} === 5"),
    );
    page.eval(&format!(
        "{}.querySelector('button.requeue').click()",
        dead_row(&job)
    ));
    poll::until("the requeued task to run again", SLOW, || {
        dir.path().join("requeued").exists()
    });
    assert_eq!(xlen(&mut raw, DEAD), 4);
    page.wait(
        "four dead letters listed",
        SHOWN_WITHIN,
        &format!("{DEAD_ROWS} === 4"),
    );
    assert!(
        page.text("#notice").contains("requeue: 1 dead letter"),
        "{}",
        page.text("#notice")
    );

    // Discard one through the page, after the confirmation.
    page.eval(&format!(
        "{}.querySelector('button.discard').click()",
        dead_row(&html_id)
    ));
    page.wait(
        "the confirmation",
        SHOWN_WITHIN,
        "!document.getElementById('dead-confirm').hidden",
    );
    assert_eq!(
        xlen(&mut raw, DEAD),
        4,
        "nothing is discarded before the confirmation"
    );
    page.click("#dead-confirm-yes");
    poll::until("the letter discarded", SLOW, || xlen(&mut raw, DEAD) == 3);
    page.wait(
        "three dead letters listed",
        SHOWN_WITHIN,
        &format!("{DEAD_ROWS} === 3"),
    );

    // Requeue all: the three unknown tasks run again (and beta dead-letters them again).
    let before: Vec<String> = letter_ids(&mut raw);
    page.click("#dead-requeue-all");
    page.click("#dead-confirm-yes");
    page.wait(
        "the requeue-all notice",
        SHOWN_WITHIN,
        "document.getElementById('notice').textContent.startsWith('requeue all: 3 dead letters')",
    );
    poll::until("the requeued tasks dead-lettered again", SLOW, || {
        let now = letter_ids(&mut raw);
        now.len() == 3 && now.iter().all(|id| !before.contains(id))
    });

    // The page keeps its history across a reload: the charts' span is there before a new tick.
    page.open(&format!("{home}#queues"));
    page.reload();
    page.wait(
        "the history loaded",
        SHOWN_WITHIN,
        "document.getElementById('broker').textContent !== ''",
    );
    assert!(
        page.text("#history-span").contains("of history"),
        "{}",
        page.text("#history-span")
    );
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    page.screenshot(&shots.join("dashboard-queues.png"));
    page.open(&format!("{home}#dead"));
    page.wait(
        "three dead letters listed",
        SHOWN_WITHIN,
        &format!("{DEAD_ROWS} === 3"),
    );
    page.screenshot(&shots.join("dashboard-dead.png"));

    // A delayed task: listed soonest first, and found by id.
    let later = format!("later-{pid}");
    let mut member = b"0".to_vec();
    member.extend(envelope(&later, "reports.nightly", b"{\"day\":1}", 3));
    let _: u64 = redis::cmd("ZADD")
        .arg("martelli:q:default:delayed")
        .arg(4_000_000_000_000u64)
        .arg(member)
        .query(&mut raw)
        .expect("ZADD");
    page.open(&format!("{home}#delayed"));
    page.wait(
        "the delayed task listed",
        SHOWN_WITHIN,
        &format!(
            "[...document.querySelectorAll('#delayed-table tbody tr')].some(r => r.cells[2].textContent === {} && r.cells[1].textContent === 'high')",
            serde_json::json!(later)
        ),
    );
    page.open(&format!("{home}#task/{later}"));
    page.wait(
        "the delayed task found by id",
        SLOW,
        "document.getElementById('task-detail').textContent.includes('delayed: due')",
    );
    page.open(&format!("{home}#dead"));
    page.wait(
        "three dead letters listed",
        SHOWN_WITHIN,
        &format!("{DEAD_ROWS} === 3"),
    );

    // Discard all through the page.
    page.click("#dead-discard-all");
    page.click("#dead-confirm-yes");
    poll::until("every letter discarded", SLOW, || xlen(&mut raw, DEAD) == 0);
    page.wait(
        "an empty dead-letter list",
        SHOWN_WITHIN,
        &format!("{DEAD_ROWS} === 0 && document.getElementById('dead-summary').textContent.startsWith('0 dead letters')"),
    );
}

/// The ids of the dead letters, oldest first.
fn letter_ids(conn: &mut redis::Connection) -> Vec<String> {
    let entries: redis::Value = redis::cmd("XRANGE")
        .arg(DEAD)
        .arg("-")
        .arg("+")
        .query(conn)
        .expect("XRANGE");
    let redis::Value::Array(entries) = entries else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|e| match e {
            redis::Value::Array(parts) => match parts.first() {
                Some(redis::Value::BulkString(id)) => {
                    Some(String::from_utf8_lossy(id).into_owned())
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn ten_thousand_dead_letters_and_a_hundred_workers_stay_paged() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut raw = redis.raw();
    // Letters as a worker writes them (docs/protocol.md, "Dead letter"), and heartbeats of 100
    // workers (their hashes, as a worker writes them), in two pipelines.
    let mut pipe = redis::pipe();
    for n in 0..10_000 {
        let id = format!("task-{n}");
        pipe.cmd("XADD")
            .arg(DEAD)
            .arg("*")
            .arg("reason")
            .arg(format!("unknown task \"t{n}\""))
            .arg("stream")
            .arg(NORMAL)
            .arg("entry")
            .arg("1-1")
            .arg("attempts")
            .arg(1)
            .arg("worker")
            .arg("w")
            .arg("at")
            .arg(1_700_000_000_000u64 + n)
            .arg("id")
            .arg(&id)
            .arg("task")
            .arg(format!("t{n}"))
            .arg("e")
            .arg(envelope(&id, &format!("t{n}"), b"p", 3))
            .ignore();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as u64;
    for n in 0..100 {
        let key = format!("martelli:worker:node{n:03}-{}-0000abcd", 1000 + n);
        pipe.cmd("HSET")
            .arg(&key)
            .arg("queue")
            .arg("default")
            .arg("pid")
            .arg(1000 + n)
            .arg("concurrency")
            .arg(8)
            .arg("held")
            .arg(0)
            .arg("succeeded")
            .arg(n)
            .arg("failed")
            .arg(0)
            .arg("dead_lettered")
            .arg(0)
            .arg("last_seen")
            .arg(now)
            .arg("lease_ms")
            .arg(600_000)
            .ignore();
    }
    pipe.exec(&mut raw)
        .expect("the letters and heartbeats are written");

    let dash = Dashboard::start(&url, "127.0.0.1:0", &[], &[]);
    let home = format!("http://{}/", dash.addr);
    let mut page = Browser::launch();
    page.open(&format!("{home}#dead"));
    page.wait(
        "the first page of letters",
        SLOW,
        &format!("{DEAD_ROWS} === 50 && document.getElementById('dead-summary').textContent.startsWith('10000 dead letters')"),
    );
    assert_eq!(
        page.text("#dead-table tbody tr[data-letter] td.mono a"),
        "task-9999",
        "newest first"
    );
    page.click("#dead-older");
    page.wait(
        "the second page",
        SLOW,
        "document.querySelector('#dead-table tbody tr[data-letter] td.mono a').textContent === 'task-9949'",
    );
    assert_eq!(page.eval(DEAD_ROWS), 50);
    page.click("#dead-newer");
    page.wait(
        "the first page again",
        SLOW,
        "document.querySelector('#dead-table tbody tr[data-letter] td.mono a').textContent === 'task-9999'",
    );
    // The whole page holds a bounded number of elements, whatever the queue holds.
    let elements = page.eval("document.getElementsByTagName('*').length");
    assert!(elements.as_u64().is_some_and(|n| n < 2000), "{elements}");

    page.open(&format!("{home}#workers"));
    page.wait(
        "a page of 50 of the 100 workers",
        SLOW,
        "document.querySelectorAll('#workers-table tr.alive').length === 50 && document.getElementById('workers-summary').textContent === '100 alive, 0 gone'",
    );
    page.eval("document.querySelector('#workers-pager button:last-child').click()");
    page.wait(
        "the second page of workers",
        SLOW,
        "document.querySelector('#workers-table tr.alive td').textContent === 'node050'",
    );
    page.eval("(() => { const f = document.getElementById('workers-filter'); f.value = 'node07'; f.dispatchEvent(new Event('input')); })()");
    page.wait(
        "the workers filtered",
        SLOW,
        "document.querySelectorAll('#workers-table tr.alive').length === 10",
    );
}

#[test]
fn a_non_loopback_listen_without_auth_refuses_to_start() {
    // The check comes before the broker is reached: nothing listens at this URL.
    for (args, env, says) in [
        (
            vec!["--listen", "0.0.0.0:0"],
            vec![],
            "refusing to serve on 0.0.0.0:0 without --auth",
        ),
        (
            vec![
                "--listen",
                "0.0.0.0:0",
                "--auth",
                "token:MARTELLI_TEST_UNSET_TOKEN",
            ],
            vec![],
            "MARTELLI_TEST_UNSET_TOKEN is not set",
        ),
        (
            vec!["--listen", "0.0.0.0:0", "--auth", "basic:DASH_PAIR"],
            vec![("DASH_PAIR", "no-colon-here")],
            "must hold user:password",
        ),
    ] {
        let child = martelli()
            .args(["dashboard", "--cluster", "redis://127.0.0.1:1"])
            .args(&args)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the dashboard runs");
        let out = KillOnDrop::new(child).output(SLOW);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn credentials_csrf_and_read_only_guard_every_request() {
    let redis = RedisServer::start();
    let url = redis.url();
    let token = "tok-0123456789abcdef";
    let open = Dashboard::start(
        &url,
        "0.0.0.0:0",
        &["--auth", "token:DASH_TOKEN"],
        &[("DASH_TOKEN", token)],
    );
    let addr = open.addr.as_str();
    let bearer = format!("Bearer {token}");
    assert_eq!(http(addr, "GET", "/api/config", &[]).status, 401);
    assert_eq!(
        http(
            addr,
            "GET",
            "/",
            &[("Authorization", "Bearer wrong-token-value")]
        )
        .status,
        401
    );
    let config = http(addr, "GET", "/api/config", &[("Authorization", &bearer)]);
    assert_eq!(config.status, 200, "{}", config.body);
    let config: Value = serde_json::from_str(&config.body).expect("JSON");
    let csrf = config["csrf"].as_str().expect("a CSRF token").to_owned();
    // Opening the page with ?token= sets a cookie that lets the page in from then on.
    let opened = http(addr, "GET", &format!("/?token={token}"), &[]);
    assert_eq!(opened.status, 303);
    assert_eq!(opened.header("location"), Some("/"));
    let cookie = opened.header("set-cookie").expect("a cookie").to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap_or_default().to_owned();
    let page = http(addr, "GET", "/", &[("Cookie", &cookie)]);
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-security-policy")
            .is_some_and(|c| c.contains("script-src 'self'"))
    );
    // Writes need the CSRF token, and not from another site's page.
    let write = "/api/queues/default/dead/discard-all";
    assert_eq!(
        http(addr, "POST", write, &[("Authorization", &bearer)]).status,
        403
    );
    assert_eq!(
        http(
            addr,
            "POST",
            write,
            &[("Authorization", &bearer), ("X-CSRF-Token", "0000")]
        )
        .status,
        403
    );
    let cross = http(
        addr,
        "POST",
        write,
        &[
            ("Authorization", &bearer),
            ("X-CSRF-Token", &csrf),
            ("Origin", "http://evil.example"),
        ],
    );
    assert_eq!(cross.status, 403, "{}", cross.body);
    let done = http(
        addr,
        "POST",
        write,
        &[("Authorization", &bearer), ("X-CSRF-Token", &csrf)],
    );
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(
        serde_json::from_str::<Value>(&done.body).expect("JSON")["done"],
        0
    );
    // Bad ids are refused with what is expected.
    let bad = http(
        addr,
        "POST",
        "/api/queues/default/dead/nonsense/requeue",
        &[("Authorization", &bearer), ("X-CSRF-Token", &csrf)],
    );
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("is not a dead-letter id"), "{}", bad.body);

    // Basic auth asks the browser for credentials.
    let basic = Dashboard::start(
        &url,
        "127.0.0.1:0",
        &["--auth", "basic:DASH_PAIR"],
        &[("DASH_PAIR", "admin:correct horse")],
    );
    let asked = http(&basic.addr, "GET", "/", &[]);
    assert_eq!(asked.status, 401);
    assert!(
        asked
            .header("www-authenticate")
            .is_some_and(|h| h.starts_with("Basic"))
    );
    use base64::Engine as _;
    let pair = base64::engine::general_purpose::STANDARD.encode("admin:correct horse");
    assert_eq!(
        http(
            &basic.addr,
            "GET",
            "/",
            &[("Authorization", &format!("Basic {pair}"))]
        )
        .status,
        200
    );

    // Read-only: no writes at all; and without auth, only requests naming this machine.
    let shown = Dashboard::start(&url, "127.0.0.1:0", &["--read-only"], &[]);
    let config: Value =
        serde_json::from_str(&http(&shown.addr, "GET", "/api/config", &[]).body).expect("JSON");
    assert_eq!(config["read_only"], true);
    let csrf = config["csrf"].as_str().expect("a CSRF token");
    let refused = http(&shown.addr, "POST", write, &[("X-CSRF-Token", csrf)]);
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("--read-only"), "{}", refused.body);
    let rebound = http(
        &shown.addr,
        "GET",
        "/api/config",
        &[("Host", "evil.example:8080")],
    );
    assert_eq!(rebound.status, 403, "{}", rebound.body);
    assert_eq!(
        http(
            &shown.addr,
            "GET",
            "/api/config",
            &[("Host", "localhost:8080")]
        )
        .status,
        200
    );

    // SIGTERM stops it cleanly, even with a page on its live feed.
    let mut feed = std::net::TcpStream::connect(&shown.addr).expect("connect");
    feed.set_read_timeout(Some(SLOW)).expect("a read timeout");
    std::io::Write::write_all(
        &mut feed,
        format!("GET /api/events HTTP/1.1\r\nHost: {}\r\n\r\n", shown.addr).as_bytes(),
    )
    .expect("ask for the feed");
    let mut first = [0u8; 64];
    let n = std::io::Read::read(&mut feed, &mut first).expect("the feed answers");
    assert!(
        first[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..n])
    );
    let mut shown = shown;
    shown.process.signal(Signal::TERM);
    assert!(shown.process.wait_for(SLOW).success());
}

#[test]
fn the_dashboard_reads_on_after_the_broker_restarts() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let dash = Dashboard::start(&url, "127.0.0.1:0", &["--interval", "0.2"], &[]);
    let latest = |addr: &str| -> (u64, Value) {
        let history: Value =
            serde_json::from_str(&http(addr, "GET", "/api/history", &[]).body).expect("JSON");
        let at = history["samples"]
            .as_array()
            .and_then(|s| s.last())
            .and_then(|s| s["at_ms"].as_u64())
            .unwrap_or(0);
        (at, history["error"].clone())
    };
    poll::until("a first reading", SLOW, || latest(&dash.addr).0 > 0);
    redis.restart();
    let restarted = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as u64;
    // Readings go on, from a new connection, and the error (if one was shown) is gone.
    poll::until("a reading after the restart", SLOW, || {
        let (at, error) = latest(&dash.addr);
        at > restarted && error.is_null()
    });
}
