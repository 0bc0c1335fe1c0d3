-- cancel: requests the cancel of a task: sets its cancel marker, appends the request and
-- tells the workers. The request carries the task name its agent marker holds.
-- KEYS[1] result key of the task
-- KEYS[2] cancel marker of the task
-- KEYS[3] event log
-- KEYS[4] agent marker of the task
-- ARGV[1] marker TTL (s)
-- ARGV[2] task.cancel_requested event JSON
-- ARGV[3] cancel channel
-- ARGV[4] agent id
-- Returns the event's id, or false when the task has already ended.
--@include names
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
local id = redis.call('XADD', KEYS[3], '*', 'event', (named(ARGV[2], KEYS[4])))
redis.call('PUBLISH', ARGV[3], ARGV[4])
return id
