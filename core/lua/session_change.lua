-- session_change: changes a conversation session's items and appends the events that record
-- the change, atomically, if the session is still at the version its writer read (so that
-- two writers never both pop the same item, and each event's positions are exact).
-- KEYS[1] event log
-- KEYS[2] session items (a list of item JSON, oldest first)
-- KEYS[3] session version: "<how many events changed the session so far>:<the latest
--         change's token>"
-- KEYS[4] (from a task's handler) queue stream holding the running task's entry
-- KEYS[5] (from a task's handler) result key of the running task's agent
-- ARGV[1] the version the writer read
-- ARGV[2] 'add', 'pop' or 'clear'
-- ARGV[3] the change's token: a writer that lost the reply runs the script again with it
-- ARGV[4] n, how many events follow
-- ARGV[5] m, how many lease arguments follow: 0 outside a task's handler (unfenced: a
--         session outlives the tasks that use it), 3 from a handler: then
-- ARGV[6..8] consumer group, entry id, consumer of the running task's lease
-- ARGV[6 + m..] the n events' JSON, each advancing the version by one; then, for 'add', the
--          items' JSON to push, in order
-- Returns {the number of items after the change, the id of each event}; {the number of
-- items} alone when the change with this token was the latest applied (a run again); false
-- when the version moved (the writer reads again and retries); -1 (nothing changed) from a
-- handler whose worker lost the task (taken over after its lease expired) or whose task
-- ended, like append_held, so that a late worker cannot change a session behind the run that
-- replaced it.
--@include ownership
local stored = redis.call('GET', KEYS[3]) or '0:'
local colon = string.find(stored, ':', 1, true)
local version = tonumber(string.sub(stored, 1, colon - 1))
if string.sub(stored, colon + 1) == ARGV[3] then
  return {redis.call('LLEN', KEYS[2])}
end
if version ~= tonumber(ARGV[1]) then
  return false
end
local m = tonumber(ARGV[5])
if m > 0 and (not may_end(KEYS[4], ARGV[6], ARGV[7], ARGV[8])
              or redis.call('EXISTS', KEYS[5]) == 1) then
  return -1
end
local n = tonumber(ARGV[4])
local events = 5 + m
if ARGV[2] == 'add' then
  for first = events + 1 + n, #ARGV, 1000 do
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
  reply[i + 1] = redis.call('XADD', KEYS[1], '*', 'event', ARGV[events + i])
end
return reply
