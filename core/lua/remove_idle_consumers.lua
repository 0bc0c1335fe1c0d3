-- remove_idle_consumers: removes the group's consumers that hold no pending entry and were
-- idle long enough (names of workers that exited). Checked and removed in one step: a
-- consumer that takes an entry in between would lose it with its name. A live worker that was
-- removed is recreated by its next read.
-- KEYS[1..] a queue's streams
-- ARGV[1] consumer group
-- ARGV[2] idle time (ms)
-- Returns stream, name pairs of the consumers removed.
local removed = {}
for _, stream in ipairs(KEYS) do
  local consumers = redis.pcall('XINFO', 'CONSUMERS', stream, ARGV[1])
  if not consumers.err then
    for _, consumer in ipairs(consumers) do
      local info = {}
      for i = 1, #consumer, 2 do
        info[consumer[i]] = consumer[i + 1]
      end
      if info['pending'] == 0 and info['idle'] >= tonumber(ARGV[2]) then
        redis.call('XGROUP', 'DELCONSUMER', stream, ARGV[1], info['name'])
        removed[#removed + 1] = stream
        removed[#removed + 1] = info['name']
      end
    end
  end
end
return removed
