-- queue(log, stream, marker, marker_ttl, event): queues a task: its task.queued event goes to
-- the event log and to its queue's stream, and its agent id is marked as known, with its
-- task name (include `names` first). Returns the event's id in the log and the task name.
-- Key parameters: log, stream, marker.
local function queue(log, stream, marker, marker_ttl, event)
  local id = redis.call('XADD', log, '*', 'event', event)
  redis.call('XADD', stream, '*', 'event', event)
  return id, name_task(marker, marker_ttl, event)
end
