-- projector_renew: extends the projector's lease, if `owner` holds it.
-- KEYS[1] projector lease key
-- ARGV[1] owner
-- ARGV[2] lease (ms)
-- Returns 1 when extended, 0 when the lease is not the owner's.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
