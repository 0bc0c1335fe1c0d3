-- projector_read: reads the event log through the projector's consumer group, only while
-- `owner` holds the projector's lease, so that a projector that lost it takes no entries.
-- KEYS[1] projector lease key
-- KEYS[2] event log
-- ARGV[1] owner
-- ARGV[2] consumer group
-- ARGV[3] consumer
-- ARGV[4] most entries to read
-- ARGV[5] cursor ('>' new entries, '0' pending ones)
-- Returns {0} when the lease is not the owner's, else {1, XREADGROUP's reply}.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {0}
end
return {1, redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4],
                      'STREAMS', KEYS[2], ARGV[5])}
