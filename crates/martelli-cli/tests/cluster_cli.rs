//! End-to-end tests of the cluster commands: `martelli worker`, `martelli run --cluster` and
//! `martelli status`, against a private `redis-server` started on a free port and real worker
//! processes (killed with real signals). Every process a test starts is killed when it ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use martelli_testkit::poll;
use martelli_testkit::proc::{KillOnDrop, Signal, is_dead, wait_dead};
use martelli_testkit::redis::{RedisServer, free_port};
use martelli_testkit::tls::Certs;

/// The `martelli` binary under test.
fn martelli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_martelli"))
}

/// Starts `command`; the process is killed when dropped.
fn start(command: &mut Command) -> KillOnDrop {
    KillOnDrop::new(command.spawn().expect("the martelli binary starts"))
}

/// `martelli worker` on `url` with a short lease and poll, so that tests are quick, and no output.
fn worker_command(url: &str, name: &str, jobs: usize) -> Command {
    let mut command = martelli();
    command
        .args(["worker", "--cluster", url, "--name", name])
        .args(["-j", &jobs.to_string(), "--lease", "1", "--poll", "0.05"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Starts `martelli worker` on `url` (see [`worker_command`]).
fn worker(url: &str, name: &str, jobs: usize) -> KillOnDrop {
    start(&mut worker_command(url, name, jobs))
}

/// Starts the only worker on `url` and waits until it is registered (its first heartbeat).
fn only_worker(url: &str, name: &str, jobs: usize) -> KillOnDrop {
    let worker = worker(url, name, jobs);
    wait_workers(url, 1);
    worker
}

/// Starts `martelli run --cluster url ARGS…` in the background, its output piped.
fn run_bg(url: &str, args: &[&str]) -> KillOnDrop {
    start(
        martelli()
            .args(["run", "--cluster", url])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
}

/// Runs `martelli run --cluster url ARGS…` to its end (at most a minute).
fn run(url: &str, args: &[&str]) -> Output {
    run_bg(url, args).output(Duration::from_secs(60))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

/// `martelli status --json --sample 0`, parsed.
fn status(url: &str) -> serde_json::Value {
    let o = martelli()
        .args(["status", "--cluster", url, "--json", "--sample", "0"])
        .output()
        .expect("martelli status runs");
    assert_code(&o, 0);
    serde_json::from_slice(&o.stdout).expect("status --json prints JSON")
}

/// Polls `martelli status` until `ready` holds (at most 30 s).
fn wait_status(
    url: &str,
    what: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    poll::read_until(what, Duration::from_secs(30), || status(url), ready)
}

/// The live workers the status lists, by consumer name.
fn live_workers(s: &serde_json::Value) -> Vec<&serde_json::Value> {
    s["workers"]
        .as_array()
        .map(|w| w.iter().filter(|w| w["alive"] == true).collect())
        .unwrap_or_default()
}

/// Waits until `n` live workers are registered (their first heartbeat is written).
fn wait_workers(url: &str, n: usize) {
    wait_status(url, &format!("{n} live worker(s)"), |s| {
        live_workers(s).len() == n
    });
}

/// Waits until `path` exists (at most 30 s).
fn wait_file(path: &Path) {
    poll::until(
        &format!("{} to appear", path.display()),
        Duration::from_secs(30),
        || path.exists(),
    );
}

/// Waits until `n` jobs wrote their `started.ARG` file in `dir` (at most 30 s), whichever jobs the
/// workers took first.
fn wait_started(dir: &Path, n: usize) {
    let count = || {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("started."))
                    .count()
            })
            .unwrap_or(0)
    };
    poll::until(
        &format!("{n} job(s) to start in {}", dir.display()),
        Duration::from_secs(30),
        || count() >= n,
    );
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

fn joblog_rows(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .expect("the joblog exists")
        .lines()
        .skip(1)
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

#[test]
fn jobs_run_on_workers_in_order_with_a_joblog_naming_the_worker() {
    let redis = RedisServer::start();
    let url = redis.url();
    let _w = only_worker(&url, "alpha", 2);
    let dir = temp_dir();
    let log = dir.path().join("joblog");
    let o = run(
        &url,
        &[
            "-k",
            "--joblog",
            log.to_str().unwrap(),
            "echo",
            "{}",
            ":::",
            "a",
            "b",
            "c",
        ],
    );
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "a\nb\nc\n");
    let rows = joblog_rows(&log);
    assert_eq!(rows.len(), 3, "{rows:?}");
    for row in &rows {
        assert_eq!(row[1], "alpha", "the Host column names the worker: {row:?}");
        assert_eq!(
            row[5], "2",
            "Receive counts the job's stdout bytes: {row:?}"
        );
        assert_eq!(row[6], "0");
    }
    let mut commands: Vec<&str> = rows.iter().map(|r| r[8].as_str()).collect();
    commands.sort_unstable();
    assert_eq!(commands, ["echo a", "echo b", "echo c"]);

    // --keep-order holds a fast job back behind a slow one started before it.
    let o = run(
        &url,
        &["-k", "-j", "2", "sleep {}; echo {}", ":::", "0.6", "0"],
    );
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "0.6\n0\n");
    // Without it, results are printed as they arrive.
    let o = run(&url, &["-j", "2", "sleep {}; echo {}", ":::", "0.6", "0"]);
    assert_eq!(stdout(&o), "0\n0.6\n");
}

#[test]
fn exit_status_halt_retries_and_timeout_behave_as_in_a_local_run() {
    let redis = RedisServer::start();
    let url = redis.url();
    let _w = only_worker(&url, "beta", 2);

    // The number of failed jobs.
    let o = run(&url, &["exit {}", ":::", "0", "3", "5"]);
    assert_code(&o, 2);
    // --halt now,fail=1: the failing job's own status.
    let o = run(
        &url,
        &[
            "-j",
            "1",
            "--halt",
            "now,fail=1",
            "exit {}",
            ":::",
            "7",
            "0",
        ],
    );
    assert_code(&o, 7);
    // Signals come back too: 128 + the signal with --halt.
    let o = run(
        &url,
        &["--halt", "now,fail=1", "kill -USR1 $$ # {}", ":::", "x"],
    );
    assert_code(&o, 128 + 10);
    // A command that cannot start is a failure, as locally.
    let o = run(&url, &["--no-shell", "/no/such/program", ":::", "x"]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("/no/such/program"), "{}", stderr(&o));

    // --retries: the first attempt fails, the second succeeds.
    let dir = temp_dir();
    let marker = dir.path().join("tried");
    let line = format!(
        "if [ -e {m} ]; then echo second; else touch {m}; echo first; exit 1; fi # {{}}",
        m = marker.display()
    );
    let o = run(&url, &["--retries", "2", &line, ":::", "x"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "second\n");

    // --timeout kills the command's process group on the worker.
    let log = dir.path().join("joblog");
    let started = Instant::now();
    let o = run(
        &url,
        &[
            "--timeout",
            "0.5",
            "--joblog",
            log.to_str().unwrap(),
            "sleep 30; echo never # {}",
            ":::",
            "x",
        ],
    );
    assert_code(&o, 1);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
    assert!(!stdout(&o).contains("never"));
    let rows = joblog_rows(&log);
    assert_eq!(
        rows[0][6], "-1",
        "a timed-out job's Exitval is -1: {rows:?}"
    );
}

#[test]
fn output_modes_and_caps_carry_over() {
    let redis = RedisServer::start();
    let url = redis.url();
    let _w = only_worker(&url, "gamma", 2);
    let o = run(
        &url,
        &[
            "--tag",
            "-k",
            "echo out; echo err >&2 # {}",
            ":::",
            "x",
            "y",
        ],
    );
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "x\tout\ny\tout\n");
    assert_eq!(stderr(&o), "x\terr\ny\terr\n");
    let o = run(&url, &["--json", "echo {}", ":::", "hi"]);
    assert_code(&o, 0);
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON line");
    assert_eq!(line["data"]["stdout"], "hi\n");
    assert_eq!(line["data"]["host"], "gamma");
    assert_eq!(line["data"]["exit_code"], 0);
}

#[test]
fn output_beyond_the_workers_cap_is_truncated_and_said() {
    let redis = RedisServer::start();
    let url = redis.url();
    let _w = start(worker_command(&url, "small", 1).args(["--max-output", "4"]));
    wait_workers(&url, 1);
    let o = run(&url, &["printf", "0123456789", ":::", "x"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "0123");
    assert!(
        stderr(&o).contains("first 4 of the 10 bytes"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_command_on_a_killed_worker_is_reclaimed_and_completes_on_another() {
    let redis = RedisServer::start();
    let url = redis.url();
    let dir = temp_dir();
    let runs = dir.path().join("runs");
    std::fs::create_dir(&runs).unwrap();
    let mut first = worker(&url, "doomed", 1);
    wait_workers(&url, 1);
    // Each run of the command leaves a file named after its shell's pid, then works for a while.
    let line = format!("touch {}/$$; sleep 1.5; echo done # {{}}", runs.display());
    let log = dir.path().join("joblog");
    let job = run_bg(
        &url,
        &["--joblog", log.to_str().unwrap(), &line, ":::", "x"],
    );
    poll::until("the command to start", Duration::from_secs(30), || {
        std::fs::read_dir(&runs).unwrap().count() > 0
    });
    first.signal(Signal::KILL);
    first.wait_for(Duration::from_secs(10));
    let _second = worker(&url, "rescuer", 1);
    let o = job.output(Duration::from_secs(60));
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "done\n");
    assert_eq!(
        std::fs::read_dir(&runs).unwrap().count(),
        2,
        "the command ran on both workers"
    );
    let rows = joblog_rows(&log);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][1], "rescuer");
    // The killed worker's command died with it (its guardian killed the group): no `sleep` of the
    // first run is left.
    let first_pid: Vec<PathBuf> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for pid in first_pid {
        let pid = pid.file_name().unwrap().to_string_lossy().into_owned();
        let pid: u32 = pid.parse().expect("a pid file name");
        assert!(
            is_dead(pid),
            "the command's shell {pid} outlived its worker"
        );
    }
}

#[test]
fn status_shows_workers_and_queue_depth() {
    let redis = RedisServer::start();
    let url = redis.url();
    let _w = only_worker(&url, "steady", 1);
    let dir = temp_dir();
    let gate = dir.path().join("gate");
    // Three jobs at once on one slot: one held, two waiting, until the gate file appears.
    let line = format!(
        "while [ ! -e {} ]; do sleep 0.05; done # {{}}",
        gate.display()
    );
    let job = run_bg(&url, &["-j", "3", &line, ":::", "1", "2", "3"]);
    let s = wait_status(&url, "one held and two waiting", |s| {
        s["queue"]["held"] == 1 && s["queue"]["waiting"] == 2
    });
    assert_eq!(s["queue"]["name"], "default");
    assert_eq!(s["queue"]["streams"][1]["priority"], "normal");
    assert_eq!(s["queue"]["streams"][1]["waiting"], 2);
    assert_eq!(s["queue"]["dead"], 0);
    let workers = live_workers(&s);
    assert_eq!(workers.len(), 1, "{s:#}");
    let w = workers[0];
    assert!(
        w["consumer"].as_str().unwrap().starts_with("steady-"),
        "{w:#}"
    );
    assert_eq!(w["concurrency"], 1);
    assert_eq!(w["queue"], "default");
    std::fs::write(&gate, b"").unwrap();
    let o = job.output(Duration::from_secs(60));
    assert_code(&o, 0);
    // The worker's counters reach its heartbeat within a third of its lease.
    let s = wait_status(&url, "three successes counted", |s| {
        live_workers(s).first().is_some_and(|w| w["succeeded"] == 3)
    });
    assert_eq!(s["queue"]["waiting"], 0);
    assert_eq!(s["queue"]["held"], 0);
    // The text form is a table with the worker's row.
    let o = martelli()
        .args(["status", "--cluster", &url, "--sample", "0.2"])
        .output()
        .unwrap();
    assert_code(&o, 0);
    let text = stdout(&o);
    assert!(
        text.contains("WORKER") && text.contains("steady-"),
        "{text}"
    );
    assert!(text.contains("throughput over"), "{text}");
}

#[test]
fn sigterm_lets_a_worker_finish_its_command_and_exit_0() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut w = worker(&url, "graceful", 1);
    wait_workers(&url, 1);
    let dir = temp_dir();
    let started = dir.path().join("started");
    let line = format!("touch {}; sleep 1; echo finished # {{}}", started.display());
    let job = run_bg(&url, &[&line, ":::", "x"]);
    wait_file(&started);
    w.signal(Signal::TERM);
    let status = w.wait_for(Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(0),
        "the worker exits 0 after a graceful stop"
    );
    let o = job.output(Duration::from_secs(30));
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "finished\n");
}

/// Waits until the file at `path` holds a process id, and returns it.
fn read_pid(path: &Path) -> u32 {
    let mut pid = None;
    poll::until(
        &format!("{} to hold a pid", path.display()),
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            pid = text.trim().parse().ok();
            pid.is_some()
        },
    );
    pid.expect("a pid was read")
}

