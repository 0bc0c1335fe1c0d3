-- track: changes a fan-out tracker's counts (op 'incr' or 'decr') or registers its fan-in
-- (op 'fan_in'), appending the op's event; when the batch completes, appends
-- tracker.completed and queues the fan-in, once. Counts exist only here, so they are spliced
-- into the events' JSON (which end in '}').
-- KEYS[1] tracker hash
-- KEYS[2] counted set (the dedup keys already counted)
-- KEYS[3] event log
-- KEYS[4] queue stream of the fan-in (its own for 'fan_in'; else the registered one, if any)
-- KEYS[5] agent marker of the fan-in
-- ARGV[1] op: 'incr', 'decr' or 'fan_in'
-- ARGV[2] dedup key of the op ('' for none)
-- ARGV[3] the op's event JSON
-- ARGV[4] tracker.completed event JSON
-- ARGV[5] TTL while the batch is open (s)
-- ARGV[6] TTL once it is complete (s)
-- ARGV[7] for 'fan_in': the fan-in's task.queued event JSON
-- ARGV[8] for 'fan_in': the fan-in's agent id
-- ARGV[9] for 'fan_in': agent marker TTL (s)
-- Returns {pending, total, 1 if counted else 0, fan-in agent id or false}; or, changing
-- nothing, {queue stream, agent marker} of the registered fan-in when it is still to be
-- queued and KEYS[4] and KEYS[5] do not name them: run it again declaring those.
--@include names
--@include queue
local state = KEYS[1]
local registered = redis.call('HMGET', state, 'fan_in_stream', 'fan_in_marker', 'fired')
if registered[1] and not registered[3]
    and (registered[1] ~= KEYS[4] or registered[2] ~= KEYS[5]) then
  return {registered[1], registered[2]}
end
local function counted(json, pending, total, extra)
  return string.sub(json, 1, -2) .. ',"pending":' .. pending .. ',"total":' .. total
    .. extra .. '}'
end
local op = ARGV[1]
local changed = 1
if op ~= 'fan_in' and ARGV[2] ~= '' then
  changed = redis.call('SADD', KEYS[2], op .. ':' .. ARGV[2])
end
local pending, total
if changed == 0 then
  pending = tonumber(redis.call('HGET', state, 'pending') or '0')
elseif op == 'incr' then
  pending = redis.call('HINCRBY', state, 'pending', 1)
  redis.call('HINCRBY', state, 'total', 1)
elseif op == 'decr' then
  pending = redis.call('HINCRBY', state, 'pending', -1)
else
  if redis.call('HSETNX', state, 'fan_in_id', ARGV[8]) == 1 then
    redis.call('HSET', state, 'fan_in', ARGV[7], 'fan_in_stream', KEYS[4], 'fan_in_marker',
      KEYS[5], 'marker_ttl', ARGV[9])
  end
  pending = tonumber(redis.call('HGET', state, 'pending') or '0')
end
total = tonumber(redis.call('HGET', state, 'total') or '0')
if changed == 1 and op ~= 'fan_in' then
  redis.call('XADD', KEYS[3], '*', 'event', counted(ARGV[3], pending, total, ''))
end
local fan_in_id = redis.call('HGET', state, 'fan_in_id')
local ttl = ARGV[5]
if total > 0 and pending <= 0 then
  ttl = ARGV[6]
  if redis.call('HSETNX', state, 'completed', '1') == 1 then
    local extra = ''
    if fan_in_id then
      extra = ',"fan_in_id":"' .. fan_in_id .. '"'
    end
    redis.call('XADD', KEYS[3], '*', 'event', counted(ARGV[4], pending, total, extra))
  end
  if fan_in_id and redis.call('HSETNX', state, 'fired', '1') == 1 then
    local f = redis.call('HMGET', state, 'fan_in', 'marker_ttl')
    queue(KEYS[3], KEYS[4], KEYS[5], f[2], f[1])
  end
end
redis.call('EXPIRE', state, ttl)
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('EXPIRE', KEYS[2], ttl)
end
return {pending, total, changed, fan_in_id}
