-- enqueue: appends a task.queued event to the log and the task to its queue's stream, at
-- most once per dedup key: by the caller's idempotency key, or by agent id, so that a retry
-- after a lost reply cannot queue the task twice.
-- KEYS[1] event log
-- KEYS[2] queue stream (of the task's priority)
-- KEYS[3] dedup key (the agent marker itself when there is no idempotency key)
-- KEYS[4] agent marker (lets activity writes tell known agent ids, and name their events)
-- ARGV[1] task.queued event JSON
-- ARGV[2] dedup window (s)
-- ARGV[3] agent id
-- ARGV[4] agent marker TTL (s)
-- Returns {event id, agent id}: those of the first enqueue when the dedup key was taken.
--@include dedup
--@include names
--@include queue
local first = already_queued(KEYS[3])
if first then
  return first
end
local id, name = queue(KEYS[1], KEYS[2], KEYS[4], ARGV[4], ARGV[1])
return remember(KEYS[3], ARGV[2], ARGV[3], id, name)
