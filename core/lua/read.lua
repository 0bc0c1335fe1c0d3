-- read: new entries of the highest priority stream that has any, in one round trip where an
-- XREADGROUP per priority would take one each.
-- KEYS[1..] a queue's streams, highest priority first
-- ARGV[1] consumer group
-- ARGV[2] consumer
-- ARGV[3] most entries to read
-- Returns XREADGROUP's reply (fields as flat lists), or false when every stream is empty.
for _, stream in ipairs(KEYS) do
  local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
    'STREAMS', stream, '>')
  if reply then
    return reply
  end
end
return false