#[test]
fn halt_now_cancels_the_command_running_on_a_worker() {
    let redis = RedisServer::start();
    let url = redis.url();
    let _w = only_worker(&url, "delta", 2);
    let dir = temp_dir();
    let pid_file = dir.path().join("sleep.pid");
    // Job `sleep` records the pid of a long sleep in its process group and waits for it; job
    // `fail` fails once that sleep runs, which halts the run at once.
    let line = format!(
        "if [ {{}} = fail ]; then while [ ! -s {p} ]; do sleep 0.05; done; exit 3; \
         else sleep 60 & echo $! > {p}; wait; fi",
        p = pid_file.display()
    );
    let started = Instant::now();
    let o = run(
        &url,
        &[
            "-j",
            "2",
            "--halt",
            "now,fail=1",
            &line,
            ":::",
            "sleep",
            "fail",
        ],
    );
    let took = started.elapsed();
    assert_code(&o, 3);
    assert!(took < Duration::from_secs(20), "run took {took:?}");
    let pid = read_pid(&pid_file);
    // The worker saw the job's tombstone and killed the command's process group.
    wait_dead(pid, Duration::from_secs(10), "the cancelled job's sleep");
    // Its slot is free again: the worker runs the next job.
    let o = run(&url, &["-j", "2", "echo {}", ":::", "next"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "next\n");
}

#[test]
fn a_second_ctrl_c_cancels_the_commands_running_on_workers() {
    let redis = RedisServer::start();
    let url = redis.url();
    let _w = only_worker(&url, "epsilon", 1);
    let dir = temp_dir();
    let pid_file = dir.path().join("sleep.pid");
    let line = format!("sleep 60 & echo $! > {}; wait # {{}}", pid_file.display());
    let mut job = run_bg(&url, &[&line, ":::", "x"]);
    let pid = read_pid(&pid_file);
    job.signal(Signal::INT);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!is_dead(pid), "the first Ctrl-C lets the job run");
    let interrupted = Instant::now();
    job.signal(Signal::INT);
    let status = job.wait_for(Duration::from_secs(20));
    assert_eq!(status.code(), Some(130));
    assert!(interrupted.elapsed() < Duration::from_secs(10));
    wait_dead(pid, Duration::from_secs(10), "the cancelled job's sleep");
}

