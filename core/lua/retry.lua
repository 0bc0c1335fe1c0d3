-- retry: moves a held entry to its queue's delayed set, so that the retry waits without
-- holding a worker, and appends task.retried.
-- KEYS[1] queue stream holding the entry
-- KEYS[2] delayed set of the queue
-- KEYS[3] event log
-- ARGV[1] consumer group
-- ARGV[2] entry id
-- ARGV[3] consumer
-- ARGV[4] delayed-set member of the next attempt ("h:" or "l:" + event JSON)
-- ARGV[5] due (ms)
-- ARGV[6] task.retried event JSON
-- ARGV[7] on a retry after a lost reply: the time (ms) of the first try (else absent)
-- Returns the event's id (the first run's, when it appended it), or false when the task was
-- taken over (see finish).
--@include ownership
--@include appended
if not may_end(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then
  return false
end
local first = appended(KEYS[3], ARGV[7], ARGV[6])
if first then
  return first
end
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
local id = redis.call('XADD', KEYS[3], '*', 'event', ARGV[6])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return id
