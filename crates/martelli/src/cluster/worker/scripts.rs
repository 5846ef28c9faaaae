//! The fetch thread's Lua scripts (the reclaim script is in `cluster/reclaim.rs`).

/// Reads up to ARGV[3] entries across the streams KEYS[1..3], highest priority first, without
/// blocking: the worker never takes more entries than it has free slots. Returns whether the queue's
/// `cancels` key (KEYS[4]) exists, then the entries.
pub(super) const FETCH_SCRIPT: &str = r"
local want = tonumber(ARGV[3])
local out = {}
for i = 1, 3 do
  if want <= 0 then break end
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', want, 'STREAMS', KEYS[i], '>')
  if r then
    for _, e in ipairs(r[1][2]) do
      out[#out + 1] = {i - 1, e[1], e[2]}
      want = want - 1
    end
  end
end
return {redis.call('EXISTS', KEYS[4]), out}
";

/// Moves due members of the delayed set (KEYS[1]) to their stream (KEYS[2..4]); a member is one
/// priority digit followed by the envelope. Atomic, so a delayed task is queued exactly once.
///
/// Also watches running tasks for cancellation (rule 5): returns whether the queue's `cancels` key
/// (KEYS[5]) exists and, only when it does, the 1-based positions among KEYS[7..] of the tombstones
/// that exist; and reads the rate limits (the hash KEYS[6], `HGETALL`; see `ratelimit.rs`). Returns
/// `{moved, cancels, {positions}, {name, limit, ...}}`.
pub(super) const PROMOTE_SCRIPT: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  local key = KEYS[2 + (tonumber(string.sub(m, 1, 1)) or 1)] or KEYS[3]
  redis.call('XADD', key, '*', ARGV[3], string.sub(m, 2))
  redis.call('ZREM', KEYS[1], m)
end
local cancels = redis.call('EXISTS', KEYS[5])
local found = {}
if cancels == 1 then
  for i = 7, #KEYS do
    if redis.call('EXISTS', KEYS[i]) == 1 then
      found[#found + 1] = i - 6
    end
  end
end
-- A user the broker does not let read the limits (an older ACL) still moves delayed tasks.
local ok, limits = pcall(redis.call, 'HGETALL', KEYS[6])
if not ok then limits = {} end
return {#due, cancels, found, limits}
";

/// The most delayed tasks moved to their stream per pass.
pub(super) const PROMOTE_BATCH: usize = 512;

/// The fetch thread's Lua scripts (sent once, then run by their SHA1).
pub(super) struct Scripts {
    pub(super) fetch: redis::Script,
    pub(super) promote: redis::Script,
    pub(super) reclaim: redis::Script,
}
