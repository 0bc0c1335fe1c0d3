-- The dedup prelude of every enqueue. A dedup key holds "agent_id event_id" of the first
-- enqueue under it, then " " and its task name (see `names`: the dedup key may be the agent
-- marker itself).
-- already_queued(dedup): {event id, agent id} of the first enqueue under `dedup`, or nil.
-- remember(dedup, window, agent_id, id, name): records this enqueue (of task `name`, as
-- JSON) as the first for `window` seconds and returns its {event id, agent id}.
-- Key parameters: dedup.
local function already_queued(dedup)
  local first = redis.call('GET', dedup)
  local sep = first and string.find(first, ' ', 1, true)
  if sep then
    local id = string.sub(first, sep + 1)
    local last = string.find(id, ' ', 1, true)
    if last then
      id = string.sub(id, 1, last - 1)
    end
    return {id, string.sub(first, 1, sep - 1)}
  end
end
local function remember(dedup, window, agent_id, id, name)
  redis.call('SET', dedup, agent_id .. ' ' .. id .. ' ' .. (name or '""'), 'EX', window)
  return {id, agent_id}
end
