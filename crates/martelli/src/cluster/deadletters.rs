//! [`DeadLetters`]: a queue's dead-letter stream (`P:q:Q:dead`, see `docs/protocol.md`, "Dead
//! letter"): browse it a page at a time, inspect one letter, and requeue or discard one or all.
//!
//! Requeueing puts the task back on the stream it came from, as a fresh entry with its envelope's
//! `attempts` set to 0 (so it gets its `max_attempts` again; the other keys of the envelope are kept
//! byte for byte), and deletes the letter. A Lua script does both for a batch of letters, and only
//! for letters still there when it runs, so two people requeueing the same letter queue it once.
//! Letters that cannot run again are left in place: those that kept only a sample of an oversized
//! entry, and those whose entry is not a task envelope.
//!
//! "All" means the letters there when the call starts: letters dead-lettered meanwhile stay.

use super::Keys;
use super::conn::{self, Entry};
use super::envelope::{ENTRY_FIELD, TaskEnvelope};
use super::error::ClusterError;
use super::inspect::{EnvelopeView, Inspector, entry_ms, is_entry_id};
use super::status::{PRIORITIES, query};
use redis::{Connection, Value};
use serde::Serialize;

/// Letters read per command by [`DeadLetters::requeue_all`].
const REQUEUE_BATCH: usize = 100;

/// The largest page [`DeadLetters::page`] returns.
pub const MAX_PAGE: usize = 500;

/// Moves letters back to their streams. `KEYS`: the dead-letter stream, then the high, normal and
/// low streams. `ARGV`: pairs of a letter's id and the envelope to queue. A letter no longer there
/// is skipped; a letter's `stream` field picks the stream (normal when it names none of the three).
/// Returns the number requeued.
const REQUEUE_SCRIPT: &str = r"
local requeued = 0
for i = 1, #ARGV, 2 do
  local found = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
  if #found > 0 then
    local fields = found[1][2]
    local target = KEYS[3]
    for j = 1, #fields, 2 do
      if fields[j] == 'stream' and (fields[j + 1] == KEYS[2] or fields[j + 1] == KEYS[4]) then
        target = fields[j + 1]
      end
    end
    redis.call('XADD', target, '*', 'e', ARGV[i + 1])
    redis.call('XDEL', KEYS[1], ARGV[i])
    requeued = requeued + 1
  end
end
return requeued
";

/// Why a dead letter could not be read, requeued or discarded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadLetterError {
    /// The id is not a stream entry id.
    #[error(
        "{id:?} is not a dead-letter id (expected the id of a stream entry, such as 1700000000000-0)"
    )]
    InvalidId {
        /// The id given.
        id: String,
    },
    /// No such letter: never there, or requeued or discarded meanwhile.
    #[error(
        "no dead letter {letter} in queue {queue:?} (requeued or discarded meanwhile? reload the list)"
    )]
    NotFound {
        /// The queue.
        queue: String,
        /// The letter's id.
        letter: String,
    },
    /// The letter cannot run again.
    #[error("dead letter {letter} cannot be requeued: {why} (inspect it, then discard it)")]
    NotRequeueable {
        /// The letter's id.
        letter: String,
        /// Why: only a sample kept, or no task envelope.
        why: String,
    },
    /// The broker failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// One dead letter.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Its id in the dead-letter stream.
    pub letter: String,
    /// When it was dead-lettered (Unix ms).
    pub at_ms: Option<u64>,
    /// Why.
    pub reason: String,
    /// The priority of the stream the task was in: `high`, `normal` or `low`.
    pub priority: Option<&'static str>,
    /// The stream the task was in (its key).
    pub stream: Option<String>,
    /// The task's entry id in that stream.
    pub entry: Option<String>,
    /// The attempts it had when it was dead-lettered.
    pub attempts: Option<u32>,
    /// The worker that dead-lettered it.
    pub worker: Option<String>,
    /// The task id, when the envelope could be read.
    pub id: Option<String>,
    /// The task name, when the envelope could be read.
    pub task: Option<String>,
    /// The size of what the letter keeps of the task (the whole entry, or a sample).
    pub size: usize,
    /// True when the letter keeps only a sample of an oversized entry.
    pub truncated: bool,
    /// Whether it can be requeued (it keeps a whole task envelope).
    pub requeueable: bool,
    /// The envelope, with a preview of its payload ([`DeadLetters::get`] only).
    pub envelope: Option<EnvelopeView>,
    /// Why the kept entry is not a task envelope ([`DeadLetters::get`] only).
    pub envelope_error: Option<String>,
}

