//! Property tests of the frame format: the rules of the module documentation.

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
