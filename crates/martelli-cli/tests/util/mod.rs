//! Helpers for the end-to-end tests of `martelli run`.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// The `martelli` binary under test.
pub fn martelli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_martelli"))
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

/// A process as `/proc` shows it.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    pub pgrp: u32,
    pub state: char,
    pub cmdline: String,
}

/// Every process that is alive (zombies excluded: they run nothing and some containers' init
/// never reaps them).
pub fn live_processes() -> Vec<Proc> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name, which is in parentheses and may hold spaces.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split(' ').collect();
        let (Some(state), Some(pgrp)) =
            (fields.first().and_then(|s| s.chars().next()), fields.get(2))
        else {
            continue;
        };
        let Ok(pgrp) = pgrp.parse() else { continue };
        if state == 'Z' || state == 'X' {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        out.push(Proc {
            pid,
            pgrp,
            state,
            cmdline,
        });
    }
    out
}

/// Live processes whose command line contains `marker`.
pub fn live_with(marker: &str) -> Vec<Proc> {
    live_processes()
        .into_iter()
        .filter(|p| p.cmdline.contains(marker))
        .collect()
}

/// Live `sleep` processes whose duration is `marker`.
pub fn live_sleeps(marker: &str) -> Vec<Proc> {
    let wanted = format!("sleep {marker}");
    live_processes()
        .into_iter()
        .filter(|p| p.cmdline.trim_end() == wanted)
        .collect()
}

/// Live processes in process group `pgrp`.
pub fn live_in_group(pgrp: u32) -> Vec<Proc> {
    live_processes()
        .into_iter()
        .filter(|p| p.pgrp == pgrp)
        .collect()
}

/// Polls `check` until it holds or `secs` pass: for the kernel's asynchronous clean-up after a
/// process dies (a killed process leaves `/proc` a moment later), which nothing can wait on.
pub fn eventually(secs: f64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A `sleep` duration unique to this test (`id`) and this test process, so that the test finds
/// its own processes among the machine's: `30.<id><pid>` seconds.
pub fn marker(id: u32) -> String {
    format!("30.{id}{}", std::process::id())
}
