//! Signals to whole process groups.

use std::io;
use std::thread;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{Pid, kill_process_group, test_kill_process_group};

use super::signal::Signal;

/// How often [`kill_tree`] checks whether a group has emptied during its grace period.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

fn pid(pgid: u32) -> io::Result<Pid> {
    i32::try_from(pgid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{pgid} is not a process group id"),
            )
        })
}

/// Sends `signal` to every process in group `pgid`.
///
/// A group that no longer exists is not an error: the signal had nobody left to reach.
pub fn signal_group(pgid: u32, signal: Signal) -> io::Result<()> {
    match kill_process_group(pid(pgid)?, signal.to_rustix()) {
        Ok(()) | Err(Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether any process (a zombie included) is still in group `pgid`.
pub fn group_alive(pgid: u32) -> bool {
    match pid(pgid) {
        // EPERM means the group exists but belongs to someone else: it is alive.
        Ok(p) => !matches!(test_kill_process_group(p), Err(Errno::SRCH)),
        Err(_) => false,
    }
}

/// Kills process group `pgid` as a tree: `SIGTERM`, up to `grace` for it to empty, then `SIGKILL`.
///
/// Returns `true` when the group emptied within the grace period, `false` when it needed `SIGKILL`.
///
/// Use this for groups whose leader has already been reaped (or is not your child). For a group
/// led by a [`Child`](super::Child) that is still running, call
/// [`Child::kill_tree`](super::Child::kill_tree): an unreaped leader stays in its group as a
/// zombie, so the group cannot empty until the leader is reaped.
pub fn kill_tree(pgid: u32, grace: Duration) -> io::Result<bool> {
    signal_group(pgid, Signal::TERM)?;
    if wait_group_empty(pgid, Instant::now() + grace) {
        return Ok(true);
    }
    signal_group(pgid, Signal::KILL)?;
    Ok(false)
}

/// Waits until group `pgid` is empty or `deadline` passes; returns whether it emptied.
pub(crate) fn wait_group_empty(pgid: u32, deadline: Instant) -> bool {
    loop {
        if !group_alive(pgid) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        // Members of a group that are not our children give no event to wait on: poll.
        thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
}
