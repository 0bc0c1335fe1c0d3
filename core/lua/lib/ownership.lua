-- may_end(stream, group, id, consumer): true when the entry `id` may be ended by `consumer`:
-- pending to it, or pending to nobody (the stream or group is gone).
-- Key parameters: stream.
local function may_end(stream, group, id, consumer)
  local pending = redis.pcall('XPENDING', stream, group, id, id, 1)
  if pending.err or #pending == 0 then
    return true
  end
  return pending[1][2] == consumer
end