impl DeadLetter {
    /// Reads a letter's fields; with `decode`, its envelope too.
    pub(crate) fn from_entry(entry: &Entry, decode: bool) -> DeadLetter {
        let text = |f: &str| {
            entry
                .field(f)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let number = |f: &str| text(f).and_then(|v| v.parse::<u64>().ok());
        let stream = text("stream");
        let priority = stream.as_deref().and_then(|s| {
            PRIORITIES
                .iter()
                .copied()
                .find(|p| s.rsplit(':').next() == Some(*p))
        });
        let kept = entry.field(ENTRY_FIELD).or_else(|| entry.field("sample"));
        let truncated = entry.field("truncated") == Some(b"1");
        let envelope_ok = entry
            .field(ENTRY_FIELD)
            .map(TaskEnvelope::decode)
            .map(|r| r.map(|_| ()));
        let (envelope, envelope_error) = match (decode, entry.field(ENTRY_FIELD)) {
            (true, Some(bytes)) => match EnvelopeView::decode(bytes) {
                Ok(e) => (Some(e), None),
                Err(why) => (None, Some(why)),
            },
            (true, None) if truncated => (
                None,
                Some("only a sample of an oversized entry was kept".to_owned()),
            ),
            (true, None) => (None, Some("the letter keeps no entry".to_owned())),
            (false, _) => (None, None),
        };
        DeadLetter {
            letter: entry.id.clone(),
            at_ms: number("at").or_else(|| entry_ms(&entry.id)),
            reason: text("reason").unwrap_or_default(),
            priority,
            stream,
            entry: text("entry"),
            attempts: number("attempts").and_then(|n| u32::try_from(n).ok()),
            worker: text("worker"),
            id: text("id"),
            task: text("task"),
            size: kept.map_or(0, <[u8]>::len),
            truncated,
            requeueable: matches!(envelope_ok, Some(Ok(()))),
            envelope,
            envelope_error,
        }
    }
}

/// Where a page of dead letters starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageStart<'a> {
    /// The newest letters.
    Newest,
    /// The letters just older than this letter id.
    Before(&'a str),
    /// The letters just newer than this letter id.
    After(&'a str),
}

/// One page of dead letters, newest first.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct DeadLetterPage {
    /// Dead letters in the queue, in all.
    pub total: u64,
    /// The page, newest first.
    pub letters: Vec<DeadLetter>,
    /// Whether older letters follow (`PageStart::Before` the last one).
    pub older: bool,
    /// Whether newer letters precede (`PageStart::After` the first one).
    pub newer: bool,
}

/// What a bulk action did.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct Bulk {
    /// Letters requeued or discarded.
    pub done: u64,
    /// Letters left in place because they cannot run again.
    pub skipped: u64,
}

/// A queue's dead letters, through an [`Inspector`]'s connection.
///
/// ```no_run
/// use martelli::cluster::{Inspector, InspectorOptions, PageStart};
///
/// let mut inspector = Inspector::connect("redis://127.0.0.1:6379", &InspectorOptions::new())?;
/// let mut dead = inspector.dead_letters("default");
/// let page = dead.page(PageStart::Newest, 50)?;
/// for letter in &page.letters {
///     println!("{} {:?}: {}", letter.letter, letter.task, letter.reason);
/// }
/// if let Some(first) = page.letters.first() {
///     dead.requeue(&first.letter)?;
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct DeadLetters<'a> {
    inspector: &'a mut Inspector,
    queue: String,
}

impl Inspector {
    /// The dead letters of `queue`.
    pub fn dead_letters(&mut self, queue: &str) -> DeadLetters<'_> {
        DeadLetters {
            inspector: self,
            queue: queue.to_owned(),
        }
    }
}

