//! A guardian process that kills registered process groups when its owner dies, even by SIGKILL.
//!
//! The parent-death signal reaches only a supervisor's direct children; a shell's own children
//! (`sh -c 'a | b'`) would outlive a supervisor killed with SIGKILL. The guardian closes that gap.
//! It is a forked copy of the supervisor that leaves the supervisor's process group (so a
//! terminal's Ctrl-C does not reach it) and waits on a pipe. The supervisor writes "watch" and
//! "forget" records for process groups into the pipe; when the pipe reports end of file (the
//! supervisor exited or was killed, and the kernel closed its end), the guardian sends `SIGTERM`
//! to every group still watched, waits the grace period, sends `SIGKILL`, and exits.
//!
//! Rules for the forked guardian, which may be forked from a multi-threaded process:
//!
//! 1. it never allocates: its table of groups is allocated before `fork`, with a fixed capacity;
//! 2. it makes only system calls (through rustix) and ends with `_exit`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitOptions, kill_process_group, waitpid};

const WATCH: u32 = 1;
const FORGET: u32 = 2;

/// Kills the process groups it watches when this process dies. See the [module docs](self).
///
/// ```
/// use martelli::process::{Guardian, Spawn};
///
/// let guardian = Guardian::start(4, std::time::Duration::from_millis(200))?;
/// let mut child = Spawn::shell("true").spawn()?;
/// guardian.watch(child.pgid())?;
/// child.wait()?;
/// guardian.forget(child.pgid())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Guardian {
    pipe: Option<OwnedFd>,
    pid: Pid,
}

impl Guardian {
    /// Forks the guardian. It can watch up to `capacity` groups at once (more are not watched);
    /// `grace` is its time between `SIGTERM` and `SIGKILL`.
    pub fn start(capacity: usize, grace: Duration) -> io::Result<Guardian> {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        // Rule 1: everything the child needs is allocated here, before fork.
        let mut table: Vec<u32> = Vec::with_capacity(capacity.max(1));
        // SAFETY: fork is sound to call; in the child, which may be a copy of a multi-threaded
        // process, `guard` keeps the module rules (no allocation, only system calls, `_exit`).
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                drop(write);
                guard(&read, &mut table, grace)
            }
            pid => {
                drop(read);
                let pid = Pid::from_raw(pid)
                    .ok_or_else(|| io::Error::other("fork returned an invalid pid"))?;
                Ok(Guardian {
                    pipe: Some(write),
                    pid,
                })
            }
        }
    }

    /// Starts watching group `pgid`.
    pub fn watch(&self, pgid: u32) -> io::Result<()> {
        self.send(WATCH, pgid)
    }

    /// Stops watching group `pgid` (call it once the group's leader is reaped).
    pub fn forget(&self, pgid: u32) -> io::Result<()> {
        self.send(FORGET, pgid)
    }

    fn send(&self, op: u32, pgid: u32) -> io::Result<()> {
        let Some(pipe) = &self.pipe else {
            return Ok(());
        };
        let mut record = [0u8; 8];
        record[..4].copy_from_slice(&op.to_ne_bytes());
        record[4..].copy_from_slice(&pgid.to_ne_bytes());
        // 8 bytes is below PIPE_BUF: the write is atomic, so threads may share one guardian.
        loop {
            match rustix::io::write(pipe, &record) {
                Ok(_) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Drop for Guardian {
    /// Closes the pipe (the guardian then kills any group still watched) and reaps the guardian.
    fn drop(&mut self) {
        drop(self.pipe.take());
        let _ = waitpid(Some(self.pid), WaitOptions::empty());
    }
}

/// The guardian's life, in the forked child. Never returns.
fn guard(pipe: &OwnedFd, table: &mut Vec<u32>, grace: Duration) -> ! {
    // Leave the owner's process group: a Ctrl-C at the terminal must not kill the guardian.
    let _ = rustix::process::setsid();
    // Do not hold the owner's stdout and stderr open: readers of them would wait for us.
    for fd in (0..3).filter(|&fd| fd != pipe.as_raw_fd()) {
        // SAFETY: the guardian uses no std handle to these descriptors after this point.
        unsafe { rustix::io::close(fd) };
    }
    let mut buf = [0u8; 512];
    let mut have = 0usize;
    loop {
        match rustix::io::read(pipe.as_fd(), &mut buf[have..]) {
            Ok(0) => break,
            Ok(n) => have += n,
            Err(Errno::INTR) => continue,
            Err(_) => break,
        }
        let whole = have - have % 8;
        for record in buf[..whole].chunks_exact(8) {
            let op = u32::from_ne_bytes([record[0], record[1], record[2], record[3]]);
            let pgid = u32::from_ne_bytes([record[4], record[5], record[6], record[7]]);
            match op {
                // Within capacity a push does not allocate (rule 1); beyond it the group is not
                // watched rather than allocate.
                WATCH if table.len() < table.capacity() => table.push(pgid),
                FORGET => {
                    if let Some(i) = table.iter().position(|&g| g == pgid) {
                        table.swap_remove(i);
                    }
                }
                _ => {}
            }
        }
        buf.copy_within(whole..have, 0);
        have -= whole;
    }
    if !table.is_empty() {
        for signal in [Signal::TERM, Signal::KILL] {
            for &pgid in table.iter() {
                if let Some(pid) = i32::try_from(pgid).ok().and_then(Pid::from_raw) {
                    let _ = kill_process_group(pid, signal);
                }
            }
            if signal == Signal::TERM {
                let ts = rustix::time::Timespec {
                    tv_sec: grace.as_secs() as i64,
                    tv_nsec: i64::from(grace.subsec_nanos()),
                };
                let _ = rustix::thread::nanosleep(&ts);
            }
        }
    }
    // SAFETY: _exit ends the forked child without running the parent's atexit handlers or
    // destructors (rule 2).
    unsafe { libc::_exit(0) }
}
