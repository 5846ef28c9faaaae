//! The messages on the wire: the task envelope a client adds to a stream and the result envelope a
//! worker pushes to the client's reply list. Both are MessagePack maps with named fields (see
//! `docs/protocol.md`, "Envelopes"); unknown fields are ignored, so a version can grow new optional
//! fields without breaking older readers.

use super::PROTOCOL_VERSION;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The stream entry field that holds the encoded task envelope.
pub(crate) const ENTRY_FIELD: &str = "e";

/// How many attempts a task gets when the producer does not say.
pub(crate) const DEFAULT_MAX_ATTEMPTS: u32 = 3;

fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}

/// One task on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskEnvelope {
    /// The protocol version.
    pub(crate) v: u32,
    /// Unique task id (the producer makes it; a UUID in this client).
    pub(crate) id: String,
    /// The registered task name.
    pub(crate) task: String,
    /// The arguments, opaque to the protocol (MessagePack for typed tasks).
    #[serde(with = "serde_bytes")]
    pub(crate) payload: Vec<u8>,
    /// The list the result is pushed to; none when nobody waits for the result.
    #[serde(default)]
    pub(crate) reply: Option<String>,
    /// Unix milliseconds after which the task must not start.
    #[serde(default)]
    pub(crate) deadline: Option<u64>,
    /// Deliveries allowed before the task goes to the dead-letter stream.
    #[serde(default = "default_max_attempts")]
    pub(crate) max_attempts: u32,
    /// Attempts spent before this stream entry was written (non-zero only on an entry a stopping
    /// worker handed back, or a task its client queued again after it vanished from the broker).
    #[serde(default)]
    pub(crate) attempts: u32,
    /// Whether the caller wants a `started` note on `reply` when a worker starts the task (an
    /// optional key of version 1: older workers ignore it and send no note).
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) started: bool,
    /// Addition 1: keep the task's record (`{prefix}:task:{id}`) this many ms after it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) keep: Option<u64>,
    /// Addition 2: the retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) retry: Option<Retry>,
    /// Addition 2: retries done so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) retries: u32,
    /// Addition 2: the errors of the runs that were retried, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) errors: Vec<AttemptError>,
    /// Addition 3: the start time (Unix ms) a worker reserved for this task under its name's rate
    /// limit; a task that has one runs without a new reservation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) slot: Option<u64>,
    /// Addition 5: the workflow this task is a member of, and its place in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) flow: Option<FlowRef>,
}

/// Addition 5 (docs/protocol.md, "workflows"): the envelope key `flow`, `{id, i}`: the task is
/// member `i` (from 0) of the workflow whose hash is `{prefix}:flow:{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FlowRef {
    pub(crate) id: String,
    pub(crate) i: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl TaskEnvelope {
    pub(crate) fn encode(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        rmp_serde::to_vec_named(self)
    }

    /// Decodes and checks an envelope; the error says what is wrong with it, for the dead letter.
    pub(crate) fn decode(bytes: &[u8]) -> Result<TaskEnvelope, String> {
        let envelope: TaskEnvelope = rmp_serde::from_slice(bytes)
            .map_err(|e| format!("the envelope is not a valid MessagePack task map: {e}"))?;
        if envelope.v != PROTOCOL_VERSION {
            return Err(format!(
                "unsupported envelope version {} (this worker speaks version {PROTOCOL_VERSION})",
                envelope.v
            ));
        }
        if envelope.id.is_empty() {
            return Err("the envelope has an empty task id".to_owned());
        }
        if envelope.max_attempts == 0 {
            return Err(
                "the envelope allows 0 attempts (max_attempts must be at least 1)".to_owned(),
            );
        }
        Ok(envelope)
    }
}

/// The parts of an envelope that say who waits for it, read from an envelope that is otherwise
/// refused (a version this worker does not speak, `max_attempts` 0), so that its caller can be
/// told instead of waiting for ever.
#[derive(Debug, Deserialize)]
struct Addressed {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    task: Option<String>,
    #[serde(default)]
    reply: Option<String>,
}

impl TaskEnvelope {
    /// A stand-in for a refused envelope that names its task id: its id, task name and reply list,
    /// nothing to run. `None` when even those cannot be read.
    pub(crate) fn addressed(bytes: &[u8]) -> Option<TaskEnvelope> {
        let addressed: Addressed = rmp_serde::from_slice(bytes).ok()?;
        let id = addressed.id.filter(|id| !id.is_empty())?;
        Some(TaskEnvelope {
            v: PROTOCOL_VERSION,
            id,
            task: addressed.task.unwrap_or_default(),
            payload: Vec::new(),
            reply: addressed.reply,
            deadline: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            attempts: 0,
            started: false,
            keep: None,
            retry: None,
            retries: 0,
            errors: Vec::new(),
            slot: None,
            flow: None,
        })
    }
}

