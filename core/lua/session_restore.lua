-- session_restore: puts back the live items of a conversation session that Redis lost, as the
-- read model holds them, unless the session was written since the loss.
-- KEYS[1] session items (a list of item JSON, oldest first)
-- KEYS[2] session version (see session_change)
-- ARGV[1] the version to restore: the session's latest recorded change's
-- ARGV[2..] the items' JSON, oldest first
-- Returns 1 when restored, 0 when the session has a version already (written since).
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('DEL', KEYS[1])
for first = 2, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
redis.call('SET', KEYS[2], ARGV[1] .. ':restored')
return 1
