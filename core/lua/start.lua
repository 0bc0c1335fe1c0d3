-- start: records that a worker starts the task of the entry it read (task.started), unless
-- the task must not start there.
-- KEYS[1] event log
-- KEYS[2] queue stream holding the entry
-- KEYS[3] result key of the task
-- KEYS[4] held key of the task (see renew)
-- KEYS[5..] cancel markers: the task's, then its parent's if it has one
-- ARGV[1] task.started event JSON
-- ARGV[2] consumer group
-- ARGV[3] entry id
-- ARGV[4] consumer
-- ARGV[5] on a retry after a lost reply: the time (ms) of the first try (else absent)
-- Returns the event's id (the first run's, when it appended it), or why not:
--  0 another worker holds the entry (it took it over while this one had it queued: only
--    one of them may run it);
-- -1 the task already ended (an entry queued again after Redis lost its data, whose first
--    run ended meanwhile): the entry is dropped;
-- -2 another worker still runs the task, on an entry Redis lost (its held key): the caller
--    defers the entry;
-- false the task (or its parent) was canceled before it started.
--@include ownership
--@include appended
if not may_end(KEYS[2], ARGV[2], ARGV[3], ARGV[4]) then
  return 0
end
local first = appended(KEYS[1], ARGV[5], ARGV[1])
if first then
  return first
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
  redis.call('XDEL', KEYS[2], ARGV[3])
  return -1
end
local holder = redis.call('GET', KEYS[4])
if holder and holder ~= ARGV[4] then
  return -2
end
if redis.call('EXISTS', unpack(KEYS, 5)) > 0 then
  return false
end
return redis.call('XADD', KEYS[1], '*', 'event', ARGV[1])