/// How a task ended, on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ResultStatus {
    /// The task returned a value: `payload`.
    Ok,
    /// The task returned an error: `error`.
    Failed,
    /// The task panicked: `error` is the panic message.
    Panicked,
    /// The task's deadline passed before it started.
    TimedOut,
    /// The task was dead-lettered (unknown name, too many attempts, oversized): `error` is the reason.
    Lost,
    /// The task was cancelled (its caller wrote a tombstone): before it started, and it did not
    /// run, or while it ran, and it was stopped (its process killed, or its cancel token fired).
    Cancelled,
    /// The process running the task died (a worker that runs tasks on a process pool): `error`
    /// describes the death, `exit_code` or `signal` says how it ended.
    WorkerDied,
    /// Not an outcome: a note that a worker started the task (its `attempts`-th attempt), sent
    /// only to a caller whose envelope asked for it (`started`).
    Started,
    /// Not an outcome: a note that the run ended in an error its retry policy names and that the
    /// task is queued again at `due` (Addition 2).
    Retrying,
    /// A status this build does not know (a newer worker's): a failure with the `error` message.
    #[serde(other)]
    Unknown,
}

impl ResultStatus {
    /// The status as it is written on the wire.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Ok => "ok",
            ResultStatus::Failed => "failed",
            ResultStatus::Panicked => "panicked",
            ResultStatus::TimedOut => "timed_out",
            ResultStatus::Lost => "lost",
            ResultStatus::Cancelled => "cancelled",
            ResultStatus::WorkerDied => "worker_died",
            ResultStatus::Started => "started",
            ResultStatus::Retrying => "retrying",
            ResultStatus::Unknown => "unknown",
        }
    }
}

/// One result on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ResultEnvelope {
    pub(crate) v: u32,
    pub(crate) id: String,
    pub(crate) status: ResultStatus,
    #[serde(default, with = "serde_bytes")]
    pub(crate) payload: Option<Vec<u8>>,
    #[serde(default)]
    pub(crate) error: Option<String>,
    /// The attempt that produced this result (1 for the first delivery).
    pub(crate) attempts: u32,
    /// The consumer name of the worker that wrote it.
    #[serde(default)]
    pub(crate) worker: String,
    /// With `worker_died`: the exit code of the process that ran the task, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) exit_code: Option<i32>,
    /// With `worker_died`: the signal that killed the process that ran the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) signal: Option<i32>,
    /// With a `retrying` note: when the task is queued again (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) due: Option<u64>,
}

impl ResultEnvelope {
    pub(crate) fn encode(&self) -> Vec<u8> {
        // A struct of strings, integers and bytes always encodes; the empty fallback is unreachable.
        rmp_serde::to_vec_named(self).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<ResultEnvelope, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }
}

/// Addition 2 (docs/protocol.md): run a task again, later, when a run ends in an error it names.
///
/// ```
/// use martelli::cluster::{Retry, RetryOn};
/// use std::time::Duration;
///
/// let retry = Retry::new(5)
///     .backoff(Duration::from_millis(200))
///     .max_backoff(Duration::from_secs(30))
///     .on(&[RetryOn::Failed, RetryOn::Panicked])
///     .matching(["connection refused", "timeout"]);
/// # let _ = retry;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    max: u32,
    #[serde(default = "Retry::default_backoff_ms")]
    backoff_ms: u64,
    #[serde(default = "Retry::default_factor")]
    factor: u32,
    #[serde(default = "Retry::default_max_backoff_ms")]
    max_backoff_ms: u64,
    #[serde(default = "Retry::default_jitter")]
    jitter: bool,
    #[serde(default = "Retry::default_on")]
    on: Vec<String>,
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    matching: Option<Vec<String>>,
}

/// The outcomes a [`Retry`] may retry (the result statuses of docs/protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryOn {
    /// The task returned an error (`failed`).
    Failed,
    /// The task panicked (`panicked`).
    Panicked,
    /// The task ran past its deadline on a worker's process pool, or its deadline passed before it
    /// started (`timed_out`). A retry whose deadline has passed times out again at once.
    TimedOut,
    /// The process that ran the task died (`worker_died`, a worker with a process pool).
    WorkerDied,
}

impl RetryOn {
    fn as_str(self) -> &'static str {
        match self {
            RetryOn::Failed => "failed",
            RetryOn::Panicked => "panicked",
            RetryOn::TimedOut => "timed_out",
            RetryOn::WorkerDied => "worker_died",
        }
    }
}

