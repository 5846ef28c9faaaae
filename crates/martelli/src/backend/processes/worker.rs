//! The worker side: [`init`], which turns a process started by a pool into a worker that serves tasks
//! until the pool closes its channel.

use super::capture::{Capture, Output};
use crate::codec::{self, ErrorKind, FrameError, Header, Inbox};
use crate::task::{Registry, RunError};
use std::collections::HashSet;
use std::ffi::OsString;
use std::io::{self, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Set by a pool in the environment of each worker it starts; see [`WorkerEnv`].
pub(crate) const WORKER_ENV: &str = "MARTELLI_WORKER";

/// The descriptor where a worker finds its channel to the pool.
pub(crate) const WORKER_FD: RawFd = 3;

/// The descriptors where a worker finds the files its captured stdout and stderr go to.
pub(crate) const CAPTURE_FDS: (RawFd, RawFd) = (4, 5);

/// What a pool tells its worker in [`WORKER_ENV`]: `"{channel} {max_frame}"`, then, when it placed
/// files for captured output, `" {capture limit} {stdout fd} {stderr fd}"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkerEnv {
    pub(crate) channel: RawFd,
    pub(crate) max_frame: usize,
    pub(crate) capture_limit: usize,
    pub(crate) capture: Option<(RawFd, RawFd)>,
}

impl WorkerEnv {
    pub(crate) fn parse(value: &OsString) -> Option<WorkerEnv> {
        let mut words = value.to_str()?.split(' ');
        let channel = words.next()?.parse().ok()?;
        let max_frame = words.next()?.parse().ok()?;
        let (capture_limit, capture) = match words.next() {
            None => (0, None),
            Some(limit) => {
                let limit = limit.parse().ok()?;
                let out = words.next()?.parse().ok()?;
                let err = words.next()?.parse().ok()?;
                (limit, Some((out, err)))
            }
        };
        if words.next().is_some() {
            return None;
        }
        Some(WorkerEnv {
            channel,
            max_frame,
            capture_limit,
            capture,
        })
    }

    pub(crate) fn format(&self) -> String {
        match self.capture {
            None => format!("{} {}", self.channel, self.max_frame),
            Some((out, err)) => format!(
                "{} {} {} {out} {err}",
                self.channel, self.max_frame, self.capture_limit
            ),
        }
    }
}

/// Buffers up to this size are kept from one task to the next (reusing them spares an allocation and
/// its page faults per task); bigger ones are given back.
pub(crate) const KEEP_BUFFER: usize = 16 << 20;

/// The exit code of a worker that could not serve (a broken channel, a bad environment).
pub(crate) const EXIT_PROTOCOL: i32 = 70;

/// Turns this process into a worker when a process pool started it; returns at once otherwise.
///
/// Call it on the first line of `main`, before anything else runs (in particular before any thread
/// is started or any process pool is built):
///
/// ```no_run
/// #[martelli::task]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     martelli::init(); // in a worker: serves tasks, never returns
///     let pool = martelli::Pool::processes(2)?;
///     assert_eq!(pool.submit_task(square, (7,))?.wait()?, 49);
///     Ok(())
/// }
/// ```
///
/// A process pool's workers are this same program, started again with a private channel: in them
/// `init` runs tasks by name until the pool goes away, then exits the process. A worker whose `main`
/// does not call `init` would run the program from the top; it cannot start workers of its own (that
/// is the classic fork bomb): building a process pool there fails with
/// [`Error::NotInitialized`](crate::Error::NotInitialized). In a worker SIGSEGV, SIGBUS, SIGILL and
/// SIGFPE always kill, also when raised rather than a fault (a stack overflow is still reported by
/// Rust's runtime), so such a task resolves as `WorkerDied` with the signal.
pub fn init() {
    let Some(value) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    // SAFETY: `init` runs first in `main`, before the program starts any thread (its documented
    // contract), so no other thread reads or writes the environment meanwhile. The variable is
    // removed so that programs a task starts are not taken for workers.
    unsafe { std::env::remove_var(WORKER_ENV) };
    // A task that gets SIGSEGV, SIGBUS, SIGILL or SIGFPE, even one raised rather than a fault, dies
    // of it and resolves as `WorkerDied` with the signal.
    super::crash_signals::install();
    let code = match serve(&value) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("martelli worker {}: {e}", std::process::id());
            EXIT_PROTOCOL
        }
    };
    std::process::exit(code);
}

