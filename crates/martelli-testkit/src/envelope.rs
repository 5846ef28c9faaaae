//! Task envelopes as a producer writes them (docs/protocol.md, "Task"), for tests that put tasks,
//! delayed tasks or dead letters on the broker behind the library's back, and [`queued`], which
//! reads back the tasks a stream holds.

use serde::{Deserialize, Serialize};

/// A task envelope, version 1.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope<'a> {
    v: u32,
    id: &'a str,
    task: &'a str,
    #[serde(with = "serde_bytes")]
    payload: &'a [u8],
    /// The reply list, when someone waits for the result.
    #[serde(skip_serializing_if = "Option::is_none")]
    reply: Option<&'a str>,
    max_attempts: u32,
    attempts: u32,
    /// A key no version of the protocol knows (readers ignore it), when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    x_future: Option<&'a str>,
}

impl<'a> Envelope<'a> {
    /// Task `id` running `task` on `payload`, with 3 attempts allowed and none spent.
    pub fn new(id: &'a str, task: &'a str, payload: &'a [u8]) -> Envelope<'a> {
        Envelope {
            v: 1,
            id,
            task,
            payload,
            reply: None,
            max_attempts: 3,
            attempts: 0,
            x_future: None,
        }
    }

    /// The protocol version written (`v`; 1 unless set).
    pub fn version(mut self, v: u32) -> Envelope<'a> {
        self.v = v;
        self
    }

    /// The list its result goes to.
    pub fn reply(mut self, list: &'a str) -> Envelope<'a> {
        self.reply = Some(list);
        self
    }

    /// Deliveries allowed.
    pub fn max_attempts(mut self, n: u32) -> Envelope<'a> {
        self.max_attempts = n;
        self
    }

    /// Attempts spent before this entry.
    pub fn attempts(mut self, n: u32) -> Envelope<'a> {
        self.attempts = n;
        self
    }

    /// Adds the key `x_future` with `value`: a key this version of the protocol does not know.
    pub fn unknown_key(mut self, value: &'a str) -> Envelope<'a> {
        self.x_future = Some(value);
        self
    }

    /// The MessagePack bytes of the stream entry's `e` field.
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("an envelope of strings and bytes encodes")
    }
}

/// A task read back from a stream: the entry's time and the envelope's id and task name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The millisecond part of the stream entry's id: when the broker added it.
    pub added_ms: u64,
    /// The task's id.
    pub id: String,
    /// The registered name of the task.
    pub task: String,
}

/// A stream entry as `XRANGE` returns it: its id and its field-value pairs.
type Entry = (String, Vec<(String, Vec<u8>)>);

#[derive(Deserialize)]
struct Read {
    id: String,
    task: String,
}

/// Every task in `stream`, oldest first (`XRANGE stream - +`), each entry's envelope decoded.
///
/// # Panics
/// When the broker cannot be read or an entry does not hold a task envelope in its `e` field: for
/// a test, both are failures.
pub fn queued(conn: &mut redis::Connection, stream: &str) -> Vec<Queued> {
    let entries: Vec<Entry> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(conn)
        .expect("XRANGE of the task stream");
    entries
        .into_iter()
        .map(|(entry, fields)| {
            let e = &fields
                .iter()
                .find(|(k, _)| k == "e")
                .unwrap_or_else(|| panic!("stream entry {entry} has no envelope field `e`"))
                .1;
            let read: Read = rmp_serde::from_slice(e).expect("a task envelope");
            let added_ms = entry
                .split('-')
                .next()
                .and_then(|ms| ms.parse().ok())
                .unwrap_or_else(|| panic!("a stream entry id of the form MS-SEQ, not {entry}"));
            Queued {
                added_ms,
                id: read.id,
                task: read.task,
            }
        })
        .collect()
}
