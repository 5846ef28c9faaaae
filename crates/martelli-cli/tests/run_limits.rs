//! End-to-end tests of `martelli run --load`, `--memfree` and `--noswap`: jobs wait for room on the
//! machine, and `--memfree` kills the youngest job when memory runs short.
//!
//! The machine's real figures cannot be steered from a test, so most tests point the runner at a
//! directory of their own holding the three files it reads (`MARTELLI_RUN_PROC`: `stat`, `meminfo`,
//! `vmstat`, in `/proc`'s format) and change them while the run waits. One test reads the real
//! `/proc`; GNU parallel's own examples of these options run in `gnu_examples`.

mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
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
    let mut got: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    got.sort();
    assert_eq!(got, ["ran a", "ran b"]);
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
    assert_code(&out, 0);
    let mut got: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    got.sort();
    assert_eq!(got, ["1 again", "2 again"], "stderr: {}", stderr(&out));
    let err = stderr(&out);
    let (two, one) = (
        err.find("killing job 2, the youngest"),
        err.find("killing job 1, the youngest"),
    );
    assert!(
        matches!((two, one), (Some(two), Some(one)) if two < one),
        "job 2, the youngest, killed first: {err}"
    );
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
        (
            &["--memfree", "1G", "--cluster", "redis://127.0.0.1:1"][..],
            "--load, --memfree and --noswap look at this machine",
        ),
    ] {
        let out = touch(args);
        assert_code(&out, 255);
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    // A machine without the figures (here: a directory without them) is told so.
    let empty = tempfile::tempdir().unwrap();
    for (option, file) in [
        ("--load", "stat"),
        ("--memfree", "meminfo"),
        ("--noswap", "vmstat"),
    ] {
        let mut cmd = martelli();
        cmd.arg("run").arg(option);
        if option != "--noswap" {
            cmd.arg("1");
        }
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
            stderr(&out).contains(&format!("{option} needs {}", expected.display())),
            "{option}: {}",
            stderr(&out)
        );
    }
    assert!(!work.path().join("ran.a").exists(), "a job ran");
}
