//! Tasks that vanished from the broker: how a client finds the tasks it waits for that exist
//! nowhere any more, so that it can queue them again or fail them instead of waiting for ever.
//!
//! A Redis restart without persistence loses the streams, the pending lists, the delayed set and
//! the results not yet collected; an eviction policy (`maxmemory-policy allkeys-*`) or a person can
//! delete keys too. A client cannot be told: it has to look.
//!
//! # The rule
//!
//! A task a client waits for is **lost** when, at two looks at least [`CONFIRM`] apart, it is found
//! nowhere:
//!
//! 1. not in its stream, under the entry id `XADD` returned (one script per 1,000 tasks checks
//!    that without sending the tasks back); nor under another entry id in any of the queue's
//!    streams (a task a stopping worker handed back, or a delayed task moved to its stream, is a
//!    new entry; the streams are then read in full, once);
//! 2. not in the delayed set, at its due time;
//! 3. no result for it in the client's reply list (the client pops what is there first: a worker
//!    stores a result before it deletes the task's entry);
//! 4. not held by a live worker: the `tasks` field of a worker's heartbeat lists the ids of the
//!    tasks it holds, and a worker rewrites its heartbeat at once when it reconnects (a restart
//!    loses the entry of a task a worker runs, not the run).
//!
//! The second look is there for the races a single look cannot rule out: a result stored just
//! after the reply list was read, a worker that has not yet rewritten its heartbeat after the
//! broker came back.
//!
//! # When a client looks
//!
//! - after it reconnects to the broker (every restart drops the connections);
//! - when the broker's `run_id` (`INFO server`) changes, read every [`RUN_ID_EVERY`] while tasks
//!   wait (a failover behind a proxy that keeps the connection);
//! - every [`SWEEP_EVERY`], for the tasks that have waited longer than that (keys deleted or
//!   evicted without a restart).
//!
//! A look costs one script call per 1,000 waiting tasks when nothing is missing. Tasks not yet
//! written (still in the client's outbox) are not looked for.
//!
//! # What the client does with a lost task
//!
//! [`OnLost::Resubmit`] (the default) queues it again, as the same task (same id: should the old
//! copy turn up after all, its caller still sees one result), with the attempts it has used (the
//! attempt numbers of the `started` notes its workers sent); a task that has used all its
//! attempts fails instead. [`OnLost::Fail`] resolves its future as
//! [`TaskError::Lost`](crate::TaskError::Lost) at once.

use super::conn::{self, Entry};
use super::envelope::{ENTRY_FIELD, TaskEnvelope};
use super::{Keys, unix_ms};
use redis::{Connection, RedisResult, Value};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// How long apart the two looks that find a task nowhere must be.
pub(crate) const CONFIRM: Duration = Duration::from_secs(3);
/// How often a client reads the broker's `run_id` while tasks wait.
pub(crate) const RUN_ID_EVERY: Duration = Duration::from_secs(5);
/// How often a client looks for the tasks that have waited longer than this.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Tasks checked per script call.
const CHECK_BATCH: usize = 1000;
/// Stream entries read per `XRANGE` when a task is searched for under a new entry id.
const SCAN_BATCH: usize = 512;

/// Which of the pairs `ARGV[2k-1]` (stream index 0-2), `ARGV[2k]` (entry id) name an entry that is
/// not in its stream (KEYS[1..3]): their 1-based positions `k`.
const ABSENT_SCRIPT: &str = r"
local absent = {}
for i = 1, #ARGV, 2 do
  local key = KEYS[tonumber(ARGV[i]) + 1]
  if #redis.call('XRANGE', key, ARGV[i + 1], ARGV[i + 1], 'COUNT', 1) == 0 then
    absent[#absent + 1] = (i + 1) / 2
  end
end
return absent
";

/// What a client does with a task that vanished from the broker (docs/protocol.md, "Tasks that
/// vanish").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnLost {
    /// Queue it again (tasks run at least once), unless it has used all its attempts.
    #[default]
    Resubmit,
    /// Resolve its future as [`TaskError::Lost`](crate::TaskError::Lost).
    Fail,
}

