-- apply(i, last): applies a task's transition (agentexec.transitions), encoded in
-- ARGV[i..last] as ops: 'x' key-index event-JSON (XADD), 's' key-index value TTL (SET),
-- 'p' channel message (PUBLISH), and '?' key-index n m: the n items after it if
-- KEYS[key-index] exists, else the m items after those. Every key is named by its index into
-- KEYS, so that the script declares it.
local function apply(i, last)
  while i <= last do
    local op = ARGV[i]
    if op == 'x' then
      redis.call('XADD', KEYS[tonumber(ARGV[i + 1])], '*', 'event', ARGV[i + 2])
      i = i + 3
    elseif op == 's' then
      redis.call('SET', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], 'EX', ARGV[i + 3])
      i = i + 4
    elseif op == 'p' then
      redis.call('PUBLISH', ARGV[i + 1], ARGV[i + 2])
      i = i + 3
    else
      local yes, no = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
      local first = i + 4
      if redis.call('EXISTS', KEYS[tonumber(ARGV[i + 1])]) == 1 then
        apply(first, first + yes - 1)
      else
        apply(first + yes, first + yes + no - 1)
      end
      i = first + yes + no
    end
  end
end
