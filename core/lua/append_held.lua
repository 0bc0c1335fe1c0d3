-- append_held: appends an event written by a task's own handler: rejected once the worker
-- running it lost the entry (taken over after its lease expired) or the task ended, so that a
-- worker that comes back late cannot write into the history of the run that replaced it. An
-- event recorded without a task name gets the one the agent marker holds.
-- KEYS[1] event log
-- KEYS[2] agent marker of the event's agent
-- KEYS[3] result key of the event's agent
-- KEYS[4] queue stream holding the task's entry
-- KEYS[5] dedup key of this event (a retry after a lost reply returns the first append's id)
-- ARGV[1] event JSON
-- ARGV[2] agent marker TTL (s)
-- ARGV[3] consumer group
-- ARGV[4] entry id
-- ARGV[5] consumer
-- ARGV[6] dedup key TTL (s)
-- Returns the event's id, or false when rejected.
--@include names
--@include ownership
--@include held
local id = held_append(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3],
                       ARGV[4], ARGV[5], ARGV[6])
return id
