-- defer: moves a held entry to its queue's delayed set, unchanged and without an event
-- (see start's -2).
-- KEYS[1] queue stream holding the entry
-- KEYS[2] delayed set of the queue
-- ARGV[1] consumer group
-- ARGV[2] entry id
-- ARGV[3] consumer
-- ARGV[4] delayed-set member ("h:" or "l:" + event JSON)
-- ARGV[5] due (ms)
-- Returns true, or false when another worker holds the entry.
--@include ownership
if not may_end(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then
  return false
end
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return true
