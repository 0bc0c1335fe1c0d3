-- finish: ends a task: appends its terminal event, stores and publishes its outcome, acks and
-- deletes its entry, and applies its transition. Rejected when the task was taken over
-- (pending to another consumer) or already ended (its result exists): a worker that lost its
-- lease cannot end the task. When the entry is pending to nobody and no result exists, Redis
-- lost it (it came back empty): the outcome stands.
-- KEYS[1] event log
-- KEYS[2] result key of the task
-- KEYS[3] queue stream holding the entry
-- KEYS[4..] keys of the transition's ops (named by index in ARGV[8..])
-- ARGV[1] terminal event JSON
-- ARGV[2] outcome (encoded)
-- ARGV[3] result TTL (s)
-- ARGV[4] result channel of the task
-- ARGV[5] consumer group
-- ARGV[6] entry id
-- ARGV[7] consumer
-- ARGV[8..] the transition's ops (see lib/apply.lua)
-- Returns the event's id, or false when rejected.
--@include ownership
--@include apply
if not may_end(KEYS[3], ARGV[5], ARGV[6], ARGV[7]) or redis.call('EXISTS', KEYS[2]) == 1 then
  return false
end
local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[2])
redis.call('XACK', KEYS[3], ARGV[5], ARGV[6])
redis.call('XDEL', KEYS[3], ARGV[6])
apply(8, #ARGV)
return id
