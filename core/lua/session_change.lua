-- session_change: changes a conversation session's items and appends the events that record
-- the change, atomically, if the session is still at the version its writer read (so that
-- two writers never both pop the same item, and each event's positions are exact).
-- KEYS[1] event log
-- KEYS[2] session items (a list of item JSON, oldest first)
-- KEYS[3] session version: "<how many events changed the session so far>:<the latest
--         change's token>"
-- ARGV[1] the version the writer read
-- ARGV[2] 'add', 'pop' or 'clear'
-- ARGV[3] the change's token: a writer that lost the reply runs the script again with it
-- ARGV[4] n, how many events follow
-- ARGV[5..] the n events' JSON, each advancing the version by one; then, for 'add', the
--          items' JSON to push, in order
-- Returns {the number of items after the change, the id of each event}; {the number of
-- items} alone when the change with this token was the latest applied (a run again); false
-- when the version moved (the writer reads again and retries).
local stored = redis.call('GET', KEYS[3]) or '0:'
local colon = string.find(stored, ':', 1, true)
local version = tonumber(string.sub(stored, 1, colon - 1))
if string.sub(stored, colon + 1) == ARGV[3] then
  return {redis.call('LLEN', KEYS[2])}
end
if version ~= tonumber(ARGV[1]) then
  return false
end
local n = tonumber(ARGV[4])
if ARGV[2] == 'add' then
  for first = 5 + n, #ARGV, 1000 do
    redis.call('RPUSH', KEYS[2], unpack(ARGV, first, math.min(first + 999, #ARGV)))
  end
elseif ARGV[2] == 'pop' then
  redis.call('RPOP', KEYS[2])
elseif ARGV[2] == 'clear' then
  redis.call('DEL', KEYS[2])
end
redis.call('SET', KEYS[3], (version + n) .. ':' .. ARGV[3])
local reply = {redis.call('LLEN', KEYS[2])}
for i = 1, n do
  reply[i + 1] = redis.call('XADD', KEYS[1], '*', 'event', ARGV[4 + i])
end
return reply
