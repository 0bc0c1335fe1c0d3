-- enqueue_later: like enqueue, but parks the task in its queue's delayed set until it is due
-- and tells the queue's workers when that is.
-- KEYS[1] event log
-- KEYS[2] delayed set of the task's queue
-- KEYS[3] dedup key (the agent marker itself when there is no idempotency key)
-- KEYS[4] agent marker
-- ARGV[1] task.queued event JSON
-- ARGV[2] dedup window (s)
-- ARGV[3] agent id
-- ARGV[4] agent marker TTL (s)
-- ARGV[5] due (ms)
-- ARGV[6] delayed-set member ("h:" or "l:" + event JSON)
-- ARGV[7] schedule channel of the queue
-- Returns {event id, agent id}: those of the first enqueue when the dedup key was taken.
--@include dedup
--@include names
local first = already_queued(KEYS[3])
if first then
  return first
end
local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
redis.call('PUBLISH', ARGV[7], ARGV[5])
return remember(KEYS[3], ARGV[2], ARGV[3], id, name_task(KEYS[4], ARGV[4], ARGV[1]))
