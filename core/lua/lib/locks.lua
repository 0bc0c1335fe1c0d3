-- The task locks of a queue (see agentexec.locks): a lock is a sorted set of its holders'
-- agent ids, scored by when each hold expires (ms), and a list of its waiters, each an agent
-- id, a space and its delayed-set member ("h:" or "l:" + task.queued JSON). The queue's lock
-- index is a sorted set of the locks that have waiters, scored by when a slot may free up
-- (its earliest hold's expiry): the workers' sweep wakes waiters whose holder died there.
-- Key parameters: holders, waiting, index, waiters, high, low.

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

-- wake(holders, waiting, capacity, now, lease, index, waiters, high, low, name): drops the
-- expired holds of lock `name`, then gives each free slot to its next waiter (a hold for a
-- lease, which the waiter renews once it runs) and queues that waiter on its stream again.
-- Returns how many it woke.
local function wake(holders, waiting, capacity, now, lease, index, waiters, high, low, name)
  redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
  local woken = 0
  while redis.call('ZCARD', holders) < tonumber(capacity) do
    local waiter = redis.call('LPOP', waiting)
    if not waiter then
      break
    end
    local agent = string.sub(waiter, 1, 36)
    local member = string.sub(waiter, 38)
    redis.call('ZADD', holders, tonumber(now) + tonumber(lease), agent)
    redis.call('HDEL', waiters, agent)
    if string.sub(member, 1, 2) == 'h:' then
      redis.call('XADD', high, '*', 'event', string.sub(member, 3))
    else
      redis.call('XADD', low, '*', 'event', string.sub(member, 3))
    end
    woken = woken + 1
  end
  tracked(holders, waiting, index, name)
  return woken
end
