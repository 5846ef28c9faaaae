//! End-to-end tests of `martelli run --load`, `--memfree`, `--memsuspend`, `--noswap` and
//! `--limit`: jobs wait for room on the machine, `--memfree` and `--limit` kill the youngest job,
//! `--memsuspend` stops the youngest jobs while memory is short.
//!
//! The machine's real figures cannot be steered from a test, so most tests point the runner at a
//! directory of their own holding the files it reads (`MARTELLI_RUN_PROC`: `stat`, `meminfo`,
//! `vmstat`, `diskstats`, in `/proc`'s format) and change them while the run waits. One test reads the real
//! `/proc`; GNU parallel's own examples of these options run in `gnu_examples`.

mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use martelli_testkit::poll::{holds_within, until};
use rustix::process::{Pid, Signal, kill_process};
use util::{assert_code, live_sleeps, marker, martelli, run, stderr, stdout};

/// A stand-in for `/proc` holding the three files the runner reads.
struct FakeProc {
    dir: tempfile::TempDir,
}

impl FakeProc {
    /// Load 0, 8 GiB free, no swapping.
    fn new() -> FakeProc {
        let fake = FakeProc {
            dir: tempfile::tempdir().expect("a temporary directory"),
        };
        fake.set_load(0);
        fake.set_free_kib(8 << 20);
        fake.set_swapped(0, 0);
        fake.set_disk_busy_ms(0);
        fake
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces a file whole (written beside it, then renamed), so that no read sees half of it.
    fn write(&self, name: &str, text: &str) {
        let tmp = self.path().join(format!(".{name}.new"));
        fs::write(&tmp, text).expect("the fake file is written");
        fs::rename(&tmp, self.path().join(name)).expect("the fake file is renamed");
    }

    /// A load of `load`: that many threads running besides the reader.
    fn set_load(&self, load: u32) {
        self.write(
            "stat",
            &format!(
                "cpu  100 0 100 1000 0 0 0 0 0 0\nctxt 1000\nprocesses 99\nprocs_running {}\nprocs_blocked 0\n",
                load + 1
            ),
        );
    }

    fn set_free_kib(&self, kib: u64) {
        self.write(
            "meminfo",
            &format!(
                "MemTotal: 16000000 kB\nMemFree: {kib} kB\nMemAvailable: {kib} kB\nBuffers: 0 kB\nCached: 0 kB\nSwapCached: 0 kB\n"
            ),
        );
    }

    fn set_swapped(&self, pages_in: u64, pages_out: u64) {
        self.write(
            "vmstat",
            &format!("nr_free_pages 1000\npswpin {pages_in}\npswpout {pages_out}\npgfault 5\n"),
        );
    }
}

impl FakeProc {
    /// One disk that has been busy `ms` milliseconds since boot.
    fn set_disk_busy_ms(&self, ms: u64) {
        self.write(
            "diskstats",
            &format!("   8       0 sda 100 0 800 50 100 0 800 50 0 {ms} 100 0 0 0 0 0 0\n"),
        );
    }
}

/// Replaces `path` whole, so that no reader sees half of it.
fn write_whole(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    fs::write(&tmp, text).expect("the file is written");
    fs::rename(&tmp, path).expect("the file is renamed");
}

/// Starts `martelli run ARGS…` reading `fake` instead of `/proc`, in `cwd`.
fn spawn_run(fake: &FakeProc, cwd: &Path, args: &[&str]) -> Child {
    martelli()
        .arg("run")
        .args(args)
        .env("MARTELLI_RUN_PROC", fake.path())
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the martelli binary runs")
}

/// True if `child` is still running.
fn running(child: &mut Child) -> bool {
    child
        .try_wait()
        .expect("the runner can be waited for")
        .is_none()
}

/// Waits for `child` (at most a minute) and returns its output.
fn finish(child: Child) -> std::process::Output {
    martelli_testkit::poll::within(Duration::from_secs(60), move || {
        child.wait_with_output().expect("the runner finishes")
    })
}

/// The run's stdout, line by line, sorted.
fn sorted_lines(out: &Output) -> Vec<String> {
    let mut lines: Vec<String> = stdout(out).lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// Asserts that jobs 1 and 2 were killed for `why`, job 2 (the youngest) first, and that both
/// then ran again and succeeded.
#[track_caller]
fn assert_killed_youngest_first_and_retried(out: &Output, why: &str) {
    assert_code(out, 0);
    assert_eq!(
        sorted_lines(out),
        ["1 again", "2 again"],
        "stderr: {}",
        stderr(out)
    );
    let err = stderr(out);
    // The line that says job `job` was killed, and names `why`.
    let killed = |job: u32| {
        let says = format!("killing job {job}, the youngest:");
        err.lines()
            .position(|l| l.contains(&says) && l.contains(why))
    };
    assert!(
        matches!((killed(2), killed(1)), (Some(two), Some(one)) if two < one),
        "job 2, the youngest, killed first: {err}"
    );
}

#[test]
fn load_holds_jobs_until_it_drops_below_the_limit() {
    let fake = FakeProc::new();
    let work = tempfile::tempdir().unwrap();
    // Load 2 against --load 2: not below, so nothing starts (GNU parallel starts while load < max).
    fake.set_load(2);
    let mut child = spawn_run(
        &fake,
        work.path(),
        &["--load", "2", "echo ran {}", ":::", "a"],
    );
    assert!(
        !holds_within(Duration::from_millis(800), || !running(&mut child)),
        "the run ended although the load never dropped"
    );
    fake.set_load(1);
    let out = finish(child);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "ran a\n");
}

#[test]
fn load_limits_take_the_syntax_of_jobs() {
    let fake = FakeProc::new();
    let work = tempfile::tempdir().unwrap();
    fake.set_load(3);
    // Below the limit, every form starts at once: 4 and 3.5, +2 cores, 100000% of the cores.
    for spec in ["4", "3.5", "+2", "100000%"] {
        let started = Instant::now();
        let out = finish(spawn_run(
            &fake,
            work.path(),
            &["--load", spec, "echo {}", ":::", spec],
        ));
        assert_code(&out, 0);
        assert_eq!(stdout(&out), format!("{spec}\n"));
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "--load {spec} waited {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn memfree_holds_jobs_while_memory_is_short() {
    let fake = FakeProc::new();
    let work = tempfile::tempdir().unwrap();
    fake.set_free_kib(512 * 1024);
    let mut child = spawn_run(
        &fake,
        work.path(),
        &["--memfree", "1G", "echo ran {}", ":::", "a", "b"],
    );
    assert!(
        !holds_within(Duration::from_millis(800), || !running(&mut child)),
        "jobs ran with 512 MiB free under --memfree 1G"
    );
    fake.set_free_kib(2 << 20);
    let out = finish(child);
    assert_code(&out, 0);
    assert_eq!(sorted_lines(&out), ["ran a", "ran b"]);
}

#[test]
fn memfree_kills_the_youngest_jobs_first_and_retries_them_when_there_is_room() {
    let fake = FakeProc::new();
    let work = tempfile::tempdir().unwrap();
    let m = marker(1);
    // Each job sleeps on its first attempt and prints on its second.
    let script =
        format!("if [ -e {{}}.again ]; then echo {{}} again; else touch {{}}.again; sleep {m}; fi");
    let started = Instant::now();
    let child = spawn_run(
        &fake,
        work.path(),
        &[
            "-j2",
            "--memfree",
            "1G",
            "--retries",
            "2",
            &script,
            ":::",
            "1",
            "2",
        ],
    );
    until(
        "both first attempts to start",
        Duration::from_secs(30),
        || live_sleeps(&m).len() == 2,
    );
    // Under half of --memfree, and this fake memory is not freed by a kill: the youngest job is
    // killed, then the next youngest.
    fake.set_free_kib(256 * 1024);
    until(
        "both first attempts to be killed",
        Duration::from_secs(30),
        || live_sleeps(&m).is_empty(),
    );
    // Over half but under --memfree: no more kills, and the retries wait for room.
    fake.set_free_kib(768 * 1024);
    thread::sleep(Duration::from_millis(800));
    let mut child = child;
    assert!(
        running(&mut child),
        "the retries ran with less than --memfree free"
    );
    fake.set_free_kib(4 << 20);
    let out = finish(child);
    assert_killed_youngest_first_and_retried(&out, "--memfree");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the sleeping attempts were not killed: {:?}",
        started.elapsed()
    );
}

#[test]
fn memfree_kill_without_retries_fails_the_job() {
    let fake = FakeProc::new();
    let work = tempfile::tempdir().unwrap();
    let child = spawn_run(
        &fake,
        work.path(),
        &["--memfree", "1G", "touch started.{}; sleep 60", ":::", "x"],
    );
    until("the job to start", Duration::from_secs(30), || {
        work.path().join("started.x").exists()
    });
    fake.set_free_kib(100 * 1024);
    let out = finish(child);
    // One job failed (killed): exit status 1, as GNU parallel counts a killed job.
    assert_code(&out, 1);
    assert!(stderr(&out).contains("killing job 1"), "{}", stderr(&out));
}

#[test]
fn noswap_waits_for_a_quiet_second_and_holds_jobs_while_pages_go_both_ways() {
    let fake = Arc::new(FakeProc::new());
    let work = tempfile::tempdir().unwrap();
    // Swapping: both counters grow every 100 ms.
    let swapping = Arc::new(AtomicBool::new(true));
    let pump = {
        let (fake, swapping) = (Arc::clone(&fake), Arc::clone(&swapping));
        thread::spawn(move || {
            let mut pages = 0;
            while swapping.load(Ordering::SeqCst) {
                pages += 10;
                fake.set_swapped(pages, pages);
                thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let mut child = spawn_run(&fake, work.path(), &["--noswap", "echo ran {}", ":::", "a"]);
    assert!(
        !holds_within(Duration::from_millis(2500), || !running(&mut child)),
        "a job ran while the machine swapped"
    );
    swapping.store(false, Ordering::SeqCst);
    pump.join().unwrap();
    let out = finish(child);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "ran a\n");

    // Pages going only out is not swapping (GNU parallel: swap-in × swap-out); the first answer
    // takes a second.
    let swapping_out = Arc::new(AtomicBool::new(true));
    let pump = {
        let (fake, swapping_out) = (Arc::clone(&fake), Arc::clone(&swapping_out));
        thread::spawn(move || {
            let mut pages = 1000;
            while swapping_out.load(Ordering::SeqCst) {
                pages += 10;
                fake.set_swapped(5, pages);
                thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let started = Instant::now();
    let out = finish(spawn_run(
        &fake,
        work.path(),
        &["--noswap", "echo {}", ":::", "b"],
    ));
    swapping_out.store(false, Ordering::SeqCst);
    pump.join().unwrap();
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "b\n");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the first job started before a second of swapping was measured"
    );
}

#[test]
fn ctrl_c_while_jobs_wait_for_room_ends_the_run_without_them() {
    let fake = FakeProc::new();
    let work = tempfile::tempdir().unwrap();
    fake.set_load(50);
    let mut child = spawn_run(
        &fake,
        work.path(),
        &["--load", "1", "touch ran.{}", ":::", "a", "b"],
    );
    thread::sleep(Duration::from_millis(500));
    assert!(running(&mut child));
    let pid = Pid::from_raw(child.id() as i32).expect("a child's pid is positive");
    kill_process(pid, Signal::INT).expect("the runner is alive to be signalled");
    let out = finish(child);
    assert_code(&out, 130);
    assert!(!work.path().join("ran.a").exists() && !work.path().join("ran.b").exists());
}

#[test]
fn the_real_figures_of_this_machine_are_read() {
    // Any machine running the tests is below a load of 10,000 and has a kilobyte free; a machine
    // that swaps both ways for the whole minute fails this test, as it should under --noswap.
    let out = run(&[
        "--load",
        "10000",
        "--memfree",
        "1k",
        "--noswap",
        "echo {}",
        ":::",
        "ok",
    ]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "ok\n");
}

#[test]
fn bad_limits_are_refused_before_any_job_starts() {
    let work = tempfile::tempdir().unwrap();
    let touch = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["touch ran.{}", ":::", "a"]);
        martelli()
            .arg("run")
            .args(&all)
            .current_dir(work.path())
            .stdin(Stdio::null())
            .output()
            .expect("the martelli binary runs")
    };
    for (args, message) in [
        (&["--load", "lots"][..], "invalid --load 'lots'"),
        (&["--load", "2.5%"][..], "invalid --load '2.5%'"),
        (&["--memfree", "5X"][..], "invalid --memfree '5X'"),
        (&["--memsuspend", "5X"][..], "invalid --memsuspend '5X'"),
        (&["--limit", " "][..], "invalid --limit ' '"),
        (&["--limit", "io lots"][..], "invalid --limit 'io lots'"),
        (
            &["--memfree", "1G", "--cluster", "redis://127.0.0.1:1"][..],
            "--load, --memfree, --memsuspend, --noswap and --limit look at this machine",
        ),
    ] {
        let out = touch(args);
        assert_code(&out, 255);
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    // A machine without the figures (here: a directory without them) is told so.
    let empty = tempfile::tempdir().unwrap();
    for (option, value, file) in [
        ("--load", Some("1"), "stat"),
        ("--memfree", Some("1"), "meminfo"),
        ("--memsuspend", Some("1"), "meminfo"),
        ("--noswap", None, "vmstat"),
        ("--limit", Some("io 50"), "diskstats"),
    ] {
        let mut cmd = martelli();
        cmd.arg("run").arg(option).args(value);
        let out = cmd
            .args(["touch ran.{}", ":::", "a"])
            .env("MARTELLI_RUN_PROC", empty.path())
            .current_dir(work.path())
            .stdin(Stdio::null())
            .output()
            .expect("the martelli binary runs");
        assert_code(&out, 255);
        let expected: PathBuf = empty.path().join(file);
        assert!(
            stderr(&out).contains(&format!("needs {}", expected.display())),
            "{option}: {}",
            stderr(&out)
        );
    }
    assert!(!work.path().join("ran.a").exists(), "a job ran");
}

#[test]
fn limit_command_decides_each_start_and_2_kills_the_youngest() {
    let fake = FakeProc::new();
    let work = tempfile::tempdir().unwrap();
    let code = work.path().join("code");
    let set = |status: u32| write_whole(&code, &status.to_string());
    let m = marker(2);
    let script =
        format!("if [ -e {{}}.again ]; then echo {{}} again; else touch {{}}.again; sleep {m}; fi");
    // The check runs in the shell, in the run's directory, with SSHLOGIN=":" as in GNU parallel.
    let check = "[ \"$SSHLOGIN\" = : ] && exit $(cat code)";
    set(1);
    let mut child = spawn_run(
        &fake,
        work.path(),
        &[
            "-j2",
            "--retries",
            "2",
            "--limit",
            check,
            &script,
            ":::",
            "1",
            "2",
        ],
    );
    assert!(
        !holds_within(Duration::from_millis(800), || !live_sleeps(&m).is_empty()),
        "a job started while the check said 1"
    );
    set(0);
    until("both jobs to start", Duration::from_secs(30), || {
        live_sleeps(&m).len() == 2
    });
    // 2: the youngest (job 2) is killed; its retry waits while the check says 1.
    set(2);
    until("job 2 to be killed", Duration::from_secs(30), || {
        live_sleeps(&m).len() == 1
    });
    set(1);
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        live_sleeps(&m).len(),
        1,
        "job 1 runs on while the check says 1"
    );
    assert!(running(&mut child));
    set(2);
    until("job 1 to be killed", Duration::from_secs(30), || {
        live_sleeps(&m).is_empty()
    });
    set(0);
    let out = finish(child);
    assert_killed_youngest_first_and_retried(&out, "--limit");
}

#[test]
fn limit_built_ins_read_memory_and_disk_activity() {
    let fake = Arc::new(FakeProc::new());
    let work = tempfile::tempdir().unwrap();
    // mem 1G: held with 512 MiB free.
    fake.set_free_kib(512 * 1024);
    let mut child = spawn_run(
        &fake,
        work.path(),
        &["--limit", "mem 1G", "echo {}", ":::", "m"],
    );
    assert!(!holds_within(Duration::from_millis(800), || !running(
        &mut child
    )));
    fake.set_free_kib(2 << 20);
    let out = finish(child);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "m\n");

    // io 50: held while the disk is 90 % busy (900 ms of every second).
    let busy = Arc::new(AtomicBool::new(true));
    let pump = {
        let (fake, busy) = (Arc::clone(&fake), Arc::clone(&busy));
        thread::spawn(move || {
            let started = Instant::now();
            while busy.load(Ordering::SeqCst) {
                let ms = started.elapsed().as_millis() as u64 * 9 / 10;
                fake.set_disk_busy_ms(1_000_000 + ms);
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let mut child = spawn_run(
        &fake,
        work.path(),
        &["--limit", "io 50", "echo {}", ":::", "io"],
    );
    assert!(
        !holds_within(Duration::from_millis(2500), || !running(&mut child)),
        "a job started while the disk was 90 % busy"
    );
    busy.store(false, Ordering::SeqCst);
    pump.join().unwrap();
    let out = finish(child);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "io\n");
}

/// The state letters of jobs 1, 2 and 3, each sleeping `MARKER` followed by its number (`-` for a
/// job not running).
fn sleep_states(m: &str) -> Vec<char> {
    (1..=3)
        .map(|n| {
            live_sleeps(&format!("{m}{n}"))
                .first()
                .map_or('-', |p| p.state)
        })
        .collect()
}

#[test]
fn memsuspend_stops_the_youngest_jobs_and_continues_them_when_memory_is_back() {
    let fake = FakeProc::new();
    let work = tempfile::tempdir().unwrap();
    let m = marker(3);
    let command = format!("sleep {m}{{}}; echo {{}}");
    let child = spawn_run(
        &fake,
        work.path(),
        &["-j3", "--memsuspend", "1G", &command, ":::", "1", "2", "3"],
    );
    until("three jobs to start", Duration::from_secs(30), || {
        sleep_states(&m) == ['S', 'S', 'S']
    });
    // 512 MiB free, under --memsuspend: one job runs (the oldest), two are stopped.
    fake.set_free_kib(512 * 1024);
    until(
        "jobs 2 and 3 to be stopped",
        Duration::from_secs(30),
        || sleep_states(&m) == ['S', 'T', 'T'],
    );
    // 1.2 GiB: 1 / (2 - 1.2) = 1.25, so two run.
    fake.set_free_kib(1_258_291);
    until("job 2 to continue", Duration::from_secs(30), || {
        sleep_states(&m) == ['S', 'S', 'T']
    });
    // Twice --memsuspend free: all continue.
    fake.set_free_kib(4 << 20);
    until("every job to continue", Duration::from_secs(30), || {
        sleep_states(&m) == ['S', 'S', 'S']
    });
    // Stopped again, then killed by a second Ctrl-C: a stopped job dies too.
    fake.set_free_kib(512 * 1024);
    until(
        "jobs 2 and 3 to be stopped again",
        Duration::from_secs(30),
        || sleep_states(&m) == ['S', 'T', 'T'],
    );
    let pid = Pid::from_raw(child.id() as i32).expect("a child's pid is positive");
    kill_process(pid, Signal::INT).expect("the runner is alive");
    thread::sleep(Duration::from_millis(300));
    kill_process(pid, Signal::INT).expect("the runner is alive");
    let out = finish(child);
    assert_code(&out, 130);
    assert_eq!(
        sleep_states(&m),
        ['-', '-', '-'],
        "a stopped job outlived the run"
    );
    let err = stderr(&out);
    assert!(
        err.contains("--memsuspend") && err.contains("memory is back"),
        "{err}"
    );
}