impl Retry {
    fn default_backoff_ms() -> u64 {
        1000
    }
    fn default_factor() -> u32 {
        2
    }
    fn default_max_backoff_ms() -> u64 {
        3_600_000
    }
    fn default_jitter() -> bool {
        true
    }
    fn default_on() -> Vec<String> {
        vec!["failed".to_owned(), "worker_died".to_owned()]
    }

    /// Up to `max` retries after the first run, on `failed` and `worker_died`, 1 s doubling to at
    /// most 1 hour, with jitter.
    pub fn new(max: u32) -> Retry {
        Retry {
            max,
            backoff_ms: Retry::default_backoff_ms(),
            factor: Retry::default_factor(),
            max_backoff_ms: Retry::default_max_backoff_ms(),
            jitter: Retry::default_jitter(),
            on: Retry::default_on(),
            matching: None,
        }
    }

    /// The delay before the first retry (default 1 s).
    pub fn backoff(mut self, delay: Duration) -> Retry {
        self.backoff_ms = millis(delay);
        self
    }

    /// Each retry's delay is the previous one's times `factor` (default 2; 1 keeps it constant).
    pub fn factor(mut self, factor: u32) -> Retry {
        self.factor = factor.max(1);
        self
    }

    /// No delay is longer than this (default 1 hour).
    pub fn max_backoff(mut self, delay: Duration) -> Retry {
        self.max_backoff_ms = millis(delay);
        self
    }

    /// Whether each delay is drawn at random from its upper half (default true).
    pub fn jitter(mut self, jitter: bool) -> Retry {
        self.jitter = jitter;
        self
    }

    /// The outcomes that are retried (default: [`RetryOn::Failed`], [`RetryOn::WorkerDied`]).
    pub fn on(mut self, outcomes: &[RetryOn]) -> Retry {
        self.on = outcomes.iter().map(|o| o.as_str().to_owned()).collect();
        self
    }

