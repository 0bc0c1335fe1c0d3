-- dead_letter: moves an entry that cannot run to the dead-letter stream; when its task is
-- known, ends the task ERROR. Rejected like finish when another worker holds the entry; an
-- entry whose task already ended is dropped without a second outcome.
-- KEYS[1] queue stream holding the entry
-- KEYS[2] dead-letter stream
-- KEYS[3] event log
-- KEYS[4] result key of the task (of agent "unknown" when the task is not known)
-- ARGV[1] consumer group
-- ARGV[2] entry id
-- ARGV[3] consumer
-- ARGV[4] '1' when the task is known, else '0' (then ARGV[5..8] are unused)
-- ARGV[5] task.failed event JSON
-- ARGV[6] outcome (encoded)
-- ARGV[7] result TTL (s)
-- ARGV[8] result channel of the task
-- ARGV[9..] the dead letter's field/value pairs
-- Returns true when the entry was dead-lettered, false when rejected or already ended.
--@include ownership
if not may_end(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then
  return false
end
local known = ARGV[4] == '1'
local ended = known and redis.call('EXISTS', KEYS[4]) == 1
if not ended then
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, 9))
  if known then
    redis.call('XADD', KEYS[3], '*', 'event', ARGV[5])
    redis.call('SET', KEYS[4], ARGV[6], 'EX', ARGV[7])
    redis.call('PUBLISH', ARGV[8], ARGV[6])
  end
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return not ended
