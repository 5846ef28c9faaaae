//! Reclaiming: a worker with free slots takes over the tasks whose lease expired (their worker
//! stopped renewing it: it died, hung, or lost the broker), and clears away what the dead worker
//! left in the broker.
//!
//! One script does it all in one round trip (`RECLAIM_SCRIPT`), per stream of the queue:
//!
//! 1. `XPENDING … IDLE <lease>` names the consumers whose entries are idle for a whole lease: the
//!    workers being reclaimed from;
//! 2. `XAUTOCLAIM … <lease> 0-0 COUNT <free>` takes those entries (at most as many as there are free
//!    slots), and `XPENDING` of each gives its delivery count (its attempt number);
//! 3. each worker reclaimed from reads as gone at once: its heartbeat (`P:worker:<consumer>`) is
//!    deleted, so `status` does not show it alive until the heartbeat would have aged out (a worker
//!    that was only cut off from the broker writes it again at its next renewal);
//! 4. its consumer is deleted from the group (`XGROUP DELCONSUMER`) on every stream where it holds
//!    nothing any more. With a sweep (once per lease), so is every other consumer that holds
//!    nothing, has been idle for a lease and has no heartbeat: a worker killed while it held no
//!    task. The check and the deletion are one atomic script, so a consumer that holds an entry is
//!    never deleted (that would drop the entry from the pending list), and a live worker whose idle
//!    consumer is deleted gets a new one with its next read.

use super::GROUP;
use super::conn::{self, Entry};
use redis::{Connection, RedisResult, Value};

/// KEYS[1..3]: the task streams, highest priority first. ARGV: the group, this consumer, the lease
/// (ms), the most entries to claim, the heartbeat key prefix (`P:worker:`), and `1` to sweep idle
/// consumers without a heartbeat. Returns `{claimed, gone, removed}`: the claimed entries as
/// `{stream index, id, fields, deliveries}`, the consumers reclaimed from, and how many consumers
/// were deleted.
const RECLAIM_SCRIPT: &str = r"
local group, me, lease, beat = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local want = tonumber(ARGV[4])
local claimed, owners, gone = {}, {}, {}
for i = 1, 3 do
  if want <= 0 then break end
  for _, p in ipairs(redis.call('XPENDING', KEYS[i], group, 'IDLE', lease, '-', '+', want)) do
    if p[2] ~= me and not owners[p[2]] then
      owners[p[2]] = true
      gone[#gone + 1] = p[2]
    end
  end
  local r = redis.call('XAUTOCLAIM', KEYS[i], group, me, lease, '0-0', 'COUNT', want)
  for _, e in ipairs(r[2]) do
    local d = redis.call('XPENDING', KEYS[i], group, e[1], e[1], 1)
    claimed[#claimed + 1] = {i - 1, e[1], e[2], (d[1] and d[1][4]) or 2}
    want = want - 1
  end
end
for _, name in ipairs(gone) do
  redis.call('DEL', beat .. name)
end
local removed = 0
for i = 1, 3 do
  if #gone == 0 and ARGV[6] ~= '1' then break end
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[i], group)) do
    local f = {}
    for j = 1, #c, 2 do f[c[j]] = c[j + 1] end
    local name = f['name']
    local remove = name ~= me and f['pending'] == 0 and (owners[name] or (ARGV[6] == '1'
      and f['idle'] >= tonumber(lease) and redis.call('EXISTS', beat .. name) == 0))
    if remove then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[i], group, name)
      removed = removed + 1
    end
  end
end
return {claimed, gone, removed}
";

/// The reclaim script (sent once, then run by its SHA1).
pub(super) fn script() -> redis::Script {
    redis::Script::new(RECLAIM_SCRIPT)
}

/// What one reclaim pass did.
#[derive(Debug, Default)]
pub(super) struct Reclaimed {
    /// The entries taken over: stream index, entry, delivery count.
    pub(super) entries: Vec<(usize, Entry, u32)>,
    /// The consumers reclaimed from (their heartbeats are deleted).
    pub(super) gone: Vec<String>,
    /// Consumers deleted from the group.
    pub(super) removed: u64,
}

/// What a reclaim pass needs to know.
pub(super) struct Pass<'a> {
    pub(super) streams: &'a [String; 3],
    /// `P:worker:`, the prefix of every heartbeat key.
    pub(super) heartbeat_prefix: &'a str,
    pub(super) consumer: &'a str,
    pub(super) lease_ms: u64,
    /// The most entries to take (the worker's free slots).
    pub(super) free: usize,
    /// Also delete idle consumers without a heartbeat that hold nothing.
    pub(super) sweep: bool,
}

/// Runs one reclaim pass (see the module docs).
pub(super) fn reclaim(
    conn: &mut Connection,
    script: &redis::Script,
    pass: &Pass<'_>,
) -> RedisResult<Reclaimed> {
    let value: Value = script
        .key(&pass.streams[0])
        .key(&pass.streams[1])
        .key(&pass.streams[2])
        .arg(GROUP)
        .arg(pass.consumer)
        .arg(pass.lease_ms)
        .arg(pass.free)
        .arg(pass.heartbeat_prefix)
        .arg(if pass.sweep { 1 } else { 0 })
        .invoke(conn)?;
    let reply = conn::array(&value);
    let mut out = Reclaimed::default();
    for item in reply.first().map_or(&[][..], conn::array) {
        if let Some((index, entry, rest)) = Entry::parse_indexed(item) {
            let deliveries = rest
                .first()
                .and_then(conn::int)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(2);
            out.entries.push((index, entry, deliveries));
        }
    }
    out.gone = reply
        .get(1)
        .map_or(&[][..], conn::array)
        .iter()
        .filter_map(conn::string)
        .collect();
    out.removed = reply
        .get(2)
        .and_then(conn::int)
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0);
    Ok(out)
}