/// True when this process was started as a worker and `init` has not taken it over: then it must
/// not start workers of its own.
pub(crate) fn is_uninitialized_worker() -> bool {
    std::env::var_os(WORKER_ENV).is_some()
}

#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error(
        "{WORKER_ENV}={0:?} is not \"<fd> <max frame> [<capture limit> <fd> <fd>]\"; only a process \
         pool should set it"
    )]
    Env(OsString),
    #[error("descriptor {0} is not open: this process was not started by a process pool")]
    NoChannel(RawFd),
    #[error(transparent)]
    Registry(#[from] crate::task::DuplicateTask),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("the pool sent a {0} frame, which a worker does not take")]
    Unexpected(&'static str),
}

fn serve(value: &OsString) -> Result<(), ServeError> {
    let env = WorkerEnv::parse(value).ok_or_else(|| ServeError::Env(value.clone()))?;
    let fd = env.channel;
    // SAFETY: F_GETFD only reads the descriptor's flags; it is harmless on any number. (libc, not
    // rustix: a `BorrowedFd` must name an open descriptor, and this asks whether `fd` is one.)
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(ServeError::NoChannel(fd));
    }
    // SAFETY: the pool that started this process placed its end of a socketpair at `fd` (checked
    // open above), and nothing else in this process owns that descriptor.
    let channel = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // Programs the tasks start must not inherit the channel (they would keep it open after this
    // worker dies, hiding the death from the pool).
    let _ = rustix::io::fcntl_setfd(&channel, rustix::io::FdFlags::CLOEXEC);
    let mut capture = env
        .capture
        .and_then(|fds| Capture::adopt(fds, env.capture_limit));

    let registry = Registry::get()?;
    let max_frame = env.max_frame;
    let mut out = Vec::with_capacity(64 * 1024);
    codec::begin(
        &mut out,
        &Header::Hello {
            pid: std::process::id(),
            fingerprint: registry.fingerprint(),
            exe: exe_identity().unwrap_or_default(),
        },
    )?;
    codec::finish(&mut out, max_frame)?;
    (&channel).write_all(&out).map_err(FrameError::from)?;
    out.clear();

    let mut inbox = Inbox::new(max_frame);
    // Tasks the pool cancelled after sending them, seen ahead of their turn (rule 3 of the module
    // docs): each id stays until its `Cancel` frame itself is reached, after its `Run`.
    let mut cancelled: HashSet<u64> = HashSet::new();
    // True right after a read that waited: whatever the pool had sent is in the inbox.
    let mut fresh = false;
    loop {
        // Before starting a task, read what has arrived meanwhile (without waiting): a `Cancel`
        // for it is then seen, and more tasks are taken in.
        if !fresh && inbox.buffered() > 0 {
            match inbox.fill(channel.as_fd(), false) {
                Ok(0) => return Ok(()), // the pool is done with us
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(FrameError::Io(e).into()),
            }
        }
        inbox.scan(|envelope| {
            if let Ok((Header::Cancel { id }, _)) = codec::decode(envelope) {
                cancelled.insert(id);
            }
        })?;
        fresh = false;
        let envelope = match inbox.next()? {
            Some(envelope) => envelope,
            None => {
                // Nothing complete to run: send the answers, then wait for the pool.
                flush(&channel, &mut out)?;
                if out.capacity() > KEEP_BUFFER {
                    out = Vec::with_capacity(64 * 1024); // do not hold a huge result's buffer for ever
                }
                match wait_for_frames(&mut inbox, channel.as_fd()) {
                    Ok(0) => return Ok(()), // the pool is done with us
                    Ok(_) => {
                        fresh = true;
                        continue;
                    }
                    Err(e) => return Err(FrameError::Io(e).into()),
                }
            }
        };
        let (header, args) = codec::decode(envelope)?;
        let (id, task, kind) = match header {
            Header::Run { id, task } => (id, task, Kind::One),
            Header::RunBatch { id, task } => (id, task, Kind::Batch),
            Header::RunCaptured { id, task } => (id, task, Kind::Captured),
            Header::Cancel { id } => {
                cancelled.remove(&id); // its task was answered (skipped or run) before this frame
                continue;
            }
            Header::Hello { .. } => return Err(ServeError::Unexpected("Hello")),
            Header::Value { .. } => return Err(ServeError::Unexpected("Value")),
            Header::Error { .. } => return Err(ServeError::Unexpected("Error")),
            Header::Output { .. } => return Err(ServeError::Unexpected("Output")),
        };
        if cancelled.contains(&id) {
            push_error(&mut out, id, ErrorKind::Cancelled, "", max_frame)?;
            continue;
        }
        // The answers so far go out before this task runs: it may run for long.
        flush(&channel, &mut out)?;
        let redirected = match (kind, capture.as_mut()) {
            (Kind::Captured, Some(c)) => c.begin().is_ok(),
            _ => false,
        };
        codec::begin(&mut out, &Header::Value { id })?;
        let ran = match kind {
            Kind::Batch => registry.run_batch(task, args, &mut out),
            Kind::One | Kind::Captured => registry.run(task, args, &mut out),
        };
        let failure = match ran {
            Some(Ok(())) => match codec::finish(&mut out, max_frame) {
                Ok(()) => None,
                Err(e) => Some((ErrorKind::BadResult, e.to_string())),
            },
            Some(Err(RunError::Failed(m))) => Some((ErrorKind::Failed, m)),
            Some(Err(RunError::Panicked(m))) => Some((ErrorKind::Panicked, m)),
            Some(Err(RunError::BadArgs(m))) => Some((ErrorKind::BadArgs, m)),
            Some(Err(RunError::BadResult(m))) => Some((ErrorKind::BadResult, m)),
            None => Some((ErrorKind::UnknownTask, task.to_owned())),
        };
        if let Some((error_kind, message)) = failure {
            out.clear();
            push_error(&mut out, id, error_kind, &message, max_frame)?;
        }
        if kind == Kind::Captured {
            let output = match (redirected, capture.as_mut()) {
                (true, Some(c)) => c.end(),
                _ => Output::default(),
            };
            // The output goes just before the answer.
            let answer = std::mem::take(&mut out);
            push_output(&mut out, id, &output, max_frame)?;
            out.extend_from_slice(&answer);
        }
    }
}

