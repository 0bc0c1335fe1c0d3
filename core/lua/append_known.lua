-- append_known: appends an event from outside its task's handler, only if its agent id is
-- known (its marker or its stored result exists) when asked to check, and keeps the marker
-- alive. An event recorded without a task name gets the one the marker holds.
-- KEYS[1] event log
-- KEYS[2] agent marker
-- KEYS[3] result key
-- ARGV[1] event JSON
-- ARGV[2] agent marker TTL (s)
-- ARGV[3] '1' to check that the agent id is known, else '0'
-- Returns the event's id, or false when the agent id is not known.
--@include names
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[2], KEYS[3]) == 0 then
  return false
end
return redis.call('XADD', KEYS[1], '*', 'event', mark(KEYS[2], ARGV[2], ARGV[1]))
