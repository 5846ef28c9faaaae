//! The wire format between a pool and its worker processes: length-prefixed frames, each a versioned
//! envelope of a small header and a payload of serde values encoded with postcard.
//!
//! ```text
//! frame   = length:u32 (little-endian) · envelope           length = size of envelope ≤ max frame
//! envelope= version:u8 · header (postcard) · body (the rest: a postcard value, or nothing)
//! ```
//!
//! Rules the decoder keeps (the property tests at the bottom check them):
//! 1. It never allocates more than the configured maximum frame size, whatever the length prefix
//!    says: an oversized length is refused before any allocation.
//! 2. It never panics on any input: a short, truncated, mis-versioned or undecodable frame is a
//!    [`FrameError`] that says what was wrong.
//! 3. The body is handed out as a borrowed slice of the frame: a megabyte argument is copied once from
//!    the socket into the frame buffer and decoded from there.

#[cfg(target_os = "linux")]
use rustix::net::RecvFlags;
use serde::{Deserialize, Serialize};
use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::BorrowedFd;

/// The protocol version, the first byte of every envelope. Bump it on any change to [`Header`].
pub(crate) const PROTOCOL: u8 = 2;

/// The default largest frame (1 GiB): big enough for any sane argument, small enough that a
/// corrupted length prefix cannot make a process allocate its address space away.
pub(crate) const DEFAULT_MAX_FRAME: usize = 1 << 30;

/// Bytes before the envelope: the length prefix.
const PREFIX: usize = 4;

/// The header of a frame. The body that follows depends on the variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Header<'a> {
    /// Worker → pool, once, first: who it is and what it was built as. No body.
    Hello {
        /// The worker's process id.
        pid: u32,
        /// The task registry's fingerprint (martelli version, every task's name and signature).
        fingerprint: u64,
        /// Device and inode of the worker's executable.
        exe: (u64, u64),
    },
    /// Pool → worker: run task `task`. Body: the arguments.
    Run {
        /// The task's id (its `TaskId`), echoed in the answer.
        id: u64,
        /// The registered name of the task.
        #[serde(borrow)]
        task: &'a str,
    },
    /// Pool → worker: run task `task` on each of a batch of arguments (a chunk of a map). Body: a
    /// sequence of arguments. The answer is a `Value` whose body is a sequence of item outcomes.
    RunBatch {
        /// The batch's id, echoed in the answer.
        id: u64,
        /// The registered name of the task.
        #[serde(borrow)]
        task: &'a str,
    },
    /// Pool → worker: run task `task` with its stdout and stderr captured (see [`Header::Output`]).
    /// Body: the arguments.
    RunCaptured {
        /// The task's id, echoed in the answer.
        id: u64,
        /// The registered name of the task.
        #[serde(borrow)]
        task: &'a str,
    },
    /// Pool → worker: do not start task `id` if it has not started (it was cancelled while it waited
    /// in the worker's channel). Sent only after the task's own `Run` frame. No body. A worker that
    /// has not started the task answers it with an `Error` of kind `Cancelled`; one that has, ignores
    /// this frame.
    Cancel {
        /// The task's id.
        id: u64,
    },
    /// Worker → pool, just before the answer of a `RunCaptured` task: what the task wrote to its
    /// stdout and stderr, each cut at the pool's limit. No body.
    Output {
        /// The task's id.
        id: u64,
        /// How many bytes the task wrote to stdout (more than `stdout.len()` when cut).
        stdout_len: u64,
        /// How many bytes the task wrote to stderr.
        stderr_len: u64,
        /// The first bytes of its stdout.
        #[serde(borrow)]
        stdout: &'a [u8],
        /// The first bytes of its stderr.
        #[serde(borrow)]
        stderr: &'a [u8],
    },
    /// Worker → pool: the task returned a value. Body: the value.
    Value {
        /// The task's id.
        id: u64,
    },
    /// Worker → pool: the task did not return a value. No body.
    Error {
        /// The task's id.
        id: u64,
        /// What went wrong.
        kind: ErrorKind,
        /// The message of the error or panic.
        #[serde(borrow)]
        message: &'a str,
    },
}

/// Why a task run by a worker returned no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ErrorKind {
    /// The task returned `Err`.
    Failed,
    /// The task panicked.
    Panicked,
    /// No task has that name in the worker.
    UnknownTask,
    /// The arguments did not decode.
    BadArgs,
    /// The result did not encode.
    BadResult,
    /// The pool cancelled the task before the worker started it (a `Cancel` frame): it did not run.
    Cancelled,
}

