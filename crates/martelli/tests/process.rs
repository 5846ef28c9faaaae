//! Tests of `martelli::process` with real processes and signals (Linux).

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use martelli::process::{
    Guardian, Resource, Signal, Spawn, Stream, Supervision, group_alive, kill_tree,
};
use martelli_testkit::poll::holds_within;
use martelli_testkit::proc::live_in_group;

/// How long the kernel may take to finish tearing down killed processes (nothing to block on for
/// processes that are not our children).
const TEARDOWN: Duration = Duration::from_secs(5);

#[test]
fn child_leads_its_own_group_and_output_is_captured_per_stream() {
    let mut child = Spawn::shell("echo out; echo err >&2; exit 3")
        .capture_output(true)
        .spawn()
        .unwrap();
    assert_eq!(child.pgid(), child.pid());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let done = child
        .communicate(&Supervision::default(), |stream, bytes| match stream {
            Stream::Stdout => out.extend_from_slice(bytes),
            Stream::Stderr => err.extend_from_slice(bytes),
        })
        .unwrap();
    assert_eq!(done.status.code(), Some(3));
    assert!(!done.timed_out);
    assert_eq!(
        (out.as_slice(), err.as_slice()),
        (&b"out\n"[..], &b"err\n"[..])
    );
}

#[test]
fn large_output_on_both_streams_does_not_deadlock() {
    let line = "head -c 300000 /dev/zero; head -c 200000 /dev/zero >&2; head -c 300000 /dev/zero";
    let mut child = Spawn::shell(line).capture_output(true).spawn().unwrap();
    let mut sizes = [0usize; 2];
    let done = child
        .communicate(&Supervision::default(), |stream, bytes| {
            sizes[(stream == Stream::Stderr) as usize] += bytes.len()
        })
        .unwrap();
    assert!(done.status.success());
    assert_eq!(sizes, [600_000, 200_000]);
}

#[test]
fn timeout_kills_the_group_with_its_grandchildren() {
    let mut child = Spawn::shell("sleep 30 | cat; sleep 30")
        .capture_output(true)
        .spawn()
        .unwrap();
    let pgid = child.pgid();
    let limits = Supervision::default()
        .timeout(Some(Duration::from_millis(200)))
        .grace(Duration::from_millis(300));
    let done = child.communicate(&limits, |_, _| {}).unwrap();
    assert!(done.timed_out);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(done.status.signal(), Some(Signal::TERM.as_raw()));
    assert!(
        holds_within(TEARDOWN, || live_in_group(pgid).is_empty()),
        "left: {:?}",
        live_in_group(pgid)
    );
}

#[test]
fn a_kill_sequence_sends_its_signals_in_turn_and_goes_on_after_the_leader_dies() {
    // The leader (a shell) dies at the first SIGTERM; its child (perl, writing every signal it
    // gets to a file) gets the rest of the sequence, as with GNU parallel's --termseq. The HUP can
    // only come from the sequence: a leftover's clean-up sends TERM and KILL.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("signals");
    let script = format!(
        "perl -e 'open(my $f, \">>\", \"{}\") or die; $f->autoflush(1); \
         for my $s (qw(INT TERM HUP)) {{ $SIG{{$s}} = sub {{ print $f \"$s\\n\" }} }} \
         print \"ready\\n\"; $|=1; while (1) {{ sleep 1 }}'",
        log.display()
    );
    let mut child = Spawn::shell(&script).capture_output(true).spawn().unwrap();
    let pgid = child.pgid();
    let ms = Duration::from_millis;
    let limits = Supervision::default()
        .timeout(Some(ms(300)))
        .kill_sequence([
            (Signal::INT, ms(200)),
            (Signal::TERM, ms(200)),
            (Signal::HUP, ms(200)),
            (Signal::KILL, ms(25)),
        ]);
    let started = Instant::now();
    let done = child.communicate(&limits, |_, _| {}).unwrap();
    assert!(done.timed_out);
    use std::os::unix::process::ExitStatusExt;
    // The shell ignores SIGINT while it waits for perl, and dies of the SIGTERM.
    assert_eq!(done.status.signal(), Some(Signal::TERM.as_raw()));
    assert!(
        holds_within(TEARDOWN, || live_in_group(pgid).is_empty()),
        "left: {:?}",
        live_in_group(pgid)
    );
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(seen, "INT\nTERM\nHUP\n");
    // 300 ms, then 200 + 200 ms of steps before the HUP.
    assert!(started.elapsed() >= ms(700), "{:?}", started.elapsed());
}

