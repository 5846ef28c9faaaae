//! Helpers for the end-to-end tests of `martelli run`.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The `martelli` binary under test.
pub fn martelli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_martelli"))
}

/// Whether GNU parallel is installed (asked once per test binary): the differential tests run their
/// cases through it too where it is.
pub fn gnu_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| {
        Command::new("parallel")
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"GNU parallel"))
    })
}

/// Runs `martelli run ARGS…` with an empty stdin.
pub fn run(args: &[&str]) -> Output {
    martelli()
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the martelli binary runs")
}

/// Runs `martelli run ARGS…` with `input` on stdin.
pub fn run_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = martelli()
        .arg("run")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the martelli binary runs");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input)
        .expect("stdin accepts the input");
    child.wait_with_output().expect("martelli finishes")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn lines(o: &Output) -> Vec<String> {
    stdout(o).lines().map(str::to_owned).collect()
}

/// Asserts the exit code, showing stderr when it differs.
#[track_caller]
pub fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stderr: {}\nstdout: {}",
        stderr(o),
        stdout(o)
    );
}

/// Live `sleep` processes whose duration is `marker`.
pub fn live_sleeps(marker: &str) -> Vec<martelli_testkit::proc::Proc> {
    let wanted = format!("sleep {marker}");
    martelli_testkit::proc::live_processes()
        .into_iter()
        .filter(|p| p.cmdline.trim_end() == wanted)
        .collect()
}

/// A `sleep` duration unique to this test (`id`) and this test process, so that the test finds
/// its own processes among the machine's: `30.<id><pid>` seconds.
pub fn marker(id: u32) -> String {
    format!("30.{id}{}", std::process::id())
}
