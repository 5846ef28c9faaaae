//! [`Inbox`]: frames read from a stream socket as they arrive.

use super::{FrameError, PREFIX};
use rustix::net::RecvFlags;
use std::io;
use std::os::fd::BorrowedFd;

/// How many bytes an [`Inbox`] asks for at once when no longer frame is pending.
const READ_CHUNK: usize = 64 * 1024;

/// Buffers bigger than this are given back once empty (a huge frame's buffer is not kept for ever).
const KEEP_INBOX: usize = 16 << 20;

/// Frames read from a stream socket as they arrive, without blocking unless asked to: a pool reads
/// many answers with one system call, and a worker looks at what is waiting in its channel (a
/// `Cancel`) before it starts the next task.
///
/// Rule 1 holds: a length prefix above the maximum is refused before anything is allocated for it,
/// and the buffer never holds more than one frame of the maximum size plus one read's worth.
#[derive(Debug)]
pub(crate) struct Inbox {
    pub(super) buf: Vec<u8>,
    /// The first byte not handed out by [`Inbox::next`].
    start: usize,
    /// Where [`Inbox::scan`] resumes: the end of the last frame it saw (at or after `start`).
    scanned: usize,
    max: usize,
}

impl Inbox {
    /// An empty inbox for frames of at most `max` bytes.
    pub(crate) fn new(max: usize) -> Inbox {
        Inbox {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            max,
        }
    }

    /// Reads once from `fd` into the buffer and returns how many bytes came; `Ok(0)` is end of file.
    /// When `wait` is false, a channel with nothing to read gives `ErrorKind::WouldBlock` at once.
    pub(crate) fn fill(&mut self, fd: BorrowedFd<'_>, wait: bool) -> io::Result<usize> {
        self.make_room()?;
        let flags = if wait {
            RecvFlags::empty()
        } else {
            RecvFlags::DONTWAIT
        };
        loop {
            match rustix::net::recv(fd, rustix::buffer::spare_capacity(&mut self.buf), flags) {
                Ok((n, _)) => return Ok(n),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Appends bytes as if they had been read (tests, the fuzz target).
    #[cfg(any(test, fuzzing))]
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Makes room for the next read: drops consumed bytes, and reserves what the pending frame
    /// still needs (checked against the maximum first), or one chunk.
    fn make_room(&mut self) -> io::Result<()> {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            self.scanned = 0;
            if self.buf.capacity() > KEEP_INBOX {
                self.buf = Vec::new();
            }
        }
        let pending = self.buf.len() - self.start;
        let frame = match announced(&self.buf[self.start..]) {
            Some(len) if len <= self.max => PREFIX + len,
            // Refused by `next`; read no more into it.
            Some(_) => return Ok(()),
            None => 0,
        };
        let want = frame
            .saturating_sub(pending)
            .max(READ_CHUNK.min(PREFIX + self.max));
        if self.buf.capacity() - self.buf.len() >= want {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf
            .try_reserve(want)
            .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))
    }

    /// The next complete frame's envelope, consumed; `None` until one has fully arrived.
    pub(crate) fn next(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let Some(end) = complete_at(&self.buf, self.start, self.max)? else {
            return Ok(None);
        };
        let from = self.start + PREFIX;
        self.start = end;
        self.scanned = self.scanned.max(end);
        Ok(Some(&self.buf[from..end]))
    }

    /// True when the bytes waiting end with part of a frame: more of it is on its way.
    pub(crate) fn partial_frame(&self) -> bool {
        let Some(end) = self.last_complete_end() else {
            return false;
        };
        end < self.buf.len()
    }

    /// The end of the last complete frame from `scanned` on (or `scanned` itself); `None` when a
    /// refused length prefix is in the way.
    fn last_complete_end(&self) -> Option<usize> {
        let mut at = self.scanned.max(self.start);
        while let Some(end) = complete_at(&self.buf, at, self.max).ok()? {
            at = end;
        }
        Some(at)
    }

    /// True when a complete frame is waiting for [`Inbox::next`].
    pub(crate) fn has_frame(&self) -> Result<bool, FrameError> {
        complete_at(&self.buf, self.start, self.max).map(|end| end.is_some())
    }

    /// Shows `look` every complete frame not shown before (ahead of [`Inbox::next`]), without
    /// consuming them.
    pub(crate) fn scan(&mut self, mut look: impl FnMut(&[u8])) -> Result<(), FrameError> {
        while let Some(end) = complete_at(&self.buf, self.scanned, self.max)? {
            look(&self.buf[self.scanned + PREFIX..end]);
            self.scanned = end;
        }
        Ok(())
    }

    /// Bytes read and not yet handed out by [`Inbox::next`].
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// The length a complete prefix at the front of `bytes` announces.
fn announced(bytes: &[u8]) -> Option<usize> {
    let prefix: [u8; PREFIX] = bytes.get(..PREFIX)?.try_into().ok()?;
    Some(u32::from_le_bytes(prefix) as usize)
}

/// The end of the frame that starts at `at`, when it has fully arrived.
fn complete_at(buf: &[u8], at: usize, max: usize) -> Result<Option<usize>, FrameError> {
    let rest = buf.get(at..).unwrap_or_default();
    let Some(len) = announced(rest) else {
        return Ok(None);
    };
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok((rest.len() >= PREFIX + len).then_some(at + PREFIX + len))
}