/// Where a client put a task.
#[derive(Debug, Clone)]
pub(crate) enum Placed {
    /// Not written yet (in the outbox, or being written).
    Unsent,
    /// A stream entry: the stream's index and the entry id `XADD` returned.
    Stream { index: usize, entry: String },
    /// The delayed set, due at `due_ms` (Unix ms).
    Delayed { due_ms: u64 },
}

/// One task to look for.
#[derive(Debug)]
pub(crate) struct Probe {
    pub(crate) id: String,
    pub(crate) placed: Placed,
}

/// Which tasks to look for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every task written to the broker.
    All,
    /// The tasks submitted more than this long ago, and those found missing at the last look.
    Older(Duration),
}

/// When the collector looks next (its own state, on its own thread).
#[derive(Debug)]
pub(crate) struct Looks {
    run_id: Option<String>,
    run_id_at: Instant,
    sweep_at: Instant,
    /// Set when a look found tasks missing: the look that confirms or clears them.
    confirm_at: Option<Instant>,
    /// Set after a reconnect or a new `run_id`: look at every task.
    everything: bool,
    absent: redis::Script,
}

impl Looks {
    pub(crate) fn new(now: Instant) -> Looks {
        Looks {
            run_id: None,
            run_id_at: now,
            sweep_at: now + SWEEP_EVERY,
            confirm_at: None,
            everything: false,
            absent: redis::Script::new(ABSENT_SCRIPT),
        }
    }

    /// The connection was lost and made again: the broker may have restarted.
    pub(crate) fn reconnected(&mut self) {
        self.everything = true;
    }

    /// Schedules the look that confirms the tasks found missing.
    pub(crate) fn confirm_later(&mut self, now: Instant) {
        self.confirm_at = Some(now + CONFIRM);
    }

    /// Whether to look now, and for what. Reads the broker's `run_id` when due (only while tasks
    /// wait): a new one means a restart or a failover.
    pub(crate) fn due(
        &mut self,
        conn: &mut Connection,
        now: Instant,
        waiting: bool,
    ) -> RedisResult<Option<Scope>> {
        if !waiting {
            self.confirm_at = None;
            self.everything = false;
            return Ok(None);
        }
        if now >= self.run_id_at {
            self.run_id_at = now + RUN_ID_EVERY;
            let info: String = redis::cmd("INFO").arg("server").query(conn)?;
            let run_id = info
                .lines()
                .find_map(|l| l.strip_prefix("run_id:"))
                .map(|id| id.trim().to_owned());
            if self.run_id.is_some() && run_id != self.run_id {
                self.everything = true;
            }
            self.run_id = run_id;
        }
        let confirm = self.confirm_at.is_some_and(|at| now >= at);
        if self.everything {
            self.everything = false;
            self.confirm_at = None;
            return Ok(Some(Scope::All));
        }
        if confirm || now >= self.sweep_at {
            self.confirm_at = None;
            if now >= self.sweep_at {
                self.sweep_at = now + SWEEP_EVERY;
            }
            return Ok(Some(Scope::Older(SWEEP_EVERY)));
        }
        Ok(None)
    }

