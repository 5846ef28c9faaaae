//! Capturing a task's stdout and stderr: two memory files (`memfd`) per worker, made by the pool
//! before it starts the worker and placed at known descriptors of the new process.
//!
//! 1. For a task sent with `RunCaptured`, the worker empties both files, points its descriptors 1
//!    and 2 at them, runs the task, flushes Rust's stdout buffer and points 1 and 2 back. What the
//!    task wrote — through `print!`, `eprint!`, raw writes, or programs it started, which inherit 1
//!    and 2 — is in the files.
//! 2. The worker reads at most the pool's limit of each back and sends it in an `Output` frame just
//!    before the task's answer, with the full lengths (a longer stream is cut and says so).
//! 3. The pool holds the same two files open. When a worker dies, times out or is cancelled during a
//!    captured task, the pool reads what the task had written from its own descriptors.
//! 4. Both sides read with `pread` at offset 0: the file offset is shared with the worker's
//!    descriptors and means nothing to a reader.

use rustix::fs::{MemfdFlags, SeekFrom, fstat, ftruncate, memfd_create, seek};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// What a task wrote to stdout and stderr: the first bytes of each, and how many it wrote in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Output {
    pub(crate) stdout: Vec<u8>,
    pub(crate) stdout_len: u64,
    pub(crate) stderr: Vec<u8>,
    pub(crate) stderr_len: u64,
}

impl Output {
    /// The public form, for a task's future.
    pub(crate) fn into_streams(self) -> (crate::CapturedStream, crate::CapturedStream) {
        (
            crate::CapturedStream::new(self.stdout, self.stdout_len),
            crate::CapturedStream::new(self.stderr, self.stderr_len),
        )
    }
}

/// The two files a worker's captured output goes to.
#[derive(Debug)]
pub(crate) struct Files {
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
}

impl Files {
    /// Two new, empty memory files, closed on exec (the spawn places copies at fixed descriptors).
    pub(crate) fn create() -> io::Result<Files> {
        Ok(Files {
            stdout: memfd_create("martelli-stdout", MemfdFlags::CLOEXEC)?,
            stderr: memfd_create("martelli-stderr", MemfdFlags::CLOEXEC)?,
        })
    }

    /// What was written to both files, each cut at `limit` bytes (rule 3).
    pub(crate) fn read(&self, limit: usize) -> Output {
        let (stdout, stdout_len) = read_file(self.stdout.as_fd(), limit);
        let (stderr, stderr_len) = read_file(self.stderr.as_fd(), limit);
        Output {
            stdout,
            stdout_len,
            stderr,
            stderr_len,
        }
    }
}

/// The first `limit` bytes of a file, and its size (rule 4: `pread`, never the shared offset).
fn read_file(fd: BorrowedFd<'_>, limit: usize) -> (Vec<u8>, u64) {
    let size = fstat(fd).map(|s| s.st_size.max(0) as u64).unwrap_or(0);
    let want = usize::try_from(size).unwrap_or(usize::MAX).min(limit);
    let mut bytes = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match rustix::io::pread(fd, &mut bytes[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => break,
        }
    }
    bytes.truncate(got);
    (bytes, size)
}

/// The worker's side: redirects descriptors 1 and 2 into the files around a task (rule 1).
#[derive(Debug)]
pub(crate) struct Capture {
    files: Files,
    /// Copies of the worker's own stdout and stderr, to point 1 and 2 back after a task.
    saved_stdout: OwnedFd,
    saved_stderr: OwnedFd,
    limit: usize,
}

impl Capture {
    /// Takes the files the pool placed at descriptors `fds`; `None` when they are not open (then
    /// captured tasks run uncaptured, and report empty output).
    pub(crate) fn adopt(fds: (RawFd, RawFd), limit: usize) -> Option<Capture> {
        let is_open = |fd: RawFd| {
            // SAFETY: F_GETFD only reads a descriptor's flags; it is harmless on any number. (libc,
            // not rustix: rustix takes a `BorrowedFd`, which must name an open descriptor, and this
            // asks whether the number is one.)
            unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
        };
        if fds.0 == fds.1 || !is_open(fds.0) || !is_open(fds.1) || fds.0 <= 2 || fds.1 <= 2 {
            return None;
        }
        // SAFETY: the pool placed its memory files at these two distinct descriptors (checked open
        // and above stdio); nothing else in this process owns them.
        let files = unsafe {
            Files {
                stdout: OwnedFd::from_raw_fd(fds.0),
                stderr: OwnedFd::from_raw_fd(fds.1),
            }
        };
        for fd in [&files.stdout, &files.stderr] {
            // Programs a task starts get the files as their 1 and 2, not under these numbers.
            let _ = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC);
        }
        let saved_stdout = rustix::io::fcntl_dupfd_cloexec(io::stdout().as_fd(), 3).ok()?;
        let saved_stderr = rustix::io::fcntl_dupfd_cloexec(io::stderr().as_fd(), 3).ok()?;
        Some(Capture {
            files,
            saved_stdout,
            saved_stderr,
            limit,
        })
    }

    /// Empties the files and points descriptors 1 and 2 at them.
    pub(crate) fn begin(&mut self) -> io::Result<()> {
        let _ = io::stdout().flush();
        for fd in [&self.files.stdout, &self.files.stderr] {
            ftruncate(fd, 0)?;
            seek(fd, SeekFrom::Start(0))?;
        }
        redirect(&self.files.stdout, Stdio::Out)?;
        if let Err(e) = redirect(&self.files.stderr, Stdio::Err) {
            let _ = redirect(&self.saved_stdout, Stdio::Out);
            return Err(e);
        }
        Ok(())
    }

    /// Points 1 and 2 back at the worker's own stdout and stderr and reads what the task wrote.
    pub(crate) fn end(&mut self) -> Output {
        let _ = io::stdout().flush();
        let _ = redirect(&self.saved_stdout, Stdio::Out);
        let _ = redirect(&self.saved_stderr, Stdio::Err);
        self.files.read(self.limit)
    }
}

/// Descriptor 1 or 2.
#[derive(Clone, Copy)]
enum Stdio {
    Out,
    Err,
}

/// `dup2(from, 1 or 2)`, retried on `EINTR`.
fn redirect(from: &OwnedFd, to: Stdio) -> io::Result<()> {
    loop {
        let placed = match to {
            Stdio::Out => rustix::stdio::dup2_stdout(from),
            Stdio::Err => rustix::stdio::dup2_stderr(from),
        };
        match placed {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_read_back_cut_at_the_limit_with_the_full_length() {
        let files = Files::create().expect("memfd");
        rustix::io::write(&files.stdout, b"hello, world").unwrap();
        let out = files.read(5);
        assert_eq!(out.stdout, b"hello");
        assert_eq!(out.stdout_len, 12);
        assert_eq!((out.stderr.len(), out.stderr_len), (0, 0));
        // The offset moved with the write; `read` does not depend on it.
        assert_eq!(files.read(100).stdout, b"hello, world");
    }
}
