-- The dedup prelude of every enqueue. A dedup key holds "agent_id event_id" of the first
-- enqueue under it.
-- already_queued(dedup): {event id, agent id} of the first enqueue under `dedup`, or nil.
-- remember(dedup, window, agent_id, id): records this enqueue as the first for `window`
-- seconds and returns its {event id, agent id}.
-- Key parameters: dedup.
local function already_queued(dedup)
  local first = redis.call('GET', dedup)
  if first then
    local sep = string.find(first, ' ', 1, true)
    return {string.sub(first, sep + 1), string.sub(first, 1, sep - 1)}
  end
end
local function remember(dedup, window, agent_id, id)
  redis.call('SET', dedup, agent_id .. ' ' .. id, 'EX', window)
  return {id, agent_id}
end
