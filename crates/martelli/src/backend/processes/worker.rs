//! The worker side: [`init`], which turns a process started by a pool into a worker that serves tasks
//! until the pool closes its channel.

use crate::codec::{self, ErrorKind, FrameError, Header};
use crate::task::{Registry, RunError};
use std::ffi::OsString;
use std::io::{BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Set by a pool in the environment of each worker it starts: `"{fd} {max_frame}"`.
pub(crate) const WORKER_ENV: &str = "MARTELLI_WORKER";

/// The descriptor where a worker finds its channel to the pool.
pub(crate) const WORKER_FD: RawFd = 3;

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
/// [`Error::NotInitialized`](crate::Error::NotInitialized).
pub fn init() {
    let Some(value) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    // SAFETY: `init` runs first in `main`, before the program starts any thread (its documented
    // contract), so no other thread reads or writes the environment meanwhile. The variable is
    // removed so that programs a task starts are not taken for workers.
    unsafe { std::env::remove_var(WORKER_ENV) };
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
    #[error("{WORKER_ENV}={0:?} is not \"<fd> <max frame>\"; only a process pool should set it")]
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
    let text = value
        .to_str()
        .ok_or_else(|| ServeError::Env(value.clone()))?;
    let (fd, max_frame) = text
        .split_once(' ')
        .and_then(|(fd, max)| Some((fd.parse::<RawFd>().ok()?, max.parse::<usize>().ok()?)))
        .ok_or_else(|| ServeError::Env(value.clone()))?;
    // SAFETY: F_GETFD only reads the descriptor's flags; it is harmless on any number.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(ServeError::NoChannel(fd));
    }
    // SAFETY: the pool that started this process placed its end of a socketpair at `fd` (checked
    // open above), and nothing else in this process owns that descriptor.
    let channel = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // Programs the tasks start must not inherit the channel (they would keep it open after this
    // worker dies, hiding the death from the pool).
    // SAFETY: `fd` is open and owned by `channel`; setting FD_CLOEXEC changes only its flags.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };

    let registry = Registry::get()?;
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

    let mut reader = BufReader::with_capacity(64 * 1024, &channel);
    let mut frame = Vec::new();
    loop {
        if frame.capacity() > KEEP_BUFFER {
            frame = Vec::new();
        }
        match codec::read_frame(&mut reader, &mut frame, max_frame) {
            Ok(()) => {}
            Err(FrameError::Closed) => return Ok(()), // the pool is done with us
            Err(e) => return Err(e.into()),
        }
        let (header, args) = codec::decode(&frame)?;
        let (id, task, batch) = match header {
            Header::Run { id, task } => (id, task, false),
            Header::RunBatch { id, task } => (id, task, true),
            Header::Hello { .. } => return Err(ServeError::Unexpected("Hello")),
            Header::Value { .. } => return Err(ServeError::Unexpected("Value")),
            Header::Error { .. } => return Err(ServeError::Unexpected("Error")),
        };
        codec::begin(&mut out, &Header::Value { id })?;
        let ran = if batch {
            registry.run_batch(task, args, &mut out)
        } else {
            registry.run(task, args, &mut out)
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
        if let Some((kind, message)) = failure {
            let header = Header::Error {
                id,
                kind,
                message: &message,
            };
            codec::begin(&mut out, &header)?;
            if codec::finish(&mut out, max_frame).is_err() {
                // The message alone is over the limit: send it cut short.
                let cut: String = message.chars().take(1024).collect();
                codec::begin(
                    &mut out,
                    &Header::Error {
                        id,
                        kind,
                        message: &cut,
                    },
                )?;
                codec::finish(&mut out, max_frame)?;
            }
        }
        (&channel).write_all(&out).map_err(FrameError::from)?;
        if out.capacity() > KEEP_BUFFER {
            out = Vec::with_capacity(64 * 1024); // do not hold a huge result's buffer for ever
        }
    }
}

/// Device and inode of this process's executable: the pool compares them with its own to check that
/// the worker runs the same build.
pub(crate) fn exe_identity() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata("/proc/self/exe").ok()?;
    Some((meta.dev(), meta.ino()))
}