    /// The positions in `probes` of the tasks that are not where they were put: no entry of that
    /// id in their stream, or not in the delayed set at their due time.
    pub(crate) fn absent(
        &self,
        conn: &mut Connection,
        keys: &Keys,
        probes: &[Probe],
    ) -> RedisResult<Vec<usize>> {
        let mut absent = Vec::new();
        let in_streams: Vec<(usize, usize, &str)> = probes
            .iter()
            .enumerate()
            .filter_map(|(at, probe)| match &probe.placed {
                Placed::Stream { index, entry } => Some((at, *index, entry.as_str())),
                _ => None,
            })
            .collect();
        for batch in in_streams.chunks(CHECK_BATCH) {
            let mut invocation = self.absent.key(&keys.streams[0]);
            invocation.key(&keys.streams[1]).key(&keys.streams[2]);
            for (_, index, entry) in batch {
                invocation.arg(*index).arg(*entry);
            }
            let found: Vec<usize> = invocation.invoke(conn)?;
            absent.extend(
                found
                    .into_iter()
                    .filter_map(|k| batch.get(k.checked_sub(1)?).map(|(at, _, _)| *at)),
            );
        }
        let mut due: HashMap<u64, Vec<usize>> = HashMap::new();
        for (at, probe) in probes.iter().enumerate() {
            if let Placed::Delayed { due_ms, .. } = probe.placed {
                due.entry(due_ms).or_default().push(at);
            }
        }
        for (due_ms, ats) in due {
            let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
                .arg(&keys.delayed)
                .arg(due_ms)
                .arg(due_ms)
                .arg("BYSCORE")
                .query(conn)?;
            let there: HashSet<String> = members
                .iter()
                .filter_map(|m| TaskEnvelope::addressed(m.get(1..)?))
                .map(|e| e.id)
                .collect();
            absent.extend(
                ats.into_iter()
                    .filter(|at| !there.contains(&probes[*at].id)),
            );
        }
        absent.sort_unstable();
        Ok(absent)
    }
}

/// What a search for tasks absent from where they were put found.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// Tasks in a stream under another entry id: id → (stream index, entry id).
    pub(crate) moved: HashMap<String, (usize, String)>,
    /// Tasks a live worker holds (its heartbeat lists them).
    pub(crate) held: HashSet<String>,
}

/// Searches for the tasks `ids` (absent from where they were put) in the live workers'
/// heartbeats and in every entry of the queue's streams.
pub(crate) fn search(
    conn: &mut Connection,
    keys: &Keys,
    ids: &HashSet<String>,
) -> RedisResult<Found> {
    let mut found = Found {
        held: held_by_live_workers(conn, keys)?,
        ..Found::default()
    };
    found.held.retain(|id| ids.contains(id));
    for (index, stream) in keys.streams.iter().enumerate() {
        let mut start = "-".to_owned();
        loop {
            let value: Value = redis::cmd("XRANGE")
                .arg(stream)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(SCAN_BATCH)
                .query(conn)?;
            let entries: Vec<Entry> = conn::array(&value)
                .iter()
                .filter_map(Entry::parse)
                .collect();
            for entry in &entries {
                let envelope = entry.field(ENTRY_FIELD).and_then(TaskEnvelope::addressed);
                if let Some(envelope) = envelope.filter(|e| ids.contains(&e.id)) {
                    found.moved.insert(envelope.id, (index, entry.id.clone()));
                }
            }
            match entries.last() {
                Some(last) if entries.len() == SCAN_BATCH => start = format!("({}", last.id),
                _ => break,
            }
        }
    }
    Ok(found)
}

/// The ids of the tasks the live workers hold, from their heartbeats (`tasks`, a comma-separated
/// list; a heartbeat is live while its `last_seen` is less than its `lease_ms` ago).
fn held_by_live_workers(conn: &mut Connection, keys: &Keys) -> RedisResult<HashSet<String>> {
    let beats = conn::scan(
        conn,
        &format!("{}*", conn::glob_escape(&keys.heartbeat(""))),
    )?;
    let now = unix_ms();
    let mut held = HashSet::new();
    for key in beats {
        let (seen, lease, tasks): (Option<u64>, Option<u64>, Option<String>) = redis::cmd("HMGET")
            .arg(&key)
            .arg("last_seen")
            .arg("lease_ms")
            .arg("tasks")
            .query(conn)?;
        let live = match (seen, lease) {
            (Some(seen), Some(lease)) => now.saturating_sub(seen) <= lease,
            _ => false,
        };
        if live {
            held.extend(
                tasks
                    .unwrap_or_default()
                    .split(',')
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    Ok(held)
}