/// What is wrong with a frame.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The length prefix is above the limit; nothing was allocated for it.
    #[error(
        "a frame of {len} bytes is larger than the maximum of {max} bytes (raise \
         PoolBuilder::max_frame_size, or send less data per task)"
    )]
    TooLarge {
        /// The length the prefix announced.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The frame speaks another protocol version.
    #[error(
        "the frame speaks protocol version {got}, this build speaks {want} (the worker program is \
         a different martelli build; rebuild it with this one)"
    )]
    Version {
        /// The version in the frame.
        got: u8,
        /// This build's version.
        want: u8,
    },
    /// The frame is empty, or its header does not decode.
    #[error("a malformed frame: {0}")]
    Malformed(String),
    /// Reading or writing failed (including a frame cut short by the other side's exit).
    #[error("the channel failed: {0}")]
    Io(#[from] io::Error),
}

/// Starts a frame with `header` in `buf` (cleared first); append the body, then call [`finish`].
pub(crate) fn begin(buf: &mut Vec<u8>, header: &Header<'_>) -> Result<(), FrameError> {
    buf.clear();
    begin_at(buf, header).map(drop)
}

/// Starts a frame with `header` after what `buf` holds, and returns where it starts; append the
/// body, then call [`finish_at`] with that position. Several frames in one buffer go out with one
/// write.
pub(crate) fn begin_at(buf: &mut Vec<u8>, header: &Header<'_>) -> Result<usize, FrameError> {
    let at = buf.len();
    buf.extend_from_slice(&[0; PREFIX]);
    buf.push(PROTOCOL);
    match postcard::to_io(header, &mut *buf) {
        Ok(_) => Ok(at),
        Err(e) => {
            buf.truncate(at);
            Err(FrameError::Malformed(format!(
                "could not encode a header: {e}"
            )))
        }
    }
}

/// Appends `value` as the body of the frame being built.
pub(crate) fn push_body<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) -> Result<(), String> {
    let start = buf.len();
    postcard::to_io(value, &mut *buf).map(drop).map_err(|e| {
        buf.truncate(start);
        e.to_string()
    })
}

/// Writes the length prefix of the frame in `buf`, checking it against `max`.
pub(crate) fn finish(buf: &mut [u8], max: usize) -> Result<(), FrameError> {
    finish_at(buf, 0, max)
}

/// Writes the length prefix of the frame that starts at `at` in `buf` and runs to its end.
pub(crate) fn finish_at(buf: &mut [u8], at: usize, max: usize) -> Result<(), FrameError> {
    crate::chaos::point();
    let len = buf.len() - at - PREFIX;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge {
        len,
        max: u32::MAX as usize,
    })?;
    buf[at..at + PREFIX].copy_from_slice(&prefix.to_le_bytes());
    Ok(())
}

/// Builds a whole frame: header and optional body.
#[cfg(test)]
pub(crate) fn frame<T: Serialize + ?Sized>(
    header: &Header<'_>,
    body: Option<&T>,
    max: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut buf = Vec::new();
    begin(&mut buf, header)?;
    if let Some(body) = body {
        push_body(&mut buf, body).map_err(FrameError::Malformed)?;
    }
    finish(&mut buf, max)?;
    Ok(buf)
}

#[cfg(target_os = "linux")]
/// How many bytes an [`Inbox`] asks for at once when no longer frame is pending.
const READ_CHUNK: usize = 64 * 1024;

#[cfg(target_os = "linux")]
/// Buffers bigger than this are given back once empty (a huge frame's buffer is not kept for ever).
const KEEP_INBOX: usize = 16 << 20;

#[cfg(target_os = "linux")]
/// Frames read from a stream socket as they arrive, without blocking unless asked to: a pool reads
/// many answers with one system call, and a worker looks at what is waiting in its channel (a
/// `Cancel`) before it starts the next task.
///
/// Rule 1 holds: a length prefix above the maximum is refused before anything is allocated for it,
/// and the buffer never holds more than one frame of the maximum size plus one read's worth.
#[derive(Debug)]
pub(crate) struct Inbox {
    buf: Vec<u8>,
    /// The first byte not handed out by [`Inbox::next`].
    start: usize,
    /// Where [`Inbox::scan`] resumes: the end of the last frame it saw (at or after `start`).
    scanned: usize,
    max: usize,
}

