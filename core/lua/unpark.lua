-- unpark: queues a parked task (see lock) on its queue's high-priority stream again at once,
-- out of its lock's turn, so that a cancel request ends it there (START sees its cancel marker) instead of
-- when its turn comes.
-- KEYS[1] waiters index of the queue
-- KEYS[2] the lock's waiting list
-- KEYS[3] the lock's holders
-- KEYS[4] lock index of the queue
-- KEYS[5] the queue's high-priority stream
-- ARGV[1] agent id
-- ARGV[2] the lock's name
-- Returns 1 when the task was parked there (and is queued again), else 0.
--@include locks
local prefix = ARGV[1] .. ' '
for _, waiter in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  if string.sub(waiter, 1, #prefix) == prefix then
    redis.call('LREM', KEYS[2], 1, waiter)
    redis.call('HDEL', KEYS[1], ARGV[1])
    redis.call('XADD', KEYS[5], '*', 'event', string.sub(waiter, #prefix + 3))
    tracked(KEYS[3], KEYS[2], KEYS[4], ARGV[2])
    return 1
  end
end
return 0
