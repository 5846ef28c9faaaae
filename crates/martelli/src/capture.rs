//! What a process task wrote to stdout and stderr, captured per task:
//! [`Pool::submit_task_captured`](crate::Pool::submit_task_captured) resolves to a [`Captured`].

use crate::backend::Sink;
use crate::cancel::CancelToken;
use crate::error::{TaskError, TaskResult};
use crate::future::Promise;
use std::borrow::Cow;
use std::time::Duration;

/// The default limit of captured bytes per stream and task (1 MiB).
pub(crate) const DEFAULT_CAPTURE_LIMIT: usize = 1 << 20;

/// What a task wrote to one output stream: the first bytes (up to the pool's
/// [`max_captured_output`](crate::PoolBuilder::max_captured_output)), and how many it wrote in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapturedStream {
    bytes: Vec<u8>,
    written: u64,
}

impl CapturedStream {
    pub(crate) fn new(bytes: Vec<u8>, written: u64) -> CapturedStream {
        let written = written.max(bytes.len() as u64);
        CapturedStream { bytes, written }
    }

    /// The bytes captured.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes captured, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes)
    }

    /// The bytes captured, taken out.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// How many bytes the task wrote to the stream in all.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// True when the task wrote more than was kept: [`bytes`](CapturedStream::bytes) is the
    /// beginning of what it wrote.
    pub fn is_truncated(&self) -> bool {
        self.written > self.bytes.len() as u64
    }
}

/// A process task's outcome and what it wrote to stdout and stderr while it ran.
///
/// The output is there whatever the outcome: a value, an error, a panic (the panic message is on
/// `stderr`), a timeout or a cancel (what it wrote until it was killed), a crash (what reached the
/// stream before the worker died; output still in the task's own buffers is lost with it).
#[derive(Debug)]
#[non_exhaustive]
pub struct Captured<T> {
    /// How the task ended.
    pub outcome: TaskResult<T>,
    /// What it wrote to stdout, including the stdout of programs it started.
    pub stdout: CapturedStream,
    /// What it wrote to stderr.
    pub stderr: CapturedStream,
}

impl<T> Captured<T> {
    /// The value, or the way the task ended without one (the output is dropped).
    pub fn into_result(self) -> TaskResult<T> {
        self.outcome
    }
}

/// The typed end of a captured task sent to a worker process: it keeps the output the worker sends
/// before the answer and resolves the future with both.
pub(crate) struct CapturedSink<T> {
    promise: Promise<Captured<T>>,
    timeout: Option<Duration>,
    decode: fn(&[u8]) -> TaskResult<T>,
    stdout: CapturedStream,
    stderr: CapturedStream,
}

impl<T> CapturedSink<T> {
    pub(crate) fn new(
        promise: Promise<Captured<T>>,
        timeout: Option<Duration>,
        decode: fn(&[u8]) -> TaskResult<T>,
    ) -> CapturedSink<T> {
        CapturedSink {
            promise,
            timeout,
            decode,
            stdout: CapturedStream::default(),
            stderr: CapturedStream::default(),
        }
    }
}

impl<T: Send + 'static> Sink for CapturedSink<T> {
    fn start(&self) -> bool {
        self.promise.start()
    }

    fn token(&self) -> &CancelToken {
        self.promise.token()
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    fn captures(&self) -> bool {
        true
    }

    fn capture(&mut self, stdout: CapturedStream, stderr: CapturedStream) {
        self.stdout = stdout;
        self.stderr = stderr;
    }

    fn complete(self: Box<Self>, outcome: Result<&[u8], TaskError>) {
        let CapturedSink {
            promise,
            decode,
            stdout,
            stderr,
            ..
        } = *self;
        let outcome = outcome.and_then(decode);
        promise.complete(Ok(Captured {
            outcome,
            stdout,
            stderr,
        }));
    }
}
