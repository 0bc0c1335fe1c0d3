-- session_change: changes a conversation session's items and appends the events that record
-- the change, atomically, if the session is still at the version its writer read (so that
-- two writers never both pop the same item, and each event's positions are exact).
-- KEYS[1] event log
-- KEYS[2] session items (a list of item JSON, oldest first)
-- KEYS[3] session version (an integer: how many events changed the session so far)
-- ARGV[1] the version the writer read
-- ARGV[2] 'add', 'pop' or 'clear'
-- ARGV[3] n, how many events follow
-- ARGV[4 .. 3+n] the events' JSON, each advancing the version by one
-- ARGV[4+n ..] for 'add': the items' JSON to push, in order
-- Returns {the number of items after the change, the id of each event}, or false when the
-- version moved (the writer reads again and retries).
local version = tonumber(redis.call('GET', KEYS[3]) or '0')
if version ~= tonumber(ARGV[1]) then
  return false
end
local n = tonumber(ARGV[3])
if ARGV[2] == 'add' then
  for first = 4 + n, #ARGV, 1000 do
    redis.call('RPUSH', KEYS[2], unpack(ARGV, first, math.min(first + 999, #ARGV)))
  end
elseif ARGV[2] == 'pop' then
  redis.call('RPOP', KEYS[2])
elseif ARGV[2] == 'clear' then
  redis.call('DEL', KEYS[2])
end
redis.call('SET', KEYS[3], version + n)
local reply = {redis.call('LLEN', KEYS[2])}
for i = 1, n do
  reply[i + 1] = redis.call('XADD', KEYS[1], '*', 'event', ARGV[3 + i])
end
return reply
