-- checkpoint_held: appends an agent.checkpoint event written by a task's own handler and, in
-- the same step, saves the run's conversation so far under the run's name, so that a worker
-- taking the task over reads what the log says was saved. Fenced like append_held: rejected
-- once the worker running it lost the entry or the task ended.
-- KEYS[1] event log
-- KEYS[2] agent marker of the event's agent
-- KEYS[3] result key of the event's agent
-- KEYS[4] queue stream holding the task's entry
-- KEYS[5] dedup key of this event (a retry after a lost reply returns the first append's id)
-- KEYS[6] checkpoints hash of the event's agent (run name -> saved conversation)
-- ARGV[1] event JSON
-- ARGV[2] agent marker and checkpoints TTL (s)
-- ARGV[3] consumer group
-- ARGV[4] entry id
-- ARGV[5] consumer
-- ARGV[6] dedup key TTL (s)
-- ARGV[7] run name (hash field)
-- ARGV[8] saved conversation (JSON)
-- Returns the event's id, or false when rejected.
--@include names
--@include ownership
--@include held
local id, appended = held_append(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2],
                                 ARGV[3], ARGV[4], ARGV[5], ARGV[6])
if appended then
  redis.call('HSET', KEYS[6], ARGV[7], ARGV[8])
  redis.call('EXPIRE', KEYS[6], ARGV[2])
end
return id
