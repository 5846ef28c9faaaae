//! End-to-end tests of `martelli run` job control: timeouts, retries, halting, many jobs, signals
//! sent to the runner, and no orphans after the runner is killed.

mod util;

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};

use martelli_testkit::poll::holds_within;
use martelli_testkit::proc::live_in_group;
use util::{assert_code, lines, live_sleeps, marker, martelli, run, stderr, stdout};

/// Sends `signal` to process `pid`.
fn signal(pid: u32, signal: Signal) {
    let pid = Pid::from_raw(pid as i32).expect("a child's pid is positive");
    kill_process(pid, signal).expect("the runner is alive to be signalled");
}

/// Starts `martelli run ARGS…` with piped stdout and stderr.
fn spawn_run(args: &[&str]) -> Child {
    martelli()
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads lines from `reader` until one contains `needle`; returns the lines read.
fn read_until(reader: &mut impl BufRead, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "end of output before {needle:?}; saw {seen:?}");
        let done = line.contains(needle);
        seen.push(line);
        if done {
            return seen;
        }
    }
}

#[test]
fn timeout_kills_the_whole_process_group_grandchildren_included() {
    let dir = tempfile::tempdir().unwrap();
    let pgfile = dir.path().join("pg");
    let log = dir.path().join("log");
    let m = marker(1);
    // The shell records its process group, then waits on a pipeline: `sleep` and `cat` are its
    // children, in its group.
    let cmd = format!("echo $$ > {}; sleep {m} | cat; : {{}}", pgfile.display());
    let o = run(&[
        "--timeout",
        "1",
        "--joblog",
        log.to_str().unwrap(),
        &cmd,
        ":::",
        "x",
    ]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
    let pgid: u32 = fs::read_to_string(&pgfile).unwrap().trim().parse().unwrap();
    assert!(
        live_in_group(pgid).is_empty(),
        "left in the job's group: {:?}",
        live_in_group(pgid)
    );
    assert!(
        live_sleeps(&m).is_empty(),
        "left running: {:?}",
        live_sleeps(&m)
    );
    let log = fs::read_to_string(&log).unwrap();
    let row: Vec<&str> = log.lines().nth(1).unwrap().split('\t').collect();
    assert_eq!(
        (row[6], row[7]),
        ("-1", "15"),
        "Exitval -1 and SIGTERM for a timeout: {row:?}"
    );
}

#[test]
fn timeout_escalates_to_sigkill_after_the_grace() {
    let m = marker(2);
    let cmd = format!("trap '' TERM; sleep {m}; : {{}}");
    let o = run(&["--timeout", "0.3", "--kill-grace", "0.3", &cmd, ":::", "x"]);
    assert_code(&o, 1);
    assert!(
        live_sleeps(&m).is_empty(),
        "left running: {:?}",
        live_sleeps(&m)
    );
}

#[test]
fn retries_run_a_failing_job_again_and_report_the_last_try() {
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    // Fails on the first try, succeeds on the second.
    let cmd = format!(
        "n=$(($(cat {c} 2>/dev/null || echo 0) + 1)); echo $n > {c}; echo try $n; [ $n -ge {{}} ]",
        c = count.display()
    );
    let o = run(&["--retries", "3", &cmd, ":::", "2"]);
    assert_code(&o, 0);
    assert_eq!(
        lines(&o),
        ["try 2"],
        "only the last try's output is printed"
    );
    assert_eq!(fs::read_to_string(&count).unwrap(), "2\n");
    // Never succeeds: three tries in all, one failed job.
    fs::remove_file(&count).unwrap();
    let o = run(&["--retries", "3", &cmd, ":::", "9"]);
    assert_code(&o, 1);
    assert_eq!(fs::read_to_string(&count).unwrap(), "3\n");
}

#[test]
fn halt_now_fail_kills_running_jobs_and_exits_with_the_failure() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let m = marker(3);
    let o = run(&[
        "-j2",
        "--halt",
        "now,fail=1",
        "--joblog",
        log.to_str().unwrap(),
        "sh -c {}",
        ":::",
        &format!("sleep {m}"),
        "sleep 0.3; exit 4",
        "echo never",
    ]);
    assert_code(&o, 4);
    assert!(live_sleeps(&m).is_empty());
    let log = fs::read_to_string(&log).unwrap();
    assert_eq!(
        log.lines().count(),
        3,
        "two jobs ran, the third never started:\n{log}"
    );
    assert!(!stdout(&o).contains("never"));
    let killed = log.lines().find(|l| l.contains(&m)).unwrap();
    assert!(
        killed.split('\t').nth(7) != Some("0"),
        "the sleeping job was killed by a signal: {killed}"
    );
}