impl DeadLetters<'_> {
    /// Up to `count` letters (at most [`MAX_PAGE`]) from `start`, newest first.
    pub fn page(
        &mut self,
        start: PageStart<'_>,
        count: usize,
    ) -> Result<DeadLetterPage, DeadLetterError> {
        if let PageStart::Before(id) | PageStart::After(id) = start {
            check_id(id)?;
        }
        let count = count.clamp(1, MAX_PAGE);
        let queue = self.queue.clone();
        let page = self.inspector.with_conn(|conn, prefix| {
            let keys = Keys::new(prefix, &queue);
            let total: u64 = query(
                conn,
                redis::cmd("XLEN").arg(&keys.dead),
                "count the dead letters (XLEN)",
            )?;
            let (mut entries, more) = match start {
                PageStart::Newest => range(conn, &keys.dead, true, "+", count + 1)?,
                PageStart::Before(id) => {
                    range(conn, &keys.dead, true, &format!("({id}"), count + 1)?
                }
                PageStart::After(id) => {
                    range(conn, &keys.dead, false, &format!("({id}"), count + 1)?
                }
            };
            let forward = matches!(start, PageStart::After(_));
            if forward {
                entries.reverse();
            }
            let (older, newer) = match (entries.first(), entries.last()) {
                (Some(first), Some(last)) => {
                    let older = if forward {
                        exists(conn, &keys.dead, true, &last.id)?
                    } else {
                        more
                    };
                    let newer = match start {
                        PageStart::Newest => false,
                        PageStart::After(_) => more,
                        PageStart::Before(_) => exists(conn, &keys.dead, false, &first.id)?,
                    };
                    (older, newer)
                }
                _ => (false, false),
            };
            Ok(DeadLetterPage {
                total,
                letters: entries
                    .iter()
                    .map(|e| DeadLetter::from_entry(e, false))
                    .collect(),
                older,
                newer,
            })
        })?;
        Ok(page)
    }

    /// One letter, with its envelope and a preview of its payload.
    pub fn get(&mut self, letter: &str) -> Result<DeadLetter, DeadLetterError> {
        let entry = self.read(letter)?;
        Ok(DeadLetter::from_entry(&entry, true))
    }

    /// Puts the task of one letter back on its stream and deletes the letter.
    pub fn requeue(&mut self, letter: &str) -> Result<(), DeadLetterError> {
        let entry = self.read(letter)?;
        let envelope = requeueable(&entry).map_err(|why| DeadLetterError::NotRequeueable {
            letter: letter.to_owned(),
            why,
        })?;
        let done = self.run_requeue(&[(entry.id, envelope)])?;
        if done == 0 {
            return Err(self.not_found(letter));
        }
        Ok(())
    }

    /// Requeues every letter there now that can run again; the others stay.
    pub fn requeue_all(&mut self) -> Result<Bulk, DeadLetterError> {
        let Some(last) = self.newest()? else {
            return Ok(Bulk {
                done: 0,
                skipped: 0,
            });
        };
        let queue = self.queue.clone();
        let mut bulk = Bulk {
            done: 0,
            skipped: 0,
        };
        let mut start = "-".to_owned();
        loop {
            let entries: Vec<Entry> = self.inspector.with_conn(|conn, prefix| {
                let keys = Keys::new(prefix, &queue);
                let page: Value = query(
                    conn,
                    redis::cmd("XRANGE")
                        .arg(&keys.dead)
                        .arg(&start)
                        .arg(&last)
                        .arg("COUNT")
                        .arg(REQUEUE_BATCH),
                    "read the dead letters (XRANGE)",
                )?;
                Ok(conn::array(&page).iter().filter_map(Entry::parse).collect())
            })?;
            let Some(tail) = entries.last() else { break };
            start = format!("({}", tail.id);
            let full = entries.len() == REQUEUE_BATCH;
            let mut batch = Vec::with_capacity(entries.len());
            for entry in entries {
                match requeueable(&entry) {
                    Ok(envelope) => batch.push((entry.id, envelope)),
                    Err(_) => bulk.skipped += 1,
                }
            }
            bulk.done += self.run_requeue(&batch)?;
            if !full {
                break;
            }
        }
        Ok(bulk)
    }

    /// Deletes one letter.
    pub fn discard(&mut self, letter: &str) -> Result<(), DeadLetterError> {
        check_id(letter)?;
        let queue = self.queue.clone();
        let deleted: u64 = self.inspector.with_conn(|conn, prefix| {
            let keys = Keys::new(prefix, &queue);
            query(
                conn,
                redis::cmd("XDEL").arg(&keys.dead).arg(letter),
                "delete a dead letter (XDEL)",
            )
        })?;
        if deleted == 0 {
            return Err(self.not_found(letter));
        }
        Ok(())
    }

    /// Deletes every letter there now (`XTRIM … MINID` just past the newest one).
    pub fn discard_all(&mut self) -> Result<Bulk, DeadLetterError> {
        let Some(last) = self.newest()? else {
            return Ok(Bulk {
                done: 0,
                skipped: 0,
            });
        };
        let queue = self.queue.clone();
        let done: u64 = self.inspector.with_conn(|conn, prefix| {
            let keys = Keys::new(prefix, &queue);
            query(
                conn,
                redis::cmd("XTRIM")
                    .arg(&keys.dead)
                    .arg("MINID")
                    .arg(next_id(&last)),
                "delete the dead letters (XTRIM)",
            )
        })?;
        Ok(Bulk { done, skipped: 0 })
    }

    fn not_found(&self, letter: &str) -> DeadLetterError {
        DeadLetterError::NotFound {
            queue: self.queue.clone(),
            letter: letter.to_owned(),
        }
    }

    /// The letter whose id is `letter`.
    fn read(&mut self, letter: &str) -> Result<Entry, DeadLetterError> {
        check_id(letter)?;
        let queue = self.queue.clone();
        let found = self.inspector.with_conn(|conn, prefix| {
            let keys = Keys::new(prefix, &queue);
            let reply: Value = query(
                conn,
                redis::cmd("XRANGE").arg(&keys.dead).arg(letter).arg(letter),
                "read a dead letter (XRANGE)",
            )?;
            Ok(conn::array(&reply).first().and_then(Entry::parse))
        })?;
        found.ok_or_else(|| self.not_found(letter))
    }

    /// The id of the newest letter, if any.
    fn newest(&mut self) -> Result<Option<String>, DeadLetterError> {
        let queue = self.queue.clone();
        Ok(self.inspector.with_conn(|conn, prefix| {
            let keys = Keys::new(prefix, &queue);
            let (entries, _) = range(conn, &keys.dead, true, "+", 1)?;
            Ok(entries.into_iter().next().map(|e| e.id))
        })?)
    }

    /// Runs [`REQUEUE_SCRIPT`] on `(letter id, envelope)` pairs; the number requeued.
    fn run_requeue(&mut self, batch: &[(String, Vec<u8>)]) -> Result<u64, DeadLetterError> {
        if batch.is_empty() {
            return Ok(0);
        }
        let queue = self.queue.clone();
        Ok(self.inspector.with_conn(|conn, prefix| {
            let keys = Keys::new(prefix, &queue);
            let script = redis::Script::new(REQUEUE_SCRIPT);
            let mut invocation = script.key(&keys.dead);
            invocation.key(&keys.streams[0]);
            invocation.key(&keys.streams[1]);
            invocation.key(&keys.streams[2]);
            for (letter, envelope) in batch {
                invocation.arg(letter).arg(envelope.as_slice());
            }
            invocation
                .invoke(conn)
                .map_err(|source| ClusterError::Broker {
                    action: "requeue dead letters (script)",
                    source,
                })
        })?)
    }
}