#[cfg(target_os = "linux")]
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

#[cfg(target_os = "linux")]
/// The length a complete prefix at the front of `bytes` announces.
fn announced(bytes: &[u8]) -> Option<usize> {
    let prefix: [u8; PREFIX] = bytes.get(..PREFIX)?.try_into().ok()?;
    Some(u32::from_le_bytes(prefix) as usize)
}

#[cfg(target_os = "linux")]
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

/// The task a whole `Run`, `RunCaptured` or `RunBatch` frame (length prefix included) carries, and
/// whether it is a batch; `None` for any other frame.
pub(crate) fn task_of(frame: &[u8]) -> Option<(bool, &str)> {
    match decode(frame.get(PREFIX..)?).ok()?.0 {
        Header::Run { task, .. } | Header::RunCaptured { task, .. } => Some((false, task)),
        Header::RunBatch { task, .. } => Some((true, task)),
        _ => None,
    }
}

/// Splits an envelope into its header and body (rule 2: never panics).
pub(crate) fn decode(envelope: &[u8]) -> Result<(Header<'_>, &[u8]), FrameError> {
    let Some((&version, rest)) = envelope.split_first() else {
        return Err(FrameError::Malformed("the frame is empty".into()));
    };
    if version != PROTOCOL {
        return Err(FrameError::Version {
            got: version,
            want: PROTOCOL,
        });
    }
    postcard::take_from_bytes::<Header<'_>>(rest)
        .map_err(|e| FrameError::Malformed(format!("the header does not decode: {e}")))
}