#[test]
fn sigterm_is_escalated_to_sigkill_after_the_grace() {
    let mut child = Spawn::shell("trap '' TERM; echo ready; sleep 30 & wait; wait")
        .capture_output(true)
        .spawn()
        .unwrap();
    let pgid = child.pgid();
    // The shell ignores SIGTERM from here on.
    let mut ready = String::new();
    BufReader::new(child.take_stdout().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready, "ready\n");
    let started = Instant::now();
    let status = child.kill_tree(Duration::from_millis(200)).unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(Signal::KILL.as_raw()));
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(holds_within(TEARDOWN, || live_in_group(pgid).is_empty()));
}

#[test]
fn leftovers_are_killed_when_the_child_exits() {
    // The shell backgrounds a sleep (holding the pipes) and exits at once.
    let mut child = Spawn::shell("sleep 30 & echo started")
        .capture_output(true)
        .spawn()
        .unwrap();
    let pgid = child.pgid();
    let mut out = Vec::new();
    let done = child
        .communicate(&Supervision::default(), |_, b| out.extend_from_slice(b))
        .unwrap();
    assert!(done.status.success());
    assert!(done.killed_leftovers);
    assert_eq!(out, b"started\n");
    assert!(holds_within(TEARDOWN, || !group_alive(pgid)
        || live_in_group(pgid).is_empty()));
}

#[test]
fn free_kill_tree_kills_an_orphaned_group() {
    // The shell exits; its background sleep stays in the group with no leader to wait on.
    let mut child = Spawn::shell("sleep 30 & echo $!")
        .capture_output(true)
        .spawn()
        .unwrap();
    let pgid = child.pgid();
    let mut out = Vec::new();
    let done = child
        .communicate(&Supervision::default().kill_leftovers(false), |_, b| {
            out.extend_from_slice(b)
        })
        .unwrap();
    assert!(done.status.success() && !done.killed_leftovers);
    assert_eq!(live_in_group(pgid).len(), 1, "the sleep is still there");
    kill_tree(pgid, Duration::from_millis(500)).unwrap();
    assert!(holds_within(TEARDOWN, || live_in_group(pgid).is_empty()));
}

#[test]
fn nice_and_rlimits_apply_to_the_child() {
    let own: i32 = String::from_utf8(Command::new("nice").output().unwrap().stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut child = Spawn::shell("nice; ulimit -n")
        .nice(3)
        .rlimit(Resource::Nofile, Some(123), Some(123))
        .capture_output(true)
        .spawn()
        .unwrap();
    let mut out = Vec::new();
    child
        .communicate(&Supervision::default(), |_, b| out.extend_from_slice(b))
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [((own + 3).min(19)).to_string().as_str(), "123"]
    );
}

#[test]
fn a_missing_program_is_a_spawn_error() {
    let err = Spawn::new("/nonexistent/martelli-test-program")
        .spawn()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}

/// In a re-run of this test binary (`MARTELLI_GUARDIAN_OWNER` set): start a guardian, spawn a
/// group whose shell has a child, print its pgid, and wait to be killed.
#[test]
fn guardian_owner_helper() {
    if std::env::var_os("MARTELLI_GUARDIAN_OWNER").is_none() {
        return; // only meaningful as the helper process of the test below
    }
    let guardian = Guardian::start(4, Duration::from_millis(200)).unwrap();
    let child = Spawn::shell("sleep 30 | cat")
        .parent_death_signal(None)
        .spawn()
        .unwrap();
    guardian.watch(child.pgid()).unwrap();
    // On a line of its own: the test harness has printed the test's name without a newline.
    println!("\npgid={}", child.pgid());
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn guardian_kills_watched_groups_when_its_owner_is_killed() {
    let mut owner = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "guardian_owner_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MARTELLI_GUARDIAN_OWNER", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(owner.stdout.take().unwrap());
    let pgid: u32 = loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the helper ended before printing its group"
        );
        if let Some(Ok(pgid)) = line.trim().strip_prefix("pgid=").map(str::parse) {
            break pgid;
        }
    };
    assert!(
        holds_within(TEARDOWN, || live_in_group(pgid).len() >= 3),
        "sh, sleep and cat run: {:?}",
        live_in_group(pgid)
    );
    owner.kill().unwrap(); // SIGKILL: the owner cannot clean up itself
    owner.wait().unwrap();
    assert!(
        holds_within(TEARDOWN, || live_in_group(pgid).is_empty()),
        "left: {:?}",
        live_in_group(pgid)
    );
}