fn check_id(id: &str) -> Result<(), DeadLetterError> {
    if is_entry_id(id) {
        Ok(())
    } else {
        Err(DeadLetterError::InvalidId { id: id.to_owned() })
    }
}

/// Up to `count` entries from `start` (`+`, or an exclusive `(id`), newest first when `reverse`,
/// and whether `count` were found.
fn range(
    conn: &mut Connection,
    key: &str,
    reverse: bool,
    start: &str,
    count: usize,
) -> Result<(Vec<Entry>, bool), ClusterError> {
    let start = if !reverse && start == "+" { "-" } else { start };
    let (command, end) = if reverse {
        ("XREVRANGE", "-")
    } else {
        ("XRANGE", "+")
    };
    let reply: Value = query(
        conn,
        redis::cmd(command)
            .arg(key)
            .arg(start)
            .arg(end)
            .arg("COUNT")
            .arg(count),
        "read the dead letters (XRANGE)",
    )?;
    let mut entries: Vec<Entry> = conn::array(&reply)
        .iter()
        .filter_map(Entry::parse)
        .collect();
    let more = entries.len() == count && count > 1;
    if more {
        entries.pop();
    }
    Ok((entries, more))
}

/// Whether an entry older (`older`) or newer than `id` exists.
fn exists(conn: &mut Connection, key: &str, older: bool, id: &str) -> Result<bool, ClusterError> {
    let (entries, _) = range(conn, key, older, &format!("({id}"), 1)?;
    Ok(!entries.is_empty())
}

