//! A spawned worker process: started with its channel and capture files, handshaken, killed,
//! reaped, and reported on when it dies.

use super::ProcessConfig;
use super::capture::Files;
use super::worker::{self, CAPTURE_FDS, WORKER_ENV, WORKER_FD, WorkerEnv};
use crate::codec::{self, FrameError, Header, Inbox};
use crate::error::{Error, WorkerDeath};
use crate::process::{Child, Guardian, Signal, Spawn};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Stdio;
use std::sync::Mutex as StdMutex;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// How much of a worker's stderr is kept for its death report.
const STDERR_TAIL_BYTES: usize = 4096;
/// How many lines of it the report shows.
const STDERR_TAIL_LINES: usize = 20;
/// How long a death report waits for the rest of a dead worker's stderr.
const STDERR_DRAIN: Duration = Duration::from_millis(200);

/// The last bytes a worker wrote to stderr, forwarded to ours as they come.
struct StderrTail {
    tail: std::sync::Arc<StdMutex<VecDeque<u8>>>,
    done: Receiver<()>,
}

impl StderrTail {
    fn start(mut pipe: impl Read + Send + 'static, pid: u32) -> StderrTail {
        let tail = std::sync::Arc::new(StdMutex::new(VecDeque::with_capacity(STDERR_TAIL_BYTES)));
        let (done_tx, done) = mpsc::channel();
        let keep = std::sync::Arc::clone(&tail);
        let spawned = std::thread::Builder::new()
            .name(format!("martelli-stderr-{pid}"))
            .spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            let _ = io::stderr().write_all(&buf[..n]);
                            if let Ok(mut t) = keep.lock() {
                                t.extend(&buf[..n]);
                                let excess = t.len().saturating_sub(STDERR_TAIL_BYTES);
                                t.drain(..excess);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                let _ = done_tx.send(());
            });
        // Without a reader thread (the system refused one) the pipe's read end is closed with the
        // closure: the worker's stderr writes then fail instead of blocking, and `finish` (its sender
        // dropped too) returns at once with an empty tail.
        drop(spawned);
        StderrTail { tail, done }
    }

    /// The last lines, once the pipe is closed (or after a short wait when a leftover holds it).
    fn finish(&self) -> String {
        let _ = self.done.recv_timeout(STDERR_DRAIN);
        let bytes: Vec<u8> = match self.tail.lock() {
            Ok(t) => t.iter().copied().collect(),
            Err(_) => Vec::new(),
        };
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n")
    }
}

/// A live worker process.
pub(super) struct Worker {
    child: Child,
    /// Kills the worker's group if this process dies (the parent-death signal reaches only the
    /// worker, not what its task started).
    guardian: std::sync::Arc<Guardian>,
    pub(super) channel: UnixStream,
    /// Frames from the worker, read without blocking.
    pub(super) inbox: Inbox,
    stderr: StderrTail,
    /// The files its captured tasks' output goes to; `None` when they could not be made.
    pub(super) capture: Option<Files>,
    /// Tasks it has run (answered, not skipped).
    pub(super) tasks: usize,
}

