-- projector_release: gives up the projector's lease, if `owner` holds it.
-- KEYS[1] projector lease key
-- ARGV[1] owner
-- Returns 1 when released, 0 when the lease is not the owner's.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
