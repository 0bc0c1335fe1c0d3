-- append_known: appends an activity event, only if its agent id is known (its marker or its
-- stored result exists) when asked to check, and keeps the marker alive.
-- KEYS[1] event log
-- KEYS[2] agent marker
-- KEYS[3] result key
-- ARGV[1] event JSON
-- ARGV[2] agent marker TTL (s)
-- ARGV[3] '1' to check that the agent id is known, else '0'
-- Returns the event's id, or false when the agent id is not known.
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[2], KEYS[3]) == 0 then
  return false
end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
return redis.call('XADD', KEYS[1], '*', 'event', ARGV[1])