#[test]
fn halt_soon_fail_lets_running_jobs_finish_but_starts_no_more() {
    let o = run(&[
        "-j2",
        "-k",
        "--halt",
        "soon,fail=1",
        "sh -c {}",
        ":::",
        "sleep 0.6; echo finished",
        "sleep 0.1; exit 3",
        "echo never",
    ]);
    assert_code(&o, 3);
    assert_eq!(lines(&o), ["finished"]);
}

#[test]
fn halt_on_success_and_on_a_percentage() {
    let o = run(&[
        "-j1",
        "--halt",
        "now,success=1",
        "echo {}; exit {}",
        ":::",
        "3",
        "0",
        "4",
    ]);
    assert_code(&o, 0);
    assert_eq!(lines(&o), ["3", "0"]);
    // As GNU parallel: 40% of the 5 jobs is 2 failures; the status is the percentage that failed.
    let o = run(&[
        "-j1",
        "--halt",
        "soon,fail=40%",
        "echo {}; exit {}",
        ":::",
        "0",
        "1",
        "2",
        "0",
        "0",
    ]);
    assert_code(&o, 40);
    assert_eq!(lines(&o), ["0", "1", "2"]);
    // 50% (2.5 failures) is never reached: every job runs, and the status is still the percentage.
    let o = run(&[
        "-j1",
        "--halt",
        "soon,fail=50%",
        "echo {}; exit {}",
        ":::",
        "0",
        "1",
        "2",
        "0",
        "0",
    ]);
    assert_code(&o, 40);
    assert_eq!(lines(&o), ["0", "1", "2", "0", "0"]);
}

#[test]
fn halt_prints_gnus_notes_and_exits_with_gnus_statuses() {
    // fail=2: the number of failed jobs; each failed job is named on stderr.
    let o = run(&[
        "-j1",
        "--halt",
        "soon,fail=2",
        "exit",
        ":::",
        "0",
        "3",
        "4",
        "0",
    ]);
    assert_code(&o, 2);
    let err = util::stderr(&o);
    assert_eq!(err.matches("This job failed:").count(), 2, "{err}");
    assert!(
        err.contains("exit 3\n") && err.contains("exit 4\n"),
        "{err}"
    );
    // fail=1: the status of the job that failed.
    let o = run(&["-j1", "--halt", "now,fail=1", "exit", ":::", "0", "7", "0"]);
    assert_code(&o, 7);
    // done=1: the status of the first job to finish, here a success.
    let o = run(&["-j1", "--halt", "soon,done=1", "echo", ":::", "a", "b"]);
    assert_code(&o, 0);
    assert_eq!(lines(&o), ["a"]);
    assert!(util::stderr(&o).contains("This job finished:"));
    // done=2 with no failure: GNU parallel exits with 101 (its min() skips the undefined count).
    let o = run(&["-j1", "--halt", "soon,done=2", "echo", ":::", "a", "b", "c"]);
    assert_code(&o, 101);
    assert_eq!(lines(&o), ["a", "b"]);
}

#[test]
fn ten_thousand_jobs() {
    let input: String = (1..=10_000).map(|i| format!("{i}\n")).collect();
    let o = util::run_stdin(&["-j8", "--no-shell", "echo"], input.as_bytes());
    assert_code(&o, 0);
    let mut got: Vec<u32> = lines(&o).iter().map(|l| l.parse().unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, (1..=10_000).collect::<Vec<_>>());
}

