-- enqueue_pipeline: records a pipeline run (its task.queued event) and queues its first
-- step, deduplicated like enqueue.
-- KEYS[1] event log
-- KEYS[2] queue stream of the first step
-- KEYS[3] dedup key (the run's agent marker itself when there is no idempotency key)
-- KEYS[4] the run's agent marker
-- KEYS[5] the first step's agent marker
-- ARGV[1] the run's task.queued event JSON
-- ARGV[2] dedup window (s)
-- ARGV[3] run id (the run's agent id)
-- ARGV[4] agent marker TTL (s)
-- ARGV[5] the first step's task.queued event JSON
-- Returns {event id, run id} of the run: those of the first call when the dedup key was taken.
--@include dedup
--@include names
--@include queue
local first = already_queued(KEYS[3])
if first then
  return first
end
local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[1])
local name = name_task(KEYS[4], ARGV[4], ARGV[1])
queue(KEYS[1], KEYS[2], KEYS[5], ARGV[4], ARGV[5])
return remember(KEYS[3], ARGV[2], ARGV[3], id, name)
