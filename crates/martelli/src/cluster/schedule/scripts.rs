//! The Lua scripts of periodic schedules (docs/protocol.md, "Addition 4"). Each runs whole or not
//! at all in Redis: adding writes the hash and the index together, and firing claims a tick and
//! queues its task together, so no crash can separate them. Every time is the broker's (`TIME`).

/// Adds or replaces a schedule. KEYS: the hash, the index. ARGV: name, replace (`0`/`1`), rev,
/// `cron`|`every`, its value, task, queue, priority, envelope, keep (`` none), catch_up, enabled,
/// the next tick (ms). Returns `{'added'|'replaced'|'exists', now}`.
pub(crate) const ADD_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nows = string.format('%d', now)
local exists = redis.call('EXISTS', KEYS[1]) == 1
if exists and ARGV[2] ~= '1' then return {'exists', nows} end
local other = 'every'
if ARGV[4] == 'every' then other = 'cron' end
redis.call('HDEL', KEYS[1], other, 'keep')
redis.call('HSET', KEYS[1], 'rev', ARGV[3], ARGV[4], ARGV[5], 'task', ARGV[6], 'queue', ARGV[7],
  'priority', ARGV[8], 'envelope', ARGV[9], 'catch_up', ARGV[11], 'enabled', ARGV[12], 'next', ARGV[13])
if ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'keep', ARGV[10]) end
if not exists then
  redis.call('HSET', KEYS[1], 'created', nows, 'last', nows, 'fired', 0, 'skipped', 0)
end
redis.call('ZADD', KEYS[2], ARGV[13], ARGV[1])
if exists then return {'replaced', nows} end
return {'added', nows}
";

/// Removes a schedule. KEYS: the hash, the index. ARGV: name. Returns 1 if it existed.
pub(crate) const REMOVE_SCRIPT: &str = r"
local n = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return n
";

/// Enables or disables a schedule. KEYS: the hash. ARGV: `1`/`0`. Returns 1 if it exists.
pub(crate) const ENABLE_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'enabled', ARGV[1])
return 1
";

/// What a scheduler looks at. KEYS: the index. ARGV: the most names to return. Returns `{now,
/// {names whose score <= now}, the lowest score after now or '-1'}`.
pub(crate) const PEEK_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nows = string.format('%d', now)
local due = redis.call('ZRANGE', KEYS[1], '-inf', nows, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[1]))
local later = redis.call('ZRANGE', KEYS[1], '(' .. nows, '+inf', 'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')
return {nows, due, later[2] or '-1'}
";

/// Claims a tick and queues its task, atomically. KEYS: the hash, the index, the stream, the
/// task's record. ARGV: name, rev, due, prev (`` none), next, task id. Returns `{outcome, now}`,
/// outcome one of `fired`, `skipped`, `disabled`, `taken`, `early`, `changed`.
///
/// Nothing is written before every check has passed, and the task (record, then `XADD`) is
/// written before the claim, so a failing write leaves the tick unclaimed.
pub(crate) const FIRE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nows = string.format('%d', now)
if redis.call('HGET', KEYS[1], 'rev') ~= ARGV[2] then return {'changed', nows} end
local due = tonumber(ARGV[3])
if due > now then return {'early', nows} end
local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '-1') or -1
if last >= due then
  -- Claimed already; keep the index at least at this tick's successor.
  redis.call('ZADD', KEYS[2], 'GT', ARGV[5], ARGV[1])
  return {'taken', nows}
end
local outcome = 'fired'
if redis.call('HGET', KEYS[1], 'enabled') == '0' then
  outcome = 'disabled'
elseif redis.call('HGET', KEYS[1], 'catch_up') == 'skip' and ARGV[4] ~= '' and tonumber(ARGV[4]) > last then
  outcome = 'skipped'
end
if outcome == 'fired' then
  local env = redis.call('HGET', KEYS[1], 'envelope')
  if not env or #env < 1 then return redis.error_reply('ERR schedule ' .. ARGV[1] .. ' has no envelope') end
  local b = string.byte(env, 1)
  local n, body
  if b >= 0x80 and b <= 0x8f then
    n = b - 0x80; body = string.sub(env, 2)
  elseif b == 0xde and #env >= 3 then
    n = string.byte(env, 2) * 256 + string.byte(env, 3); body = string.sub(env, 4)
  else
    return redis.error_reply('ERR schedule ' .. ARGV[1] .. ': its envelope is not a MessagePack map (fixmap or map16)')
  end
  n = n + 1
  if n > 65535 then return redis.error_reply('ERR schedule ' .. ARGV[1] .. ': its envelope has too many keys') end
  local head
  if n <= 15 then head = string.char(0x80 + n) else head = string.char(0xde, math.floor(n / 256), n % 256) end
  local function str(s)
    local l = #s
    if l < 32 then return string.char(0xa0 + l) .. s end
    if l < 256 then return string.char(0xd9, l) .. s end
    return string.char(0xda, math.floor(l / 256), l % 256) .. s
  end
  local keep = redis.call('HGET', KEYS[1], 'keep')
  if keep then
    redis.call('HSET', KEYS[4], 'state', 'queued', 'task', redis.call('HGET', KEYS[1], 'task') or '',
      'attempts', 0, 'updated', nows)
    redis.call('PEXPIRE', KEYS[4], tonumber(keep) + 604800000)
  end
  redis.call('XADD', KEYS[3], '*', 'e', head .. str('id') .. str(ARGV[6]) .. body)
  redis.call('HINCRBY', KEYS[1], 'fired', 1)
  redis.call('HSET', KEYS[1], 'last_fired', ARGV[3], 'fired_at', nows, 'last_id', ARGV[6])
else
  redis.call('HINCRBY', KEYS[1], 'skipped', 1)
end
redis.call('HSET', KEYS[1], 'last', ARGV[3], 'next', ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
return {outcome, nows}
";
