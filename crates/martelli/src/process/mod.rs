//! Supervised child processes: one process group per child, priorities, resource limits, a
//! parent-death signal, and killing a whole process tree.
//!
//! This is the one place in martelli that starts processes. `martelli run` uses it for every job,
//! and the process-pool backend is meant to use it for its workers.
//!
//! ```
//! use std::time::Duration;
//! use martelli::process::{Spawn, Stream, Supervision};
//!
//! // Orphans our children leave become ours, so they are reaped, never left as zombies.
//! martelli::process::become_subreaper()?;
//! let mut child = Spawn::shell("echo hello; echo oops >&2").capture_output(true).spawn()?;
//! let mut out = Vec::new();
//! let done = child.communicate(&Supervision::default(), |stream, bytes| {
//!     if stream == Stream::Stdout {
//!         out.extend_from_slice(bytes);
//!     }
//! })?;
//! assert!(done.status.success());
//! assert_eq!(out, b"hello\n");
//!
//! // A hard deadline: the whole process group gets SIGTERM, then SIGKILL after the grace period,
//! // so the backgrounded `sleep` dies with its shell.
//! let mut child = Spawn::shell("sleep 60 & wait").spawn()?;
//! let limits = Supervision::default()
//!     .timeout(Some(Duration::from_millis(50)))
//!     .grace(Duration::from_millis(100));
//! let done = child.communicate(&limits, |_, _| {})?;
//! assert!(done.timed_out);
//! assert!(!martelli::process::group_alive(child.pgid()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The rules this module keeps
//!
//! 1. **Every child leads its own process group** (`setpgid(0, 0)` before `exec`). Signals sent to
//!    the group reach the child and everything it started that stayed in the group, and a terminal's
//!    Ctrl-C, which goes to the terminal's foreground group, does not reach children directly: the
//!    supervisor decides what happens to them.
//! 2. **Children die with their supervisor.** By default each child asks the kernel for `SIGKILL`
//!    when its parent dies (`prctl(PR_SET_PDEATHSIG)`), and checks after asking that the parent did
//!    not die in between. Linux delivers this signal when the *thread* that spawned the child exits,
//!    so spawn from a thread that outlives the child. Grandchildren are not covered by the kernel:
//!    while the supervisor lives, [`Child::communicate`] and [`Child::kill_tree`] clean up the
//!    whole group, and a [`Guardian`] kills the groups it watches when the supervisor dies, even
//!    by `SIGKILL`.
//! 3. **A group is killed as a tree**: `SIGTERM` to the group, a grace period to exit, then `SIGKILL`
//!    ([`kill_tree`], [`Child::kill_tree`]).
//! 4. **A child is reaped exactly once**, by the [`Child`] that owns it. Its pid, and therefore its
//!    process group id, stays reserved until then, so signalling the group of an unreaped child can
//!    never hit an unrelated process.
//!
//! # Supported platforms
//!
//! Linux only (process groups, `prctl`, `pidfd_open`). On kernels older than 5.3, which lack
//! `pidfd_open`, [`Child::communicate`] falls back to checking the child every few milliseconds.

mod child;
mod group;
mod guardian;
mod signal;

pub use child::{Child, Finished, Spawn, Stream, Supervision, become_subreaper};
pub use group::{group_alive, kill_tree, signal_group};
pub use guardian::Guardian;
pub use signal::{Resource, Signal};
