//! Finding one task by id: the queue's streams, the delayed set, the dead letters and the reply
//! lists, each searched within a budget of entries ([`SEARCH_LIMIT`]).

use super::*;

/// The queue named by a key under `base` (`P:q:`), if the key is one of a queue's.
pub(super) fn queue_of<'k>(key: &'k str, base: &str) -> Option<&'k str> {
    let rest = key.strip_prefix(base)?;
    [":high", ":normal", ":low", ":delayed", ":dead"]
        .iter()
        .find_map(|suffix| rest.strip_suffix(suffix))
        .filter(|name| !name.is_empty())
}

/// The time part (Unix ms) of a stream entry id `ms-seq`.
pub(crate) fn entry_ms(id: &str) -> Option<u64> {
    id.split_once('-')?.0.parse().ok()
}

/// Whether `id` is a stream entry id (`ms-seq`, both decimal).
pub(crate) fn is_entry_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, seq)| {
        !ms.is_empty()
            && !seq.is_empty()
            && ms.len() <= 20
            && seq.len() <= 20
            && ms.bytes().chain(seq.bytes()).all(|b| b.is_ascii_digit())
    })
}

/// Splits a delayed-set member into its priority (the leading digit) and its envelope.
pub(super) fn split_delayed(member: &[u8]) -> (Option<&'static str>, &[u8]) {
    match member.split_first() {
        Some((digit @ b'0'..=b'2', envelope)) => {
            (Some(PRIORITIES[usize::from(digit - b'0')]), envelope)
        }
        _ => (None, member),
    }
}

/// Members of the delayed set by rank, with their due times.
pub(super) fn delayed_range(
    conn: &mut Connection,
    keys: &Keys,
    offset: u64,
    count: usize,
) -> Result<Vec<(Vec<u8>, u64)>, ClusterError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let stop = offset.saturating_add(count as u64 - 1);
    let members: Vec<(Vec<u8>, f64)> = query(
        conn,
        redis::cmd("ZRANGE")
            .arg(&keys.delayed)
            .arg(offset)
            .arg(stop)
            .arg("WITHSCORES"),
        "read the delayed tasks (ZRANGE)",
    )?;
    Ok(members
        .into_iter()
        .map(|(m, score)| (m, score.max(0.0) as u64))
        .collect())
}

/// Who holds a stream entry: its consumer, idle time and deliveries (`XPENDING`), or `None`
/// when no worker has read it.
pub(super) fn pending(
    conn: &mut Connection,
    stream: &str,
    entry: &str,
) -> Result<Option<(String, u64, u64)>, ClusterError> {
    let reply: redis::RedisResult<Value> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(GROUP)
        .arg(entry)
        .arg(entry)
        .arg(1)
        .query(conn);
    let reply = match reply {
        Ok(reply) => reply,
        // No group yet: nobody has read anything.
        Err(e) if conn::is_nogroup(&e) => return Ok(None),
        Err(source) => {
            return Err(ClusterError::Broker {
                action: "read who holds a task (XPENDING)",
                source,
            });
        }
    };
    Ok(conn::array(&reply).first().and_then(|row| {
        let row = conn::array(row);
        let consumer = conn::string(row.get(1)?)?;
        let idle = u64::try_from(conn::int(row.get(2)?)?).ok()?;
        let deliveries = u64::try_from(conn::int(row.get(3)?)?).ok()?;
        Some((consumer, idle, deliveries))
    }))
}

/// The result of task `id` among the newest results of reply list `reply`.
pub(super) fn find_result(
    conn: &mut Connection,
    reply: &str,
    id: &str,
) -> Result<Option<ResultView>, ClusterError> {
    let results: Vec<Vec<u8>> = query(
        conn,
        redis::cmd("LRANGE")
            .arg(reply)
            .arg(0)
            .arg(REPLY_SEARCH as i64 - 1),
        "read a reply list (LRANGE)",
    )?;
    Ok(results
        .iter()
        .filter(|r| contains(r, id.as_bytes()))
        .filter_map(|r| ResultEnvelope::decode(r).ok())
        // A `started` note is not a result (docs/protocol.md, "Started notes").
        .find(|r| r.id == id && r.status != ResultStatus::Started)
        .map(ResultView::from))
}

pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// A search for one task id, with a budget of entries.
pub(super) struct Search<'a> {
    pub(super) id: &'a str,
    /// Entries still to look at.
    pub(super) left: u64,
}

impl Search<'_> {
    /// Takes `n` entries from the budget; false once it is spent.
    fn spend(&mut self, n: usize) -> bool {
        self.left = self.left.saturating_sub(n as u64);
        self.left > 0
    }

    /// The dead letter of the task, newest first.
    pub(super) fn dead(
        &mut self,
        conn: &mut Connection,
        keys: &Keys,
    ) -> Result<Option<Entry>, ClusterError> {
        let mut end = "+".to_owned();
        loop {
            let page: Value = query(
                conn,
                redis::cmd("XREVRANGE")
                    .arg(&keys.dead)
                    .arg(&end)
                    .arg("-")
                    .arg("COUNT")
                    .arg(SEARCH_BATCH),
                "search the dead letters (XREVRANGE)",
            )?;
            let entries: Vec<Entry> = conn::array(&page).iter().filter_map(Entry::parse).collect();
            let more = self.spend(entries.len()) && entries.len() == SEARCH_BATCH;
            if let Some(found) = entries
                .iter()
                .position(|e| e.field("id") == Some(self.id.as_bytes()))
            {
                return Ok(entries.into_iter().nth(found));
            }
            match entries.last() {
                Some(last) if more => end = format!("({}", last.id),
                _ => return Ok(None),
            }
        }
    }

    /// The task in one of the three streams: the stream's index, the entry and its envelope.
    #[allow(clippy::type_complexity)]
    pub(super) fn streams(
        &mut self,
        conn: &mut Connection,
        keys: &Keys,
    ) -> Result<Option<(usize, Entry, Option<EnvelopeView>)>, ClusterError> {
        for (index, stream) in keys.streams.iter().enumerate() {
            let mut start = "-".to_owned();
            loop {
                if self.left == 0 {
                    return Ok(None);
                }
                let page: Value = query(
                    conn,
                    redis::cmd("XRANGE")
                        .arg(stream)
                        .arg(&start)
                        .arg("+")
                        .arg("COUNT")
                        .arg(SEARCH_BATCH),
                    "search a task stream (XRANGE)",
                )?;
                let entries: Vec<Entry> =
                    conn::array(&page).iter().filter_map(Entry::parse).collect();
                let more = self.spend(entries.len()) && entries.len() == SEARCH_BATCH;
                for entry in &entries {
                    let Some(bytes) = entry.field(ENTRY_FIELD) else {
                        continue;
                    };
                    if !contains(bytes, self.id.as_bytes()) {
                        continue;
                    }
                    if let Ok(envelope) = EnvelopeView::decode(bytes) {
                        if envelope.id == self.id {
                            let entry = Entry {
                                id: entry.id.clone(),
                                fields: Vec::new(),
                            };
                            return Ok(Some((index, entry, Some(envelope))));
                        }
                    }
                }
                match entries.last() {
                    Some(last) if more => start = format!("({}", last.id),
                    _ => break,
                }
            }
        }
        Ok(None)
    }

    /// The task in the delayed set: its priority, due time and envelope.
    pub(super) fn delayed(
        &mut self,
        conn: &mut Connection,
        keys: &Keys,
    ) -> Result<Option<(&'static str, u64, EnvelopeView)>, ClusterError> {
        let mut offset = 0u64;
        while self.left > 0 {
            let members = delayed_range(conn, keys, offset, SEARCH_BATCH)?;
            let more = self.spend(members.len()) && members.len() == SEARCH_BATCH;
            for (member, due) in &members {
                if !contains(member, self.id.as_bytes()) {
                    continue;
                }
                let (priority, bytes) = split_delayed(member);
                if let (Some(priority), Ok(envelope)) = (priority, EnvelopeView::decode(bytes)) {
                    if envelope.id == self.id {
                        return Ok(Some((priority, *due, envelope)));
                    }
                }
            }
            if !more {
                break;
            }
            offset += SEARCH_BATCH as u64;
        }
        Ok(None)
    }
}
