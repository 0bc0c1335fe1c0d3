-- The task locks of a queue (see agentexec.locks): a lock is a sorted set of its holders'
-- agent ids, scored by when each hold expires (ms), and a list of its waiters, each an agent
-- id, a space and its delayed-set member ("h:" or "l:" + task.queued JSON). The queue's lock
-- index is a sorted set of the locks that have waiters, scored by when a slot may free up
-- (its earliest hold's expiry): the workers' sweep wakes waiters whose holder died there.
-- A woken waiter goes to the queue's high-priority stream, whatever its priority: it already
-- reached the head of the queue once, so it runs before the tasks queued after it.
-- Key parameters: holders, waiting, index, waiters, stream.

-- tracked(holders, waiting, index, name): keeps lock `name` in the index while it has
-- waiters, scored by its earliest hold's expiry (0 when none holds it).
local function tracked(holders, waiting, index, name)
  if redis.call('LLEN', waiting) == 0 then
    redis.call('ZREM', index, name)
    return
  end
  local first = redis.call('ZRANGE', holders, 0, 0, 'WITHSCORES')
  redis.call('ZADD', index, first[2] or 0, name)
end

-- wake(holders, waiting, capacity, now, lease, index, waiters, stream, name): drops the
-- expired holds of lock `name`, then gives each free slot to its next waiter (a hold for a
-- lease, which the waiter renews once it runs) and queues that waiter on `stream` again.
-- Returns how many it woke.
local function wake(holders, waiting, capacity, now, lease, index, waiters, stream, name)
  redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
  local woken = 0
  while redis.call('ZCARD', holders) < tonumber(capacity) do
    local waiter = redis.call('LPOP', waiting)
    if not waiter then
      break
    end
    local agent = string.sub(waiter, 1, 36)
    redis.call('ZADD', holders, tonumber(now) + tonumber(lease), agent)
    redis.call('HDEL', waiters, agent)
    redis.call('XADD', stream, '*', 'event', string.sub(waiter, 40))
    woken = woken + 1
  end
  tracked(holders, waiting, index, name)
  return woken
end