#[test]
fn broker_problems_are_one_line_errors() {
    // Nothing listens there.
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let o = run(&url, &["echo", ":::", "x"]);
    assert_code(&o, 255);
    let e = stderr(&o);
    assert!(e.contains("cannot reach the Redis broker"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");

    let o = martelli()
        .args(["worker", "--cluster", "http://nowhere"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("invalid broker URL"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");

    let redis = RedisServer::with_args(&["--requirepass", "sesame"]);
    let wrong = format!("redis://:nope@127.0.0.1:{}", redis.port);
    for args in [
        vec!["worker", "--cluster", &wrong],
        vec!["status", "--cluster", &wrong],
    ] {
        let o = martelli().args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let e = stderr(&o);
        assert!(e.contains("refused the credentials"), "{e}");
        assert!(!e.contains("nope"), "the password is hidden: {e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    }
}

#[test]
fn without_j_as_many_jobs_run_at_once_as_the_live_workers_have_slots() {
    let redis = RedisServer::start();
    let url = redis.url();
    let _a = worker(&url, "left", 2);
    let _b = worker(&url, "right", 3);
    wait_workers(&url, 2);
    let dir = temp_dir();
    let gate = dir.path().join("gate");
    // Each job marks that it started and waits for the gate: the gate opens only once all five
    // run at once, which needs five slots (this machine's cores, the local default, are fewer).
    let line = format!(
        "touch {d}/started.{{}}; while [ ! -e {g} ]; do sleep 0.02; done; echo {{}}",
        d = dir.path().display(),
        g = gate.display()
    );
    let job = run_bg(&url, &["-k", &line, ":::", "1", "2", "3", "4", "5"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let started = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("started."))
            })
            .count();
        if started == 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {started} of 5 jobs ran at once"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(&gate, b"").unwrap();
    let o = job.output(Duration::from_secs(60));
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "1\n2\n3\n4\n5\n");
}

#[test]
fn run_worker_and_status_speak_tls_with_a_private_ca() {
    let skip = |why: String| {
        eprintln!("SKIPPED run_worker_and_status_speak_tls_with_a_private_ca: {why}");
    };
    let certs = match Certs::make() {
        Ok(certs) => certs,
        Err(why) => return skip(why),
    };
    let server = match RedisServer::start_tls(&certs) {
        Ok(server) => server,
        Err(why) => return skip(why),
    };
    let ca = certs.ca().to_string_lossy().into_owned();
    let url = server.url();
    // The worker trusts the CA through the environment, run and status through --tls-ca.
    let _w = start(worker_command(&url, "secure", 1).env("MARTELLI_TLS_CA", &ca));
    let o = run(&url, &["--tls-ca", &ca, "-k", "echo", ":::", "x", "y"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "x\ny\n");
    let o = martelli()
        .args(["status", "--cluster", &url, "--tls-ca", &ca, "--json"])
        .args(["--sample", "0"])
        .output()
        .unwrap();
    assert_code(&o, 0);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["workers"][0]["queue"], "default", "{s:#}");
    // Without the CA, the certificate is refused in one line that says what to do.
    let o = martelli()
        .args(["status", "--cluster", &url, "--sample", "0"])
        .env_remove("MARTELLI_TLS_CA")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("not trusted") && e.contains("--tls-ca"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
}

/// The consumers of the normal stream's group, as `redis-cli XINFO CONSUMERS` prints them (the
/// `redis-cli` of the redis-server package).
fn consumers(port: u16) -> String {
    let o = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "XINFO", "CONSUMERS"])
        .args(["martelli:q:default:normal", "martelli"])
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn workers_reclaimed_from_read_as_gone_and_leave_the_group() {
    let redis = RedisServer::start();
    let url = redis.url();
    // A worker killed while it held nothing, after it ran a job (so it has a consumer).
    let mut sleeper = only_worker(&url, "sleeper", 1);
    assert_code(&run(&url, &["echo", ":::", "warm"]), 0);
    assert!(consumers(redis.port).contains("sleeper-"));
    sleeper.signal(Signal::KILL);
    sleeper.wait_for(Duration::from_secs(10));
    // Two workers with a lease far longer than the test, each running a job when it is killed.
    let mut doomed: Vec<KillOnDrop> = ["doomed1", "doomed2"]
        .iter()
        .map(|name| {
            start(
                martelli()
                    .args(["worker", "--cluster", &url, "--name", name])
                    .args(["-j", "1", "--lease", "120", "--poll", "0.05"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
        })
        .collect();
    wait_status(&url, "both doomed workers alive", |s| {
        live_workers(s)
            .iter()
            .filter(|w| {
                w["consumer"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("doomed"))
            })
            .count()
            == 2
    });
    let dir = temp_dir();
    let line = format!(
        "touch {}/started.{{}}; sleep 1; echo {{}}",
        dir.path().display()
    );
    let job = run_bg(&url, &["-j", "2", "-k", &line, ":::", "a", "b"]);
    for name in ["started.a", "started.b"] {
        wait_file(&dir.path().join(name));
    }
    for w in &mut doomed {
        w.signal(Signal::KILL);
        w.wait_for(Duration::from_secs(10));
    }
    // Its lease is short: it reclaims the jobs a second after it starts.
    let _rescuer = worker(&url, "rescuer", 2);
    let o = job.output(Duration::from_secs(60));
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "a\nb\n");
    // The workers reclaimed from read as gone at once, though their own lease has not run out;
    // they, and the one killed while it held nothing, leave the group.
    wait_status(&url, "only the rescuer alive", |s| {
        let live = live_workers(s);
        live.len() == 1
            && live[0]["consumer"]
                .as_str()
                .is_some_and(|c| c.starts_with("rescuer"))
    });
    let consumers_left = || consumers(redis.port);
    poll::until(
        "the dead workers' consumers to leave the group",
        Duration::from_secs(20),
        || {
            let c = consumers_left();
            c.contains("rescuer-") && !c.contains("doomed") && !c.contains("sleeper-")
        },
    );
}

/// Stops the broker as `redis-cli shutdown nosave` does and starts it again on the same port, with
/// the same arguments: everything it held is gone.
fn shutdown_nosave_and_restart(redis: &mut RedisServer) {
    let _ = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "shutdown", "nosave"])
        .output();
    redis.restart();
}

#[test]
fn run_finishes_every_job_after_a_broker_restart_without_persistence() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let _w = only_worker(&url, "survivor", 1);
    let dir = temp_dir();
    // Each job waits for the file `go`, which the test writes after the restart: the job the worker
    // took runs through the restart, and the three others wait in the stream until then, however
    // slowly the test goes (`-j4` queues the four in any order).
    let line = format!(
        "touch {d}/started.{{}}; while [ ! -e {d}/go ]; do sleep 0.05; done; echo {{}}",
        d = dir.path().display()
    );
    let job = run_bg(
        &url,
        &[
            "-j",
            "4",
            "-k",
            "--timeout",
            "30",
            &line,
            ":::",
            "1",
            "2",
            "3",
            "4",
        ],
    );
    wait_started(dir.path(), 1);
    // The three others are queued: they vanish with the stream.
    wait_status(&url, "three jobs waiting", |s| s["queue"]["waiting"] == 3);
    shutdown_nosave_and_restart(&mut redis);
    std::fs::write(dir.path().join("go"), "").expect("the go file is written");
    let o = job.output(Duration::from_secs(60));
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "1\n2\n3\n4\n");
    assert!(
        stderr(&o).contains("3 task(s) vanished from the broker"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn timeout_bounds_the_wait_for_a_result_that_never_comes() {
    let redis = RedisServer::start();
    let url = redis.url();
    let w = only_worker(&url, "frozen", 1);
    let dir = temp_dir();
    let started = dir.path().join("started");
    let line = format!("touch {}; sleep 20 # {{}}", started.display());
    let began = Instant::now();
    let job = run_bg(&url, &["--timeout", "1", &line, ":::", "x"]);
    wait_file(&started);
    // The worker stops (its command goes on, in a process group of its own): no result comes.
    w.signal(Signal::STOP);
    let o = job.output(Duration::from_secs(60));
    let took = began.elapsed();
    w.signal(Signal::CONT);
    assert_code(&o, 1);
    let e = stderr(&o);
    assert!(
        e.contains("no result came from the cluster") && e.contains("timed out"),
        "{e}"
    );
    assert!(took < Duration::from_secs(20), "run took {took:?}");
}

/// A worker frozen between taking a job and sending its `started` note sends no news at all; here
/// the test itself is that worker (it reads the job as a consumer of the queue's group, then
/// nothing), so the note can never come, whatever the machine's load. `--timeout` still bounds the
/// wait: `run` finds the job held by a worker on the broker and counts from there.
#[test]
fn timeout_bounds_the_wait_for_a_job_taken_by_a_worker_that_sent_no_note() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut raw = redis.raw();
    let stream = "martelli:q:default:normal";
    redis::cmd("XGROUP")
        .arg(&["CREATE", stream, "martelli", "$", "MKSTREAM"])
        .exec(&mut raw)
        .expect("the group is created");
    let began = Instant::now();
    let job = run_bg(
        &url,
        &[
            "--timeout",
            "1",
            "--kill-grace",
            "1",
            "true # {}",
            ":::",
            "x",
        ],
    );
    poll::until("the job to be taken", Duration::from_secs(30), || {
        let taken: redis::Value = redis::cmd("XREADGROUP")
            .arg(&[
                "GROUP", "martelli", "frozen", "COUNT", "1", "STREAMS", stream, ">",
            ])
            .query(&mut raw)
            .expect("XREADGROUP");
        taken != redis::Value::Nil
    });
    let o = job.output(Duration::from_secs(60));
    let took = began.elapsed();
    assert_code(&o, 1);
    let e = stderr(&o);
    assert!(
        e.contains("no result came from the cluster") && e.contains("timed out"),
        "{e}"
    );
    // 1 s + 1 s + 5 s after the job was taken; a wait without a bound takes the whole minute.
    assert!(took < Duration::from_secs(40), "run took {took:?}");
    let tombstones: Vec<String> = redis::cmd("KEYS")
        .arg("martelli:cancel:*")
        .query(&mut raw)
        .expect("KEYS");
    assert_eq!(tombstones.len(), 1, "the job is cancelled on its worker");
}

/// The `ACL SETUSER` lines of docs/cluster.md ("Access control"), as `redis-server` arguments
/// (`--user NAME RULE…`), with each `*_PASSWORD` placeholder replaced by `secret-NAME`: the test
/// uses exactly the rules the documentation gives.
fn documented_acl_users() -> Vec<String> {
    let doc = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/cluster.md"
    ));
    let mut args = Vec::new();
    for line in doc.lines().filter_map(|l| l.strip_prefix("ACL SETUSER ")) {
        let mut words = line.split_whitespace();
        let name = words.next().expect("a user name");
        args.push("--user".to_owned());
        args.push(name.to_owned());
        for rule in words {
            args.push(if rule.ends_with("_PASSWORD") {
                format!(">secret-{name}")
            } else {
                rule.to_owned()
            });
        }
    }
    args
}

/// What the server on `port` refused, from `redis-cli ACL LOG`: (user, command or key) pairs.
fn acl_refusals(port: u16) -> Vec<(String, String)> {
    let o = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "ACL", "LOG"])
        .output()
        .expect("redis-cli runs");
    let log = String::from_utf8_lossy(&o.stdout).into_owned();
    let lines: Vec<&str> = log.lines().collect();
    let after = |field: &str| -> Vec<String> {
        lines
            .windows(2)
            .filter(|w| w[0] == field)
            .map(|w| w[1].to_owned())
            .collect()
    };
    after("username").into_iter().zip(after("object")).collect()
}

#[test]
fn the_documented_acl_users_are_enough_for_workers_producers_and_status() {
    let users = documented_acl_users();
    assert_eq!(
        users.iter().filter(|a| *a == "--user").count(),
        3,
        "docs/cluster.md gives the worker, producer and observer users: {users:?}"
    );
    let args: Vec<&str> = users.iter().map(String::as_str).collect();
    let mut redis = RedisServer::with_args(&args);
    let as_user = |name: &str| format!("redis://{name}:secret-{name}@127.0.0.1:{}", redis.port);
    let (worker_url, producer, observer) =
        (as_user("worker"), as_user("producer"), as_user("observer"));
    let dir = temp_dir();
    let worker_log = dir.path().join("worker.log");
    let _w = start(
        worker_command(&worker_url, "restricted", 2)
            .stderr(std::fs::File::create(&worker_log).unwrap()),
    );
    wait_workers(&redis.url(), 1);

    // The producer may not read the queue's state: run says it cannot tell, and runs the jobs.
    let o = run(&producer, &["-k", "echo", ":::", "a", "b"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "a\nb\n");
    let e = stderr(&o);
    assert!(
        e.contains("cannot tell whether a live worker serves queue"),
        "{e}"
    );
    assert!(!e.contains("no live worker serves"), "{e}");

    // Cancelling: the producer writes tombstones, the worker reads and deletes them.
    let pid_file = dir.path().join("sleep.pid");
    let line = format!(
        "if [ {{}} = fail ]; then while [ ! -s {p} ]; do sleep 0.05; done; exit 3; \
         else sleep 60 & echo $! > {p}; wait; fi",
        p = pid_file.display()
    );
    let o = run(
        &producer,
        &[
            "-j",
            "2",
            "--halt",
            "now,fail=1",
            &line,
            ":::",
            "sleep",
            "fail",
        ],
    );
    assert_code(&o, 3);
    wait_dead(
        read_pid(&pid_file),
        Duration::from_secs(10),
        "the cancelled job's sleep",
    );

    // A restart without persistence (the users come back with the server's arguments): the
    // producer finds its vanished tasks with the commands it is allowed.
    // Each job waits for the file `go`, written after the restart (see
    // run_finishes_every_job_after_a_broker_restart_without_persistence).
    let line = format!(
        "touch {d}/started.{{}}; while [ ! -e {d}/go ]; do sleep 0.05; done; echo {{}}",
        d = dir.path().display()
    );
    let mut refused = acl_refusals(redis.port);
    // Two slots: one job waits in the stream when the broker goes.
    let job = run_bg(&producer, &["-j", "3", "-k", &line, ":::", "1", "2", "3"]);
    wait_started(dir.path(), 2);
    wait_status(&redis.url(), "one job waiting", |s| {
        s["queue"]["waiting"] == 1
    });
    shutdown_nosave_and_restart(&mut redis);
    std::fs::write(dir.path().join("go"), "").expect("the go file is written");
    let o = job.output(Duration::from_secs(60));
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "1\n2\n3\n");
    assert!(
        stderr(&o).contains("vanished from the broker"),
        "{}",
        stderr(&o)
    );

    // The observer reads the status.
    let o = martelli()
        .args([
            "status",
            "--cluster",
            &observer,
            "--json",
            "--sample",
            "0.2",
        ])
        .output()
        .unwrap();
    assert_code(&o, 0);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(live_workers(&s).len(), 1, "{s:#}");

    // Nothing but the producer's XINFO was ever refused (the log starts again with the restart).
    assert!(
        refused
            .iter()
            .any(|(u, w)| u == "producer" && w.starts_with("xinfo|")),
        "{refused:?}"
    );
    refused.extend(acl_refusals(redis.port));
    for (user, what) in &refused {
        assert!(
            user == "producer" && what.starts_with("xinfo|"),
            "the broker refused {what} to {user}: {refused:?}"
        );
    }
    let worker_errors = std::fs::read_to_string(&worker_log).unwrap_or_default();
    assert!(!worker_errors.contains("NOPERM"), "{worker_errors}");
}

/// `martelli result ID` on `url`.
fn result(url: &str, id: &str, extra: &[&str]) -> Output {
    martelli()
        .args(["result", id, "--cluster", url])
        .args(extra)
        .output()
        .expect("martelli result runs")
}

#[test]
fn result_reads_a_jobs_record_by_id_and_countdown_delays_the_jobs() {
    let redis = RedisServer::start();
    let url = redis.url();
    let _worker = only_worker(&url, "w", 2);
    let started = Instant::now();
    let o = run(
        &url,
        &[
            "--result-ttl",
            "600",
            "--countdown",
            "1",
            "echo out-{}; echo err-{} >&2; exit {}",
            ":::",
            "0",
            "3",
        ],
    );
    // The second job exits 3: one job failed.
    assert_code(&o, 1);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let err = stderr(&o);
    let stem = err
        .split("job N is cluster task ")
        .nth(1)
        .and_then(|rest| rest.split("-N").next())
        .unwrap_or_else(|| panic!("run names its task ids: {err}"))
        .to_owned();

    let first = result(&url, &format!("{stem}-1"), &[]);
    assert_code(&first, 0);
    assert_eq!(stdout(&first), "out-0\n");
    assert!(stderr(&first).contains("err-0"), "{}", stderr(&first));
    let second = result(&url, &format!("{stem}-2"), &[]);
    assert_code(&second, 3);
    assert_eq!(stdout(&second), "out-3\n");

    let json = result(&url, &format!("{stem}-1"), &["--json"]);
    assert_code(&json, 0);
    let record: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(record["state"], "done");
    assert_eq!(record["task"], "martelli.shell");
    assert_eq!(record["status"], "ok");
    assert_eq!(record["attempts"], 1);

    let unknown = result(&url, "no-such-task", &[]);
    assert_code(&unknown, 4);
    assert!(
        stderr(&unknown).contains("no record"),
        "{}",
        stderr(&unknown)
    );
}