/// What a worker was asked to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    One,
    Batch,
    Captured,
}

/// Writes the answers gathered in `out` to the pool, and empties it.
fn flush(channel: &UnixStream, out: &mut Vec<u8>) -> Result<(), ServeError> {
    if !out.is_empty() {
        let mut channel = channel;
        channel.write_all(out).map_err(FrameError::from)?;
        out.clear();
    }
    Ok(())
}

/// Appends an `Error` answer to `out`; a message over the frame limit is sent cut short.
fn push_error(
    out: &mut Vec<u8>,
    id: u64,
    kind: ErrorKind,
    message: &str,
    max_frame: usize,
) -> Result<(), ServeError> {
    let at = codec::begin_at(out, &Header::Error { id, kind, message })?;
    if codec::finish_at(out, at, max_frame).is_err() {
        out.truncate(at);
        let cut: String = message.chars().take(1024).collect();
        let header = Header::Error {
            id,
            kind,
            message: &cut,
        };
        let at = codec::begin_at(out, &header)?;
        codec::finish_at(out, at, max_frame)?;
    }
    Ok(())
}

/// Appends the `Output` frame of a captured task to `out`; output that would not fit in a frame is
/// cut further (its full lengths are still reported).
fn push_output(
    out: &mut Vec<u8>,
    id: u64,
    output: &Output,
    max_frame: usize,
) -> Result<(), ServeError> {
    let room = max_frame.saturating_sub(256) / 2;
    let header = Header::Output {
        id,
        stdout_len: output.stdout_len,
        stderr_len: output.stderr_len,
        stdout: &output.stdout[..output.stdout.len().min(room)],
        stderr: &output.stderr[..output.stderr.len().min(room)],
    };
    let at = codec::begin_at(out, &header)?;
    codec::finish_at(out, at, max_frame)?;
    Ok(())
}

/// Device and inode of this process's executable: the pool compares them with its own to check that
/// the worker runs the same build.
pub(crate) fn exe_identity() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata("/proc/self/exe").ok()?;
    Some((meta.dev(), meta.ino()))
}

/// How long an idle worker polls its channel before it sleeps in `recv`: a task that comes within
/// this time starts without the worker being woken, which on an idle machine (cores in deep sleep
/// states) costs tens of microseconds.
const SPIN_BEFORE_SLEEP: std::time::Duration = std::time::Duration::from_micros(50);

/// Reads what the pool sends next: polls without waiting for a short while, then waits.
fn wait_for_frames(inbox: &mut Inbox, fd: std::os::fd::BorrowedFd<'_>) -> io::Result<usize> {
    let start = std::time::Instant::now();
    while start.elapsed() < SPIN_BEFORE_SLEEP {
        match inbox.fill(fd, false) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
            other => return other,
        }
    }
    inbox.fill(fd, true)
}
