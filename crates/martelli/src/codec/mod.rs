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
//!
//! `mod.rs` writes and decodes frames; `inbox.rs` reads them from a stream socket as they arrive;
//! `tests.rs` holds the property tests.

#[cfg(target_os = "linux")]
mod inbox;
#[cfg(test)]
mod tests;

#[cfg(target_os = "linux")]
pub(crate) use inbox::Inbox;
use serde::{Deserialize, Serialize};

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
    Io(#[from] std::io::Error),
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