impl Worker {
    pub(super) fn spawn(
        config: &ProcessConfig,
        guardian: &std::sync::Arc<Guardian>,
    ) -> Result<Worker, Error> {
        let start_error = |what: &str, e: &dyn std::fmt::Display| Error::WorkerStart {
            message: format!("{what}: {e}"),
        };
        let program = match &config.program {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .map_err(|e| start_error("cannot find this program's executable", &e))?,
        };
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| start_error("cannot create a socketpair", &e))?;
        // Without memory files (an old kernel, a descriptor limit) the pool still works; captured
        // tasks then report empty output.
        let capture = Files::create().ok();
        let mut spawn = Spawn::new(&program).args(&config.args);
        if let Some(n) = config.nice {
            spawn = spawn.nice(n);
        }
        for &(resource, soft, hard) in &config.rlimits {
            spawn = spawn.rlimit(resource, soft, hard);
        }
        let env = WorkerEnv {
            channel: WORKER_FD,
            max_frame: config.max_frame,
            capture_limit: config.capture_limit,
            capture: capture.as_ref().map(|_| CAPTURE_FDS),
        };
        let command = spawn.command_mut();
        command
            .env(WORKER_ENV, env.format())
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        let mut moves = vec![(theirs.as_raw_fd(), WORKER_FD)];
        if let Some(files) = &capture {
            moves.push((files.stdout.as_raw_fd(), CAPTURE_FDS.0));
            moves.push((files.stderr.as_raw_fd(), CAPTURE_FDS.1));
        }
        let hook = move || -> io::Result<()> { place_descriptors(&moves) };
        // SAFETY: the hook runs in the forked child before exec and makes only async-signal-safe
        // system calls (fcntl, dup2); it does not allocate (`moves` was built before the fork), and
        // its error is built from errno without allocating.
        unsafe { command.pre_exec(hook) };
        let mut child = spawn.spawn().map_err(|e| {
            start_error(
                &format!("cannot start worker program {}", program.display()),
                &e,
            )
        })?;
        drop(theirs);
        let guardian = std::sync::Arc::clone(guardian);
        // Capacity is two per slot, more than a slot ever has alive: this cannot fail.
        let _ = guardian.watch(child.pgid());
        let stderr = match child.take_stderr() {
            Some(pipe) => StderrTail::start(pipe, child.pid()),
            None => StderrTail::start(io::empty(), child.pid()),
        };
        let mut worker = Worker {
            child,
            guardian,
            channel: ours,
            inbox: Inbox::new(config.max_frame),
            stderr,
            capture,
            tasks: 0,
        };
        match worker.handshake(config) {
            Ok(()) => Ok(worker),
            Err(reason) => {
                let _ = worker.child.signal_group(Signal::KILL);
                let death = worker.death();
                Err(Error::Handshake {
                    program: program.display().to_string(),
                    reason,
                    death: death.to_string(),
                })
            }
        }
    }

    /// Waits for the worker's `Hello` and checks that it is the same build.
    fn handshake(&mut self, config: &ProcessConfig) -> Result<(), String> {
        let timeout = config.handshake_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            match self.inbox.has_frame() {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => return Err(format!("its handshake failed: {e}")),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "it did not answer the handshake within {timeout:?}; does its main call \
                     martelli::init() first?"
                ));
            }
            let ts = Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            let mut fds = [PollFd::new(&self.channel, PollFlags::IN)];
            match poll(&mut fds, Some(&ts)) {
                Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(format!("its handshake failed: {e}")),
            }
            match self.inbox.fill(self.channel.as_fd(), false) {
                Ok(0) => {
                    return Err(
                        "it exited before the handshake; its main must call martelli::init() \
                         first"
                            .to_owned(),
                    );
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("its handshake failed: {}", FrameError::Io(e))),
            }
        }
        let envelope = match self.inbox.next() {
            Ok(Some(envelope)) => envelope,
            Ok(None) => return Err("its handshake failed: no frame came".to_owned()),
            Err(e) => return Err(format!("its handshake failed: {e}")),
        };
        let registry = crate::task::Registry::get().map_err(|e| e.to_string())?;
        match codec::decode(envelope) {
            Ok((
                Header::Hello {
                    fingerprint, exe, ..
                },
                _,
            )) => {
                if fingerprint != registry.fingerprint() {
                    return Err(
                        "it registers other tasks (or another martelli version) than this \
                                program: it is not the same build"
                            .to_owned(),
                    );
                }
                if config.program.is_none() && Some(exe) != worker::exe_identity() {
                    return Err(
                        "its executable is not this program's: the program was rebuilt or \
                                replaced while running; restart it"
                            .to_owned(),
                    );
                }
                Ok(())
            }
            Ok((other, _)) => Err(format!("it sent {other:?} instead of a handshake")),
            Err(e) => Err(format!("its handshake failed: {e}")),
        }
    }

    /// The worker's process id.
    pub(super) fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Kills the worker's group and reaps the worker, without waiting for the rest of its stderr.
    pub(super) fn kill(&mut self) {
        let _ = self.child.signal_group(Signal::KILL);
        self.reap();
    }

    /// Waits for the worker to exit, reaps it, and stops guarding its group (rule 3 of the
    /// guardian: only unreaped groups are watched).
    fn reap(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.wait().ok();
        self.guardian.forget(self.child.pgid());
        status
    }

    /// Reaps the worker (after its channel closed or its group was killed) and reports its end.
    pub(super) fn death(&mut self) -> WorkerDeath {
        // The group may hold leftovers (a task's children): they go with their worker.
        let _ = self.child.signal_group(Signal::KILL);
        let status = self.reap();
        WorkerDeath {
            exit_code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            stderr_tail: self.stderr.finish(),
        }
    }

    /// Closes the channel (the worker then exits) and reaps it.
    pub(super) fn retire(mut self) {
        let _ = self.channel.shutdown(std::net::Shutdown::Both);
        self.reap();
    }
}

/// Between fork and exec: places each `(from, to)` descriptor at `to`, without `FD_CLOEXEC`, so
/// that the worker program inherits it. The sources are first copied above every target, so that
/// placing one cannot overwrite another that still has to move.
///
/// Only system calls, no allocation: this runs between fork and exec. `libc::dup2` stays for the
/// placing, because the target number need not be open, and rustix's `dup2` (rightly) wants an
/// owned descriptor to replace.
fn place_descriptors(moves: &[(i32, i32)]) -> io::Result<()> {
    const ABOVE: i32 = 16;
    let mut high: [Option<OwnedFd>; 4] = [const { None }; 4];
    for (slot, &(from, _)) in high.iter_mut().zip(moves) {
        // SAFETY: `from` is a descriptor the parent holds open until the spawn returns (its end of
        // the socketpair, its memory files), so this forked copy holds it open for this borrow.
        let from = unsafe { BorrowedFd::borrow_raw(from) };
        // The copy, at a free number at or above ABOVE, closes at exec (and when dropped).
        *slot = Some(rustix::io::fcntl_dupfd_cloexec(from, ABOVE)?);
    }
    for (fd, &(_, to)) in high.iter().flatten().zip(moves) {
        // SAFETY: dup2 onto a fixed descriptor of the forked child; whatever was there was ours to
        // replace, and the copy has no FD_CLOEXEC, so the worker program inherits it.
        if unsafe { libc::dup2(fd.as_raw_fd(), to) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The resident memory of process `pid`, from `/proc/<pid>/statm`.
pub(super) fn resident_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * u64::try_from(rustix::param::page_size()).ok()?)
}
