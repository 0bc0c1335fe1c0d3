-- lift_log: keeps the log's ids above the projector's checkpoint (see
-- agentexec.projector.floor). Creates the log and the group (at the floor) when missing,
-- raises the log's last id to the floor, then appends each entry to move again (same
-- fields) and deletes the original.
-- KEYS[1] the event log
-- ARGV[1] the projector's consumer group
-- ARGV[2] the floor (the checkpoint)
-- ARGV[3] an id or '': every entry after it up to the floor is appended again
-- ARGV[4..] more ids of entries to append again
-- Returns {raised (1 or 0), old id, new id, old id, new id...}.
--@include ids
redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[2], 'MKSTREAM')
local floor = id(ARGV[2])
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then
    last = info[i + 1]
  end
end
local raised = 0
if below(id(last), floor) then
  redis.call('XSETID', KEYS[1], ARGV[2])
  raised = 1
end
local moves = {}
for i = 4, #ARGV do
  moves[#moves + 1] = ARGV[i]
end
if ARGV[3] ~= '' then
  for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '(' .. ARGV[3], ARGV[2])) do
    moves[#moves + 1] = entry[1]
  end
end
local out = {raised}
for _, old in ipairs(moves) do
  local found = redis.call('XRANGE', KEYS[1], old, old)
  if #found == 1 then
    local new = redis.call('XADD', KEYS[1], '*', unpack(found[1][2]))
    redis.call('XDEL', KEYS[1], old)
    out[#out + 1] = old
    out[#out + 1] = new
  end
end
return out
