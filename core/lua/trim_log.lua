-- trim_log: trims the event log below what every reader is done with (see
-- agentexec.projector.retention), in one step: the bound cannot move between reading the
-- groups and trimming.
-- KEYS[1] the event log
-- ARGV[1] the projector's consumer group: nothing is trimmed while the log has none (Redis
--         lost the log and the projector has not taken it over: entries there may sit below
--         the checkpoint without being archived)
-- ARGV[2] the projector's checkpoint (an id): what it committed and archived
-- ARGV[3] the hot window in milliseconds: entries newer than that (by Redis's clock) stay
-- Returns {entries removed, the bound ('' when nothing could go)}: every entry below the
-- least of the checkpoint, the start of the hot window and each group's oldest pending entry
-- (else the one after its last delivered entry) is removed.
--@include ids
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, ''}
end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
local owned = false
for _, group in ipairs(groups) do
  for i = 1, #group, 2 do
    if group[i] == 'name' and group[i + 1] == ARGV[1] then
      owned = true
    end
  end
end
if not owned then
  return {0, ''}
end
local now = redis.call('TIME')
local bound = id(ARGV[2])
local hot = {tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[3]), 0}
if below(hot, bound) then
  bound = hot
end
for _, group in ipairs(groups) do
  local fields = {}
  for i = 1, #group, 2 do
    fields[group[i]] = group[i + 1]
  end
  local floor
  if tonumber(fields['pending']) > 0 then
    floor = id(redis.call('XPENDING', KEYS[1], fields['name'])[2])
  else
    -- All it was given is acknowledged: it needs nothing up to its last delivered entry.
    floor = id(fields['last-delivered-id'])
    floor[2] = floor[2] + 1
  end
  if below(floor, bound) then
    bound = floor
  end
end
if not below({0, 1}, bound) then
  return {0, ''}
end
local minid = string.format('%d-%d', bound[1], bound[2])
return {redis.call('XTRIM', KEYS[1], 'MINID', minid), minid}