/// The envelope to queue again for a letter: its kept envelope with `attempts` set to 0, or why it
/// cannot run again.
fn requeueable(entry: &Entry) -> Result<Vec<u8>, String> {
    let Some(bytes) = entry.field(ENTRY_FIELD) else {
        return Err(if entry.field("truncated") == Some(b"1") {
            "only a sample of its oversized entry was kept".to_owned()
        } else {
            "it keeps no entry".to_owned()
        });
    };
    let envelope = TaskEnvelope::decode(bytes)?;
    if envelope.attempts == 0 && envelope.retries == 0 {
        return Ok(bytes.to_vec());
    }
    // Set `attempts` (and `retries`, Addition 2) to 0 and keep every other key as it is (keys this
    // version does not know too, and the errors of earlier runs).
    let mut value = rmpv::decode::read_value(&mut &bytes[..])
        .map_err(|e| format!("the envelope is not MessagePack: {e}"))?;
    if let rmpv::Value::Map(pairs) = &mut value {
        for (key, v) in pairs.iter_mut() {
            if matches!(key.as_str(), Some("attempts" | "retries")) {
                *v = rmpv::Value::from(0);
            }
        }
    }
    let mut out = Vec::with_capacity(bytes.len());
    rmpv::encode::write_value(&mut out, &value)
        .map_err(|e| format!("the envelope could not be written again: {e}"))?;
    Ok(out)
}

/// The smallest stream entry id after `id`.
fn next_id(id: &str) -> String {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    let ms: u64 = ms.parse().unwrap_or(0);
    let seq: u64 = seq.parse().unwrap_or(0);
    match seq.checked_add(1) {
        Some(seq) => format!("{ms}-{seq}"),
        None => format!("{}-0", ms.saturating_add(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &[u8])]) -> Entry {
        Entry {
            id: "5-1".into(),
            fields: fields
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
                .collect(),
        }
    }

    fn envelope(attempts: u32) -> Vec<u8> {
        TaskEnvelope {
            v: 1,
            id: "t1".into(),
            task: "<b>x</b>".into(),
            payload: b"<i>p</i>".to_vec(),
            reply: None,
            deadline: None,
            max_attempts: 2,
            attempts,
            started: false,
            keep: None,
            retry: None,
            retries: 0,
            errors: Vec::new(),
            slot: None,
            flow: None,
        }
        .encode()
        .unwrap()
    }

    #[test]
    fn next_ids_follow() {
        assert_eq!(next_id("5-1"), "5-2");
        assert_eq!(next_id(&format!("5-{}", u64::MAX)), "6-0");
    }

    #[test]
    fn a_requeued_envelope_gets_its_attempts_back_and_keeps_the_rest() {
        let fresh = envelope(0);
        assert_eq!(
            requeueable(&entry(&[("e", &fresh)])).unwrap(),
            fresh,
            "untouched"
        );
        let spent = envelope(2);
        let again = requeueable(&entry(&[("e", &spent)])).unwrap();
        let back = TaskEnvelope::decode(&again).unwrap();
        assert_eq!((back.attempts, back.max_attempts), (0, 2));
        assert_eq!(
            (back.id.as_str(), back.payload.as_slice()),
            ("t1", &b"<i>p</i>"[..])
        );
    }

    #[test]
    fn samples_and_bad_envelopes_cannot_be_requeued() {
        let why = requeueable(&entry(&[("sample", b"abc"), ("truncated", b"1")])).unwrap_err();
        assert!(why.contains("sample"), "{why}");
        let why = requeueable(&entry(&[("e", b"\xc1")])).unwrap_err();
        assert!(why.contains("not a valid MessagePack"), "{why}");
    }

    #[test]
    fn letters_read_their_fields() {
        let e = envelope(0);
        let letter = DeadLetter::from_entry(
            &entry(&[
                ("reason", b"unknown task \"<b>x</b>\""),
                ("stream", b"martelli:q:default:high"),
                ("attempts", b"1"),
                ("at", b"77"),
                ("id", b"t1"),
                ("e", &e),
            ]),
            true,
        );
        assert_eq!(letter.priority, Some("high"));
        assert_eq!(letter.at_ms, Some(77));
        assert_eq!(letter.attempts, Some(1));
        assert!(letter.requeueable);
        let env = letter.envelope.unwrap();
        assert_eq!(env.payload.preview, "<i>p</i>");
    }
}
