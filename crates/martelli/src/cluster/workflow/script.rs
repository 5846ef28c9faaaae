//! The one script that counts a member of a workflow and queues its callback (docs/protocol.md,
//! "Addition 5: workflows", "Counting").

/// Counts member ARGV[1] of the workflow KEYS[1] once, and queues the callback once.
///
/// ARGV: [1] the member's index (from 0), [2] its result's status, [3] its value (MessagePack, with
/// `ok`) or its error, [4] now (Unix ms), [5] the worker, [6] the attempt, [7] the member's task
/// name, [8] the workflow's id. KEYS[2], optional: the index of workflows (`{prefix}:flows`), where
/// the workflow's score becomes the time its hash now expires once it fires or fails. Returns 0 when the workflow is unknown (expired) or ended already, 1 when the member was
/// counted (or had been), 2 when this run queued the callback, 3 when it failed the workflow.
///
/// Invariants (each holds because a script runs atomically):
/// 1. `r:I` is set once (`HSETNX`), and `done` grows only when it is: a member that ran twice, or
///    whose worker died after storing its result and before acknowledging it, counts once.
/// 2. The callback is added only by the run that sets `fired` (`HSETNX`): exactly once.
/// 3. `fails` grows with `done` only (a member that ended badly and was counted, with `on_fail` =
///    `ignore`), or is set to 1 once (the member that failed the workflow).
/// 4. `state` goes from `open` to `fired` or `failed`, never back: a workflow that failed never
///    fires, and one that fired never fails.
pub(crate) const FLOW_SCRIPT: &str = r"
local f = KEYS[1]
local total = tonumber(redis.call('HGET', f, 'total'))
if not total then return 0 end
local function arr(n)
  if n < 16 then return string.char(144 + n) end
  if n < 65536 then return '\220' .. struct.pack('>I2', n) end
  return '\221' .. struct.pack('>I4', n)
end
local function bin(n)
  if n < 256 then return '\196' .. string.char(n) end
  if n < 65536 then return '\197' .. struct.pack('>I2', n) end
  return '\198' .. struct.pack('>I4', n)
end
local state = redis.call('HGET', f, 'state')
local keep = redis.call('HGET', f, 'keep')
local ok = ARGV[2] == 'ok'
local function ended()
  redis.call('PEXPIRE', f, keep)
  if KEYS[2] then
    redis.call('ZADD', KEYS[2], 'XX', tonumber(ARGV[4]) + tonumber(keep), ARGV[8])
  end
end
if ok or redis.call('HGET', f, 'on_fail') == 'ignore' then
  local value = ARGV[3]
  if not ok then value = '\192' end
  local done
  if redis.call('HSETNX', f, 'r:' .. ARGV[1], value) == 1 then
    done = redis.call('HINCRBY', f, 'done', 1)
    if not ok then redis.call('HINCRBY', f, 'fails', 1) end
  else
    done = tonumber(redis.call('HGET', f, 'done'))
  end
  if state ~= 'open' or done < total then return 1 end
  if redis.call('HSETNX', f, 'fired', ARGV[4]) == 0 then return 1 end
  local input
  if redis.call('HGET', f, 'shape') == 'one' then
    input = redis.call('HGET', f, 'r:0')
  else
    local parts = {arr(total)}
    for k = 0, total - 1 do
      parts[#parts + 1] = redis.call('HGET', f, 'r:' .. k)
    end
    input = table.concat(parts)
  end
  local payload = input
  if redis.call('HGET', f, 'pass') == 'first' then
    local argc = tonumber(redis.call('HGET', f, 'argc')) or 0
    payload = arr(argc + 1) .. input .. (redis.call('HGET', f, 'args') or '')
  end
  local head = redis.call('HGET', f, 'head')
  redis.call('XADD', redis.call('HGET', f, 'stream'), '*', 'e', head .. bin(#payload) .. payload)
  redis.call('HSET', f, 'state', 'fired')
  ended()
  return 2
end
if state ~= 'open' then return 0 end
redis.call('HSET', f, 'state', 'failed', 'failed_by', ARGV[1], 'fails', 1)
ended()
local rec = redis.call('HGET', f, 'end')
local cur = redis.call('HGET', rec, 'state')
if cur ~= 'done' and cur ~= 'failed' then
  local who = redis.call('HGET', f, 'label')
  if redis.call('HGET', f, 'shape') ~= 'one' then
    who = who .. ' ' .. (tonumber(ARGV[1]) + 1) .. ' of ' .. total
  end
  local err = who .. ' (task ' .. ARGV[7] .. ') failed (' .. ARGV[2] .. '): ' .. ARGV[3]
  local result = cmsgpack.pack({v = 1, id = redis.call('HGET', f, 'end_id'), status = 'failed',
    error = err, attempts = tonumber(ARGV[6]), worker = ARGV[5]})
  redis.call('HSET', rec, 'state', 'failed', 'updated', ARGV[4], 'result', result,
    'worker', ARGV[5])
  redis.call('PEXPIRE', rec, keep)
end
return 3
";
