-- unpark: queues a parked task (see lock) on its stream again at once, out of its lock's
-- turn, so that a cancel request ends it there (START sees its cancel marker) instead of
-- when its turn comes.
-- KEYS[1] waiters index of the queue
-- KEYS[2] the lock's waiting list
-- KEYS[3] the lock's holders
-- KEYS[4] lock index of the queue
-- KEYS[5] the queue's high-priority stream
-- KEYS[6] the queue's low-priority stream
-- ARGV[1] agent id
-- ARGV[2] the lock's name
-- Returns 1 when the task was parked there (and is queued again), else 0.
--@include locks
local prefix = ARGV[1] .. ' '
for _, waiter in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  if string.sub(waiter, 1, #prefix) == prefix then
    redis.call('LREM', KEYS[2], 1, waiter)
    redis.call('HDEL', KEYS[1], ARGV[1])
    local member = string.sub(waiter, #prefix + 1)
    local stream = KEYS[6]
    if string.sub(member, 1, 2) == 'h:' then
      stream = KEYS[5]
    end
    redis.call('XADD', stream, '*', 'event', string.sub(member, 3))
    tracked(KEYS[3], KEYS[2], KEYS[4], ARGV[2])
    return 1
  end
end
return 0