#[test]
fn first_ctrl_c_waits_for_running_jobs_and_starts_no_more() {
    let mut child = spawn_run(&[
        "-j2",
        "--line-buffer",
        "echo started {}; sleep 1; echo done {}",
        ":::",
        "1",
        "2",
        "3",
        "4",
    ]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = read_until(&mut out, "started");
    seen.extend(read_until(&mut out, "started"));
    signal(child.id(), Signal::INT);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    seen.extend(rest.lines().map(|l| format!("{l}\n")));
    let done: Vec<&String> = seen.iter().filter(|l| l.starts_with("done")).collect();
    assert_eq!(done.len(), 2, "both running jobs finished: {seen:?}");
    assert_eq!(
        seen.iter().filter(|l| l.starts_with("started")).count(),
        2,
        "no job started after Ctrl-C: {seen:?}"
    );
}

#[test]
fn second_ctrl_c_kills_every_jobs_process_group() {
    let m = marker(4);
    let cmd = format!("echo started {{}}; sleep {m} | cat");
    let mut child = spawn_run(&["-j2", "--line-buffer", &cmd, ":::", "1", "2", "3"]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut err = BufReader::new(child.stderr.take().unwrap());
    read_until(&mut out, "started");
    read_until(&mut out, "started");
    signal(child.id(), Signal::INT);
    // The runner says it is stopping: the first signal is handled before the second is sent.
    read_until(&mut err, "stopping");
    signal(child.id(), Signal::INT);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        holds_within(Duration::from_secs(5), || live_sleeps(&m).is_empty()),
        "left running: {:?}",
        live_sleeps(&m)
    );
}

#[test]
fn no_job_outlives_a_runner_killed_with_sigkill() {
    let m = marker(5);
    // `sleep` is the shell's child, so the parent-death signal of the shell alone would not reach it.
    let cmd = format!("echo started {{}}; sleep {m} | cat");
    let mut child = spawn_run(&["-j2", "--line-buffer", &cmd, ":::", "1", "2"]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    read_until(&mut out, "started");
    read_until(&mut out, "started");
    // `started` comes just before the shell forks the pipeline: wait for both sleeps to exist.
    assert!(
        holds_within(Duration::from_secs(5), || live_sleeps(&m).len() == 2),
        "both jobs run: {:?}",
        live_sleeps(&m)
    );
    signal(child.id(), Signal::KILL);
    child.wait().unwrap();
    assert!(
        holds_within(Duration::from_secs(5), || live_sleeps(&m).is_empty()),
        "orphans: {:?}",
        live_sleeps(&m)
    );
}

#[test]
fn timeout_percent_kills_the_jobs_slower_than_the_median_allows() {
    // GNU parallel's tutorial example, shortened: the median of the jobs that succeeded is about
    // 0.35 s, so the 30-second job is killed at about 0.7 s, once the first jobs have succeeded.
    let m = marker(7);
    let started = std::time::Instant::now();
    let o = run(&[
        "--timeout",
        "200%",
        "-j3",
        "sleep {}; echo {}",
        ":::",
        "0.3",
        "0.4",
        &m,
        "0.35",
    ]);
    assert_code(&o, 1);
    let mut got = lines(&o);
    got.sort();
    assert_eq!(got, ["0.3", "0.35", "0.4"]);
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(live_sleeps(&m).is_empty());
}

#[test]
fn termseq_sends_its_signals_in_turn_to_a_timed_out_job() {
    // GNU parallel's tutorial example (--termseq), with perl writing the signals it gets to a file
    // rather than to its buffered stdout. The shell running the function dies at the first SIGTERM;
    // the sequence goes on to perl.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("signals");
    let show = format!(
        "perl -e 'open(my $f, \">>\", \"{}\") or die; $f->autoflush(1); \
         for my $s (qw(INT TERM HUP)) {{ $SIG{{$s}} = sub {{ print $f \"Got $s\\n\" }} }} \
         while (1) {{ sleep 1 }}'",
        log.display()
    );
    for (termseq, expected) in [
        (None, "Got TERM\nGot TERM\nGot TERM\n"),
        (
            Some("TERM,200,TERM,100,TERM,50,KILL,25"),
            "Got TERM\nGot TERM\nGot TERM\n",
        ),
        (Some("INT,200,TERM,100,KILL,25"), "Got INT\nGot TERM\n"),
        (
            Some("sigint,300,15,300,HUP,200,9"),
            "Got INT\nGot TERM\nGot HUP\n",
        ),
    ] {
        let _ = fs::remove_file(&log);
        let mut args = vec!["-u", "--timeout", "0.5"];
        args.extend(termseq.iter().flat_map(|s| ["--termseq", *s]));
        args.extend([show.as_str(), ":::", "x"]);
        let o = run(&args);
        assert_code(&o, 1);
        assert_eq!(
            fs::read_to_string(&log).unwrap_or_default(),
            expected,
            "--termseq {termseq:?}"
        );
    }
    for (spec, message) in [
        ("TERM,soon", "'soon' is not a number of milliseconds"),
        ("NOPE,100", "'NOPE' is not a signal"),
        ("", "'' is not a signal"),
    ] {
        let o = run(&["--termseq", spec, "true", ":::", "x"]);
        assert_code(&o, 255);
        assert!(stderr(&o).contains(message), "{spec}: {}", stderr(&o));
    }
    let o = run(&[
        "--termseq",
        "TERM,100",
        "--kill-grace",
        "1",
        "true",
        ":::",
        "x",
    ]);
    assert_code(&o, 255);
}
