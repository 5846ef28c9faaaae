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

use serde::{Deserialize, Serialize};
use std::io::{self, Read};

/// The protocol version, the first byte of every envelope. Bump it on any change to [`Header`].
pub(crate) const PROTOCOL: u8 = 1;

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
}

/// What is wrong with a frame.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The other side closed the channel between frames.
    #[error("the channel was closed")]
    Closed,
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
    buf.extend_from_slice(&[0; PREFIX]);
    buf.push(PROTOCOL);
    postcard::to_io(header, &mut *buf)
        .map(drop)
        .map_err(|e| FrameError::Malformed(format!("could not encode a header: {e}")))
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
    crate::chaos::point();
    let len = buf.len() - PREFIX;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge {
        len,
        max: u32::MAX as usize,
    })?;
    buf[..PREFIX].copy_from_slice(&prefix.to_le_bytes());
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

/// Reads one frame's envelope into `buf` (replacing its contents). Allocates at most `max` bytes
/// (rule 1).
pub(crate) fn read_frame(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<(), FrameError> {
    crate::chaos::point();
    let mut prefix = [0u8; PREFIX];
    let mut got = 0;
    while got < PREFIX {
        match r.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => {
                return Err(FrameError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the channel closed inside a frame's length prefix",
                )));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_le_bytes(prefix) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    buf.clear();
    buf.try_reserve_exact(len)
        .map_err(|e| FrameError::Io(io::Error::new(io::ErrorKind::OutOfMemory, e)))?;
    r.take(len as u64).read_to_end(buf)?;
    if buf.len() != len {
        return Err(FrameError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the channel closed inside a frame ({} of {len} bytes arrived)",
                buf.len()
            ),
        )));
    }
    Ok(())
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
    let mut reader = io::Cursor::new(data);
    let mut buf = Vec::new();
    // Frame after frame, as a pool reads its worker's channel, until the bytes run out or are refused.
    while read_frame(&mut reader, &mut buf, MAX).is_ok() {
        assert!(
            buf.len() <= MAX,
            "rule 1: a frame larger than the maximum was read"
        );
        if let Ok((header, body)) = decode(&buf) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    fn round_trip(header: Header<'_>, body: &[u8]) {
        let frame = frame(&header, Some(body), DEFAULT_MAX_FRAME).expect("encodes");
        let mut buf = Vec::new();
        read_frame(&mut Cursor::new(&frame), &mut buf, DEFAULT_MAX_FRAME).expect("reads");
        let (got, rest) = decode(&buf).expect("decodes");
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
        let mut input = Vec::from(u32::MAX.to_le_bytes());
        input.extend_from_slice(b"x");
        let mut buf = Vec::new();
        match read_frame(&mut Cursor::new(&input), &mut buf, 1024) {
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!((len, max), (u32::MAX as usize, 1024));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(
            buf.capacity(),
            0,
            "nothing may be allocated for a refused frame"
        );
    }

    #[test]
    fn an_oversized_frame_is_refused_when_built() {
        let err = frame(&Header::Value { id: 1 }, Some(&vec![0u8; 100]), 50).unwrap_err();
        assert!(err.to_string().contains("max_frame_size"), "{err}");
    }

    #[test]
    fn truncated_frames_and_closed_channels_are_told_apart() {
        let mut buf = Vec::new();
        assert!(matches!(
            read_frame(&mut Cursor::new(b""), &mut buf, 100),
            Err(FrameError::Closed)
        ));
        assert!(matches!(
            read_frame(&mut Cursor::new(&[5, 0]), &mut buf, 100),
            Err(FrameError::Io(_))
        ));
        let err = read_frame(&mut Cursor::new(&[5, 0, 0, 0, 1, 2]), &mut buf, 100).unwrap_err();
        assert!(err.to_string().contains("2 of 5 bytes"), "{err}");
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
            let mut cursor = Cursor::new(&input);
            let mut buf = Vec::new();
            while let Ok(()) = read_frame(&mut cursor, &mut buf, max) {
                prop_assert!(buf.len() <= max);
                prop_assert!(buf.capacity() <= max.max(8));
                let _ = decode(&buf);
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
            let mut buf = Vec::new();
            read_frame(&mut Cursor::new(&frame), &mut buf, DEFAULT_MAX_FRAME).unwrap();
            let (got, rest) = decode(&buf).unwrap();
            prop_assert_eq!(got, header);
            let back: Vec<u8> = postcard::from_bytes(rest).unwrap();
            prop_assert_eq!(back, body);
        }

        #[test]
        fn a_cut_frame_is_an_error(body in proptest::collection::vec(any::<u8>(), 1..512), cut in any::<prop::sample::Index>()) {
            let frame = frame(&Header::Value { id: 3 }, Some(&body), DEFAULT_MAX_FRAME).unwrap();
            let at = cut.index(frame.len() - 1);
            let mut buf = Vec::new();
            prop_assert!(read_frame(&mut Cursor::new(&frame[..at]), &mut buf, DEFAULT_MAX_FRAME).is_err());
        }
    }
}