/// Entry point for the fuzz target `fuzz/fuzz_targets/ipc_frame.rs` (built only with `--cfg fuzzing`).
#[cfg(fuzzing)]
#[doc(hidden)]
pub fn fuzz_frame(data: &[u8]) {
    const MAX: usize = 1 << 20;
    // The bytes arrive in two reads cut at a point the data chooses, as a socket may cut them.
    let cut = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut inbox = Inbox::new(MAX);
    for part in [&data[..cut], &data[cut..]] {
        inbox.push(part);
        let mut scanned = Vec::new();
        if inbox.scan(|envelope| scanned.push(envelope.len())).is_err() {
            return;
        }
        // Frame after frame, as a pool reads its worker's channel, until the bytes run out or are
        // refused.
        loop {
            let envelope = match inbox.next() {
                Ok(Some(envelope)) => envelope,
                Ok(None) | Err(_) => break,
            };
            assert!(
                envelope.len() <= MAX,
                "rule 1: a frame larger than the maximum was read"
            );
            if let Ok((header, body)) = decode(envelope) {
                // A header that decodes encodes back to the same header.
                let mut again = Vec::new();
                begin(&mut again, &header).expect("a decoded header encodes");
                again.extend_from_slice(body);
                finish(&mut again, MAX).expect("within the maximum");
                let (back, back_body) = decode(&again[PREFIX..]).expect("an encoded frame decodes");
                assert_eq!(back, header);
                assert_eq!(back_body, body);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every frame in `bytes`, read through an inbox, until one is incomplete or refused.
    fn frames(bytes: &[u8], max: usize) -> (Vec<Vec<u8>>, Option<FrameError>) {
        let mut inbox = Inbox::new(max);
        inbox.push(bytes);
        let mut got = Vec::new();
        loop {
            match inbox.next() {
                Ok(Some(envelope)) => got.push(envelope.to_vec()),
                Ok(None) => return (got, None),
                Err(e) => return (got, Some(e)),
            }
        }
    }

    fn round_trip(header: Header<'_>, body: &[u8]) {
        let frame = frame(&header, Some(body), DEFAULT_MAX_FRAME).expect("encodes");
        let (read, error) = frames(&frame, DEFAULT_MAX_FRAME);
        assert!(error.is_none(), "{error:?}");
        let (got, rest) = decode(&read[0]).expect("decodes");
        assert_eq!(got, header);
        let body_back: Vec<u8> = postcard::from_bytes(rest).expect("body decodes");
        assert_eq!(body_back, body);
    }

    #[test]
    fn every_header_round_trips() {
        round_trip(
            Header::Hello {
                pid: 42,
                fingerprint: u64::MAX,
                exe: (1, 2),
            },
            b"",
        );
        round_trip(
            Header::Run {
                id: 7,
                task: "app::resize",
            },
            b"args",
        );
        round_trip(Header::Value { id: 7 }, &[0xff; 1000]);
        round_trip(
            Header::RunCaptured {
                id: 8,
                task: "app::report",
            },
            b"args",
        );
        round_trip(Header::Cancel { id: 8 }, b"");
        round_trip(
            Header::Output {
                id: 8,
                stdout_len: 12,
                stderr_len: 1 << 40,
                stdout: b"hello, world",
                stderr: b"cut",
            },
            b"",
        );
        round_trip(
            Header::Error {
                id: 9,
                kind: ErrorKind::Panicked,
                message: "boom",
            },
            b"",
        );
    }

    #[test]
    fn an_oversized_length_is_refused_before_allocating() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let mut input = Vec::from(u32::MAX.to_le_bytes());
        input.extend_from_slice(b"x");
        std::io::Write::write_all(&mut &theirs, &input).expect("write");
        let mut inbox = Inbox::new(1024);
        use std::os::fd::AsFd;
        assert_eq!(inbox.fill(ours.as_fd(), true).expect("reads"), 5);
        match inbox.next() {
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!((len, max), (u32::MAX as usize, 1024));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // More reads do not grow the buffer for the refused frame.
        std::io::Write::write_all(&mut &theirs, &[0; 4096]).expect("write");
        let _ = inbox.fill(ours.as_fd(), false);
        assert!(
            inbox.buf.capacity() <= PREFIX + 1024,
            "only one read's worth may be allocated, not {}",
            inbox.buf.capacity()
        );
    }

    #[test]
    fn frames_cut_anywhere_come_out_whole_and_in_order() {
        let mut stream = Vec::new();
        for id in 0..50u64 {
            let frame = frame(
                &Header::Value { id },
                Some(&vec![id as u8; id as usize * 7]),
                4096,
            )
            .expect("encodes");
            stream.extend_from_slice(&frame);
        }
        for step in [1, 3, 64, 1000] {
            let mut inbox = Inbox::new(4096);
            let mut ids = Vec::new();
            for piece in stream.chunks(step) {
                inbox.push(piece);
                while let Some(envelope) = inbox.next().expect("valid") {
                    match decode(envelope).expect("decodes").0 {
                        Header::Value { id } => ids.push(id),
                        other => panic!("{other:?}"),
                    }
                }
            }
            assert_eq!(ids, (0..50).collect::<Vec<_>>(), "pieces of {step}");
            assert_eq!(inbox.buffered(), 0);
        }
    }

    #[test]
    fn scan_sees_frames_ahead_once_without_consuming_them() {
        let mut stream = Vec::new();
        for header in [
            Header::Run { id: 1, task: "t" },
            Header::Run { id: 2, task: "t" },
            Header::Cancel { id: 2 },
        ] {
            stream.extend_from_slice(&frame::<()>(&header, None, 1024).expect("encodes"));
        }
        let mut inbox = Inbox::new(1024);
        inbox.push(&stream[..stream.len() - 2]);
        let mut seen = Vec::new();
        let mut look = |e: &[u8]| seen.push(decode(e).map(|(h, _)| format!("{h:?}")).unwrap());
        inbox.scan(&mut look).expect("valid");
        assert_eq!(seen.len(), 2, "the cut Cancel is not complete yet");
        inbox.push(&stream[stream.len() - 2..]);
        let mut later = Vec::new();
        inbox
            .scan(|e| later.push(decode(e).map(|(h, _)| format!("{h:?}")).unwrap()))
            .expect("valid");
        assert_eq!(later, vec!["Cancel { id: 2 }".to_owned()]);
        let mut ids = 0;
        while inbox.next().expect("valid").is_some() {
            ids += 1;
        }
        assert_eq!(ids, 3, "scan consumed nothing");
    }

    #[test]
    fn an_oversized_frame_is_refused_when_built() {
        let err = frame(&Header::Value { id: 1 }, Some(&vec![0u8; 100]), 50).unwrap_err();
        assert!(err.to_string().contains("max_frame_size"), "{err}");
    }

    #[test]
    fn a_partial_frame_at_the_end_is_told() {
        let one = frame(&Header::Value { id: 1 }, Some(&[1u8; 10]), 100).expect("encodes");
        let mut inbox = Inbox::new(100);
        assert!(
            !inbox.partial_frame(),
            "nothing at all is not part of a frame"
        );
        inbox.push(&one);
        assert!(!inbox.partial_frame());
        inbox.push(&one[..3]);
        assert!(inbox.partial_frame(), "a cut length prefix");
        inbox.push(&one[3..6]);
        assert!(inbox.partial_frame(), "a cut body");
        inbox.push(&one[6..]);
        assert!(!inbox.partial_frame());
        assert!(inbox.next().expect("valid").is_some());
        assert!(inbox.next().expect("valid").is_some());
        assert!(!inbox.partial_frame());
    }

    #[test]
    fn an_incomplete_frame_is_not_handed_out() {
        assert_eq!(frames(b"", 100).0.len(), 0);
        assert_eq!(frames(&[5, 0], 100).0.len(), 0);
        let (got, error) = frames(&[5, 0, 0, 0, 1, 2], 100);
        assert!(got.is_empty() && error.is_none());
    }

    #[test]
    fn another_protocol_version_is_named() {
        let err = decode(&[PROTOCOL + 1, 0, 0]).unwrap_err();
        assert!(matches!(err, FrameError::Version { .. }), "{err}");
        assert!(
            err.to_string().contains("different martelli build"),
            "{err}"
        );
        assert!(matches!(decode(&[]), Err(FrameError::Malformed(_))));
        assert!(matches!(
            decode(&[PROTOCOL, 200]),
            Err(FrameError::Malformed(_))
        ));
    }

    proptest! {
        // Rules 1 and 2: any bytes at all give a frame or an error — no panic, no allocation above
        // the limit.
        #[test]
        fn arbitrary_bytes_never_panic_or_overallocate(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            let max = 256;
            let mut inbox = Inbox::new(max);
            inbox.push(&input);
            let _ = inbox.scan(|e| { let _ = decode(e); });
            while let Ok(Some(envelope)) = inbox.next() {
                prop_assert!(envelope.len() <= max);
                let _ = decode(envelope);
            }
        }

        #[test]
        fn arbitrary_envelopes_never_panic(envelope in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut envelope = envelope;
            if let Some(first) = envelope.first_mut() {
                *first = PROTOCOL; // get past the version byte, into the header decoder
            }
            let _ = decode(&envelope);
        }

        #[test]
        fn run_frames_round_trip(id in any::<u64>(), task in proptest::collection::vec(any::<char>(), 0..40).prop_map(String::from_iter), body in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let header = Header::Run { id, task: &task };
            let frame = frame(&header, Some(&body), DEFAULT_MAX_FRAME).unwrap();
            let (read, _) = frames(&frame, DEFAULT_MAX_FRAME);
            let (got, rest) = decode(&read[0]).unwrap();
            prop_assert_eq!(got, header);
            let back: Vec<u8> = postcard::from_bytes(rest).unwrap();
            prop_assert_eq!(back, body);
        }

        #[test]
        fn output_and_cancel_frames_round_trip(id in any::<u64>(), out in proptest::collection::vec(any::<u8>(), 0..2048), err in proptest::collection::vec(any::<u8>(), 0..2048), extra in any::<u32>()) {
            let output = Header::Output {
                id,
                stdout_len: out.len() as u64 + u64::from(extra),
                stderr_len: err.len() as u64,
                stdout: &out,
                stderr: &err,
            };
            let mut stream = frame::<()>(&output, None, DEFAULT_MAX_FRAME).unwrap();
            stream.extend(frame::<()>(&Header::Cancel { id }, None, DEFAULT_MAX_FRAME).unwrap());
            let (read, error) = frames(&stream, DEFAULT_MAX_FRAME);
            prop_assert!(error.is_none());
            prop_assert_eq!(read.len(), 2);
            prop_assert_eq!(decode(&read[0]).unwrap().0, output);
            prop_assert_eq!(decode(&read[1]).unwrap().0, Header::Cancel { id });
        }

        #[test]
        fn a_cut_frame_is_an_error(body in proptest::collection::vec(any::<u8>(), 1..512), cut in any::<prop::sample::Index>()) {
            let frame = frame(&Header::Value { id: 3 }, Some(&body), DEFAULT_MAX_FRAME).unwrap();
            let at = cut.index(frame.len() - 1);
            prop_assert!(frames(&frame[..at], DEFAULT_MAX_FRAME).0.is_empty());
        }
    }
}
