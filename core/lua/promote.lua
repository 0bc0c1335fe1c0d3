-- promote: moves the due members of a queue's delayed set to their stream.
-- KEYS[1] delayed set of the queue
-- KEYS[2] the queue's high-priority stream (members "h:...")
-- KEYS[3] the queue's low-priority stream (members "l:...")
-- ARGV[1] now (ms)
-- ARGV[2] most members to move
-- Returns the next due time (ms) of what stays, or false when the set is empty.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  local stream = KEYS[3]
  if string.sub(member, 1, 2) == 'h:' then
    stream = KEYS[2]
  end
  redis.call('XADD', stream, '*', 'event', string.sub(member, 3))
  redis.call('ZREM', KEYS[1], member)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #nxt == 0 then
  return false
end
return nxt[2]
