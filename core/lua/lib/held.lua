-- held_append(log, marker, result, stream, dedup, event, ttl, group, entry, consumer,
-- dedup_ttl): the append of an event a task's own handler wrote (needs `names` and
-- `ownership`). Returns the id of the first append under `dedup` and false on a retry after
-- a lost reply; false when the worker lost the entry of `stream` or the task ended (`result`
-- exists); else appends `event` to `log` (named from `marker`, kept `ttl` seconds), keeps its
-- id under `dedup` for `dedup_ttl` seconds, and returns the id and true.
-- Key parameters: log, marker, result, stream, dedup.
local function held_append(log, marker, result, stream, dedup, event, ttl, group, entry, consumer,
                           dedup_ttl)
  local first = redis.call('GET', dedup)
  if first then
    return first, false
  end
  if not may_end(stream, group, entry, consumer) or redis.call('EXISTS', result) == 1 then
    return false
  end
  local id = redis.call('XADD', log, '*', 'event', mark(marker, ttl, event))
  redis.call('SET', dedup, id, 'EX', dedup_ttl)
  return id, true
end
