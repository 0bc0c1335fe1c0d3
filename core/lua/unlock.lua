-- unlock: releases a task's holds on its locks (when it ended here: completed, failed,
-- canceled, or parked for a retry) and wakes the next waiters; with no agent id, only wakes
-- waiters of locks whose holds expired (the workers' sweep: a holder died).
-- KEYS[1] lock index of the queue
-- KEYS[2] waiters index of the queue
-- KEYS[3] the queue's high-priority stream (where woken waiters go)
-- KEYS[4..] per lock: its holders, then its waiting list
-- ARGV[1] agent id of the holder ("" for none)
-- ARGV[2] now (ms)
-- ARGV[3] lease (ms): how long a woken waiter's hold lasts before it runs
-- ARGV[4..] per lock: its name, then its capacity
-- Returns how many waiters it woke.
--@include locks
local woken = 0
for i = 1, (#KEYS - 3) / 2 do
  local holders = KEYS[2 + 2 * i]
  if ARGV[1] ~= '' then
    redis.call('ZREM', holders, ARGV[1])
  end
  local waiting = KEYS[3 + 2 * i]
  local capacity, name = ARGV[3 + 2 * i], ARGV[2 + 2 * i]
  woken = woken + wake(holders, waiting, capacity, ARGV[2], ARGV[3], KEYS[1], KEYS[2], KEYS[3], name)
end
return woken
