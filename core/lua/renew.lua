-- renew: resets the idle time of the entries a consumer still holds, and returns the ones it
-- lost: pending to another consumer, or not pending to anyone once their task has ended. An
-- entry pending to nobody whose task has not ended was lost by Redis (it came back empty):
-- the worker keeps running it, its outcome is recorded (see finish), and its held key stands
-- in for the lease, so that a copy queued again from the archive waits (see start).
-- KEYS[1] queue stream holding the entries
-- KEYS[2..n+1] result key of each entry's task (n entries)
-- KEYS[n+2..2n+1] held key of each entry's task
-- ARGV[1] consumer group
-- ARGV[2] consumer
-- ARGV[3] lease (ms)
-- ARGV[4..] the entry ids, in the order of their keys
-- Returns the ids of the entries lost.
local n = #ARGV - 3
local lost = {}
for i = 1, n do
  local id = ARGV[i + 3]
  local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if not pending.err and #pending == 1 then
    if pending[1][2] == ARGV[2] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
    else
      lost[#lost + 1] = id
    end
  elseif redis.call('EXISTS', KEYS[i + 1]) == 1 then
    lost[#lost + 1] = id
  else
    -- pcall: out of memory, Redis refuses this SET; the other leases must still be renewed.
    redis.pcall('SET', KEYS[i + 1 + n], ARGV[2], 'PX', ARGV[3])
  end
end
return lost
