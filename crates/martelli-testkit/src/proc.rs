//! Processes: children killed when dropped, whether a process is dead, and which processes live
//! (Linux `/proc`).

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

pub use rustix::process::Signal;

/// A live process as `/proc` shows it.
#[derive(Debug, Clone)]
pub struct Proc {
    /// Its process id.
    pub pid: u32,
    /// Its process group.
    pub pgrp: u32,
    /// Its state letter (`R`, `S`, `D`, `T`, …; never `Z` or `X`).
    pub state: char,
    /// Its command line, arguments separated by spaces.
    pub cmdline: String,
}

/// The state letter and the process group of process `pid`, from `/proc/PID/stat`; `None` once it
/// is gone.
fn stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces and `)`.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    Some((state, pgrp))
}

/// True once process `pid` is gone or a zombie (dead, not yet reaped by whoever its parent is).
pub fn is_dead(pid: u32) -> bool {
    stat(pid).is_none_or(|(state, _)| matches!(state, 'Z' | 'X'))
}

/// Every process that is alive, zombies excluded (they run nothing, and some containers' init
/// never reaps them).
pub fn live_processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let (state, pgrp) = stat(pid).filter(|(state, _)| !matches!(state, 'Z' | 'X'))?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            Some(Proc {
                pid,
                pgrp,
                state,
                cmdline,
            })
        })
        .collect()
}

/// The live processes of process group `pgrp`.
pub fn live_in_group(pgrp: u32) -> Vec<Proc> {
    live_processes()
        .into_iter()
        .filter(|p| p.pgrp == pgrp)
        .collect()
}

/// The live processes whose command line contains `marker`.
pub fn live_with(marker: &str) -> Vec<Proc> {
    live_processes()
        .into_iter()
        .filter(|p| p.cmdline.contains(marker))
        .collect()
}

/// Waits up to `limit` for process `pid` to die (the kernel delivers a kill asynchronously); true
/// if it did.
pub fn dies_within(pid: u32, limit: Duration) -> bool {
    crate::poll::holds_within(limit, || is_dead(pid))
}

/// Waits until process `pid` is dead; panics, naming `what`, if it still runs after `limit` (the
/// kernel delivers a kill asynchronously).
#[track_caller]
pub fn wait_dead(pid: u32, limit: Duration, what: &str) {
    crate::poll::until(&format!("{what} (pid {pid}) to die"), limit, || {
        is_dead(pid)
    });
}

/// A child process killed (and reaped) when dropped, so that a failing test leaves nothing
/// running.
#[derive(Debug)]
pub struct KillOnDrop {
    child: Child,
}

impl KillOnDrop {
    /// Takes charge of `child`.
    pub fn new(child: Child) -> KillOnDrop {
        KillOnDrop { child }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child itself, e.g. to take its pipes.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: Signal) {
        let pid =
            rustix::process::Pid::from_raw(self.pid() as i32).expect("a child's pid is positive");
        rustix::process::kill_process(pid, signal).expect("our unreaped child can be signalled");
    }

    /// Waits for the child to exit; panics if it has not within `limit`.
    #[track_caller]
    pub fn wait_for(&mut self, limit: Duration) -> ExitStatus {
        let mut status = None;
        let pid = self.pid();
        crate::poll::until(&format!("process {pid} to exit"), limit, || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        status.expect("the child exited")
    }

    /// Waits for the child (at most `limit`) and collects what it printed on the pipes it has.
    #[track_caller]
    pub fn output(mut self, limit: Duration) -> Output {
        let status = self.wait_for(limit);
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let Some(mut s) = self.child.stdout.take() {
            let _ = s.read_to_end(&mut stdout);
        }
        if let Some(mut s) = self.child.stderr.take() {
            let _ = s.read_to_end(&mut stderr);
        }
        Output {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This test binary started again with only the ignored test `entry` selected and `var=value` in
/// its environment: the way a test runs a helper (a worker, a scheduler) in a process of its own,
/// to kill or freeze it. The entry test reads `var` and returns at once when it is unset, so an
/// ordinary `--ignored` run passes over it. Standard output is discarded; standard error is the
/// test's (or discarded, with `quiet`).
///
/// # Panics
/// When the test binary cannot be found or started: for a test, a failure.
pub fn child_test(entry: &str, var: &str, value: &str, quiet: bool) -> Child {
    let exe = std::env::current_exe().expect("the test binary has a path");
    Command::new(exe)
        .args([
            entry,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(var, value)
        .stdout(Stdio::null())
        .stderr(if quiet {
            Stdio::null()
        } else {
            Stdio::inherit()
        })
        .spawn()
        .unwrap_or_else(|e| panic!("the test binary starts again as `{entry}`: {e}"))
}
