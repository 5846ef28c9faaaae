//! Processes: children killed when dropped, and whether a process is dead (Linux `/proc`).

use std::io::Read;
use std::process::{Child, ExitStatus, Output};
use std::time::Duration;

pub use rustix::process::Signal;

/// True once process `pid` is gone or a zombie (dead, not yet reaped by whoever its parent is).
pub fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
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