    /// Retries only an error whose message contains one of `needles` (default: any error).
    pub fn matching<I, S>(mut self, needles: I) -> Retry
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.matching = Some(needles.into_iter().map(Into::into).collect());
        self
    }

    /// The most retries.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Whether a run that ended with `status` and `error` is one this policy retries (retries left
    /// aside).
    pub(crate) fn wants(&self, status: ResultStatus, error: Option<&str>) -> bool {
        if !self.on.iter().any(|s| s == status.as_str()) {
            return false;
        }
        match &self.matching {
            None => true,
            Some(needles) => {
                let error = error.unwrap_or("");
                needles.iter().any(|n| error.contains(n.as_str()))
            }
        }
    }

    /// The delay before retry number `retry` (0 for the first), before jitter: `backoff ×
    /// factor^retry`, at most `max_backoff`; with jitter, drawn from `[d/2, d]` with `random` in
    /// `[0, 1)`.
    pub(crate) fn delay_ms(&self, retry: u32, random: f64) -> u64 {
        let grown = u64::from(self.factor)
            .checked_pow(retry)
            .and_then(|f| self.backoff_ms.checked_mul(f))
            .unwrap_or(u64::MAX);
        let d = grown.min(self.max_backoff_ms);
        if self.jitter {
            let half = d / 2;
            // `random` < 1, so the draw stays within [d/2, d].
            half + ((d - half) as f64 * random.clamp(0.0, 1.0)) as u64
        } else {
            d
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One run's error, kept when the run was retried (Addition 2) and in the dead letter of a task
/// that ran out of retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AttemptError {
    /// The run, counted from 1.
    pub attempt: u32,
    /// The result status of the run (`failed`, `panicked`, `timed_out`, `worker_died`).
    pub status: String,
    /// Its error message.
    #[serde(default)]
    pub error: String,
    /// The consumer name of the worker that ran it.
    #[serde(default)]
    pub worker: String,
    /// When it ended (Unix ms).
    #[serde(default)]
    pub at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> TaskEnvelope {
        TaskEnvelope {
            v: PROTOCOL_VERSION,
            id: "t1".into(),
            task: "add".into(),
            payload: vec![1, 2, 3],
            reply: Some("martelli:reply:c".into()),
            deadline: Some(17),
            max_attempts: 2,
            attempts: 0,
            started: false,
            keep: None,
            retry: None,
            retries: 0,
            errors: Vec::new(),
            slot: None,
            flow: None,
        }
    }

    #[test]
    fn task_envelope_round_trips_and_payload_is_binary() {
        let bytes = envelope().encode().unwrap();
        // The payload is a MessagePack bin 8 (0xc4) of length 3, not an array of integers.
        assert!(bytes.windows(5).any(|w| w == [0xc4, 3, 1, 2, 3]));
        let back = TaskEnvelope::decode(&bytes).unwrap();
        assert_eq!(back.task, "add");
        assert_eq!(back.payload, vec![1, 2, 3]);
        assert_eq!(back.deadline, Some(17));
    }

    #[test]
    fn optional_fields_take_their_defaults() {
        #[derive(Serialize)]
        struct Minimal<'a> {
            v: u32,
            id: &'a str,
            task: &'a str,
            #[serde(with = "serde_bytes")]
            payload: &'a [u8],
        }
        let bytes = rmp_serde::to_vec_named(&Minimal {
            v: 1,
            id: "x",
            task: "noop",
            payload: b"",
        })
        .unwrap();
        let env = TaskEnvelope::decode(&bytes).unwrap();
        assert_eq!(env.max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert_eq!(env.attempts, 0);
        assert!(env.reply.is_none() && env.deadline.is_none());
    }

    #[test]
    fn bad_envelopes_say_what_is_wrong() {
        let err = TaskEnvelope::decode(b"\xc1nonsense").unwrap_err();
        assert!(err.contains("not a valid MessagePack"), "{err}");
        let mut future = envelope();
        future.v = 99;
        let err = TaskEnvelope::decode(&future.encode().unwrap()).unwrap_err();
        assert!(err.contains("unsupported envelope version 99"), "{err}");
        let mut zero = envelope();
        zero.max_attempts = 0;
        let err = TaskEnvelope::decode(&zero.encode().unwrap()).unwrap_err();
        assert!(err.contains("0 attempts"), "{err}");
    }

    #[test]
    fn started_is_written_only_when_asked_and_refused_envelopes_are_addressed() {
        let mut e = envelope();
        let key = b"\xa7started";
        assert!(!e.encode().unwrap().windows(8).any(|w| w == key));
        e.started = true;
        let bytes = e.encode().unwrap();
        assert!(bytes.windows(8).any(|w| w == key));
        assert!(TaskEnvelope::decode(&bytes).unwrap().started);
        e.v = 2;
        let bytes = e.encode().unwrap();
        assert!(TaskEnvelope::decode(&bytes).is_err());
        let addressed = TaskEnvelope::addressed(&bytes).expect("its id and reply list");
        assert_eq!(addressed.id, "t1");
        assert_eq!(addressed.reply.as_deref(), Some("martelli:reply:c"));
        assert!(TaskEnvelope::addressed(b"\xc1").is_none());
    }

    #[test]
    fn result_status_is_a_snake_case_string() {
        let r = ResultEnvelope {
            v: 1,
            id: "t".into(),
            status: ResultStatus::TimedOut,
            payload: None,
            error: None,
            attempts: 1,
            worker: "w".into(),
            exit_code: None,
            signal: None,
            due: None,
        };
        let bytes = r.encode();
        assert!(bytes.windows(9).any(|w| w == b"timed_out"));
        assert_eq!(
            ResultEnvelope::decode(&bytes).unwrap().status,
            ResultStatus::TimedOut
        );
    }

    #[test]
    fn an_unknown_status_still_decodes() {
        #[derive(Serialize)]
        struct Newer<'a> {
            v: u32,
            id: &'a str,
            status: &'a str,
            error: &'a str,
            attempts: u32,
        }
        let bytes = rmp_serde::to_vec_named(&Newer {
            v: 1,
            id: "t",
            status: "quarantined",
            error: "held for review",
            attempts: 1,
        })
        .unwrap();
        let result = ResultEnvelope::decode(&bytes).unwrap();
        assert_eq!(result.status, ResultStatus::Unknown);
        assert_eq!(result.error.as_deref(), Some("held for review"));
    }

    #[test]
    fn worker_died_carries_how_and_other_statuses_omit_it() {
        let mut r = ResultEnvelope {
            v: 1,
            id: "t".into(),
            status: ResultStatus::WorkerDied,
            payload: None,
            error: Some("killed by signal 6".into()),
            attempts: 1,
            worker: "w".into(),
            exit_code: None,
            signal: Some(6),
            due: None,
        };
        let bytes = r.encode();
        assert!(bytes.windows(11).any(|w| w == b"worker_died"));
        assert!(bytes.windows(7).any(|w| w == b"\xa6signal"));
        let back = ResultEnvelope::decode(&bytes).unwrap();
        assert_eq!(
            (back.status, back.signal, back.exit_code),
            (ResultStatus::WorkerDied, Some(6), None)
        );
        r.status = ResultStatus::Cancelled;
        r.signal = None;
        let bytes = r.encode();
        assert!(bytes.windows(9).any(|w| w == b"cancelled"));
        // The key "signal" as a MessagePack fixstr (the error message says "signal" too).
        assert!(
            !bytes.windows(7).any(|w| w == b"\xa6signal"),
            "absent, not nil"
        );
    }
}
