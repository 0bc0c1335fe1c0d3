-- lock: takes the locks of the task of a held entry (its lock key's, its tenant's; see
-- agentexec.locks) before it starts, or parks the entry in the waiting list of the first lock
-- that is full, with a task.waiting event, so that no worker holds it while it waits. A
-- parked task gives up the holds it had been handed (a waiter woken by one lock that finds
-- another full), waking their next waiters.
-- KEYS[1] queue stream holding the entry
-- KEYS[2] event log
-- KEYS[3] lock index of the queue
-- KEYS[4] waiters index of the queue (agent id -> the lock it waits for)
-- KEYS[5] the queue's high-priority stream (where woken waiters go)
-- KEYS[6..5+2n] per lock (n locks): its holders, then its waiting list
-- KEYS[6+2n..] cancel markers: the task's, then its parent's if it has one
-- ARGV[1] consumer group
-- ARGV[2] entry id
-- ARGV[3] consumer
-- ARGV[4] agent id
-- ARGV[5] now (ms)
-- ARGV[6] lease (ms)
-- ARGV[7] the entry's delayed-set member ("h:" or "l:" + task.queued JSON)
-- ARGV[8] n, how many locks
-- ARGV[9] on a retry after a lost reply: the time (ms) of the first try (else "")
-- ARGV[10..] per lock: its name, its capacity, its task.waiting event JSON
-- Returns 1 when the task holds every lock (or was canceled: it starts, and START ends it),
-- 0 when it was parked (also on a retry whose first run parked it), false when another
-- worker holds the entry.
--@include ownership
--@include appended
--@include locks
local n = tonumber(ARGV[8])
if not may_end(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then
  return false
end
if #KEYS > 5 + 2 * n and redis.call('EXISTS', unpack(KEYS, 6 + 2 * n)) > 0 then
  return 1
end
local now = tonumber(ARGV[5])
local lease = tonumber(ARGV[6])
local full = nil
for i = 1, n do
  local holders = KEYS[4 + 2 * i]
  redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
  if not redis.call('ZSCORE', holders, ARGV[4])
      and redis.call('ZCARD', holders) >= tonumber(ARGV[8 + 3 * i]) then
    full = i
    break
  end
end
if not full then
  for i = 1, n do
    local holders = KEYS[4 + 2 * i]
    redis.call('ZADD', holders, now + lease, ARGV[4])
  end
  return 1
end
local since = nil
if ARGV[9] ~= '' then
  since = ARGV[9]
end
if appended(KEYS[2], since, ARGV[9 + 3 * full]) then
  return 0
end
for i = 1, n do
  local holders = KEYS[4 + 2 * i]
  if i ~= full and redis.call('ZREM', holders, ARGV[4]) == 1 then
    local waiting = KEYS[5 + 2 * i]
    local capacity, name = ARGV[8 + 3 * i], ARGV[7 + 3 * i]
    wake(holders, waiting, capacity, now, lease, KEYS[3], KEYS[4], KEYS[5], name)
  end
end
redis.call('RPUSH', KEYS[5 + 2 * full], ARGV[4] .. ' ' .. ARGV[7])
redis.call('HSET', KEYS[4], ARGV[4], ARGV[7 + 3 * full])
tracked(KEYS[4 + 2 * full], KEYS[5 + 2 * full], KEYS[3], ARGV[7 + 3 * full])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[2], '*', 'event', ARGV[9 + 3 * full])
return 0
