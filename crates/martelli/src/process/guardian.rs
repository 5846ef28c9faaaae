//! A guardian process that kills registered process groups when its owner dies, even by SIGKILL.
//!
//! The parent-death signal reaches only a supervisor's direct children; a shell's own children
//! (`sh -c 'a | b'`) would outlive a supervisor killed with SIGKILL. The guardian closes that gap.
//!
//! It is a forked copy of the supervisor that leaves the supervisor's session (so a terminal's
//! Ctrl-C does not reach it) and blocks reading a pipe nobody writes to. The groups to protect are
//! kept in a table of atomic integers in memory shared by both processes (`mmap(MAP_SHARED)`), so
//! registering a group costs no system call and never wakes the guardian. When the supervisor dies
//! in any way, the kernel closes its end of the pipe; the guardian's read returns end of file, and it
//! sends `SIGTERM` to every group left in the table, waits the grace period, sends `SIGKILL`, and
//! exits.
//!
//! Rules:
//!
//! 1. The forked guardian may be a copy of a multi-threaded process, so it never allocates and makes
//!    only system calls (through rustix), ending with `_exit`.
//! 2. The table is `capacity` `AtomicU32`s in a zeroed shared mapping that lives as long as the
//!    [`Guardian`] (and, in the guardian process, for ever); 0 marks a free entry.
//! 3. A group is in the table only while its leader is unreaped, so its id cannot have been reused
//!    when the guardian signals it, unless the supervisor died between reaping the leader and
//!    [`Guardian::forget`] — a window of one store instruction.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags, mmap_anonymous, munmap};
use rustix::process::{Pid, Signal, WaitOptions, kill_process_group, waitpid};

/// Kills the process groups it watches when this process dies, even by `SIGKILL`.
///
/// The parent-death signal reaches only a supervisor's direct children; a shell's own children
/// (`sh -c 'a | b'`) would outlive a supervisor killed with `SIGKILL`. A guardian closes that gap.
/// It is a forked copy of the supervisor, in a session of its own (a terminal's Ctrl-C does not
/// reach it), blocked reading a pipe nobody writes to. The groups to protect are kept in a table in
/// memory both processes share, so [`watch`](Guardian::watch) and [`forget`](Guardian::forget) cost
/// no system call and never wake the guardian. When the supervisor dies in any way, the kernel
/// closes its end of the pipe; the guardian then sends `SIGTERM` to every group still watched,
/// waits the grace period, sends `SIGKILL`, and exits. Dropping the `Guardian` ends it the same way
/// (with nothing left to kill, if every group was forgotten) and reaps it.
///
/// ```
/// use martelli::process::{Guardian, Spawn};
///
/// let guardian = Guardian::start(4, std::time::Duration::from_millis(200))?;
/// let mut child = Spawn::shell("true").spawn()?;
/// guardian.watch(child.pgid())?;
/// child.wait()?;
/// guardian.forget(child.pgid());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Guardian {
    table: *mut AtomicU32,
    capacity: usize,
    pipe: Option<OwnedFd>,
    pid: Pid,
}

// SAFETY: the table is only accessed through `AtomicU32` operations (rule 2), which are safe to
// share between threads; the other fields are plain data and an owned file descriptor.
unsafe impl Send for Guardian {}
// SAFETY: as for `Send`: `&Guardian` only reaches the table through atomics.
unsafe impl Sync for Guardian {}

impl Guardian {
    /// Forks the guardian. It can watch up to `capacity` groups at once; `grace` is its time
    /// between `SIGTERM` and `SIGKILL`.
    pub fn start(capacity: usize, grace: Duration) -> io::Result<Guardian> {
        let capacity = capacity.max(1);
        let len = capacity * size_of::<AtomicU32>();
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing aliases nothing.
        let table = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
            )?
        }
        .cast::<AtomicU32>();
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        // SAFETY: fork is sound to call; the child runs only `guard`, which keeps rule 1.
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => {
                let error = io::Error::last_os_error();
                // SAFETY: the mapping was created above with this length and is not used after.
                let _ = unsafe { munmap(table.cast(), len) };
                Err(error)
            }
            0 => {
                drop(write);
                // SAFETY: the mapping holds `capacity` zeroed, suitably aligned `AtomicU32`s (rule 2),
                // and is never unmapped in this process.
                let entries = unsafe { std::slice::from_raw_parts(table, capacity) };
                guard(&read, entries, grace)
            }
            pid => {
                drop(read);
                let pid = Pid::from_raw(pid)
                    .ok_or_else(|| io::Error::other("fork returned an invalid pid"))?;
                Ok(Guardian {
                    table,
                    capacity,
                    pipe: Some(write),
                    pid,
                })
            }
        }
    }

    fn entries(&self) -> &[AtomicU32] {
        // SAFETY: rule 2: `capacity` initialised `AtomicU32`s, mapped until `drop`.
        unsafe { std::slice::from_raw_parts(self.table, self.capacity) }
    }

    /// Starts watching group `pgid`. Fails when `capacity` groups are watched already.
    pub fn watch(&self, pgid: u32) -> io::Result<()> {
        if pgid == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "0 is not a process group id",
            ));
        }
        for entry in self.entries() {
            if entry
                .compare_exchange(0, pgid, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(());
            }
        }
        Err(io::Error::other(format!(
            "the guardian already watches {} process groups; start it with a larger capacity",
            self.capacity
        )))
    }

    /// Stops watching group `pgid` (call it once the group's leader is reaped).
    pub fn forget(&self, pgid: u32) {
        if pgid == 0 {
            return;
        }
        for entry in self.entries() {
            if entry
                .compare_exchange(pgid, 0, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }
}

impl Drop for Guardian {
    /// Closes the pipe (the guardian then kills any group still watched and exits), reaps the
    /// guardian, and unmaps the table.
    fn drop(&mut self) {
        drop(self.pipe.take());
        let _ = waitpid(Some(self.pid), WaitOptions::empty());
        // SAFETY: the mapping was created in `start` with this length; `&self` borrows of it
        // ended, and the guardian process that shared it has been reaped.
        let _ = unsafe { munmap(self.table.cast(), self.capacity * size_of::<AtomicU32>()) };
    }
}

/// The guardian's life, in the forked child. Never returns.
fn guard(pipe: &OwnedFd, entries: &[AtomicU32], grace: Duration) -> ! {
    // Leave the owner's session and process group: a Ctrl-C at the terminal must not reach us.
    let _ = rustix::process::setsid();
    // Do not hold the owner's stdin, stdout and stderr open: readers of them would wait for us.
    for fd in (0..3).filter(|&fd| fd != pipe.as_raw_fd()) {
        // SAFETY: the guardian uses no handle to these descriptors after this point.
        unsafe { rustix::io::close(fd) };
    }
    let mut buf = [0u8; 16];
    loop {
        match rustix::io::read(pipe.as_fd(), &mut buf) {
            Ok(0) => break,                // the owner is gone
            Ok(_) | Err(Errno::INTR) => {} // nobody writes; ignore
            Err(_) => break,
        }
    }
    let watched = || {
        entries
            .iter()
            .map(|e| e.load(Ordering::SeqCst))
            .filter(|&g| g != 0)
    };
    if watched().next().is_some() {
        for signal in [Signal::TERM, Signal::KILL] {
            for pgid in watched() {
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
    // SAFETY: _exit ends the forked child without running the owner's atexit handlers or
    // destructors (rule 1).
    unsafe { libc::_exit(0) }
}
