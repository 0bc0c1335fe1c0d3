-- Task names: the agent marker holds its task's name as the JSON string the task's events
-- carry (with its quotes), after "<agent id> <event id> " where the marker doubles as the
-- enqueue's dedup key (see `dedup`); a marker without one (as older versions wrote) knows
-- none. Every script that sets a marker takes the name from the event it writes, and every
-- append of an event recorded without a name (`"task_name":""`) gets the marker's, so each
-- event in the log carries its task's name. An event's first "task_name" key is its own: it
-- precedes every field that may hold an object.
-- name_of(event): the task name of `event` as JSON (with quotes), and where it starts and
-- ends in `event`; nil when it has none.
-- named(event, marker): `event`, with the name `marker` holds when it has none.
-- mark(marker, ttl, event): `named`, and sets `marker` to the name for `ttl` seconds,
-- keeping its dedup record.
-- name_task(marker, ttl, event): sets `marker` to the name of `event`, a task.queued, for
-- `ttl` seconds; returns the name.
-- Key parameters: marker.
local function name_of(event)
  local _, quote = string.find(event, '"task_name":"', 1, true)
  if not quote then
    return nil
  end
  local i = quote + 1
  while true do
    local at = string.find(event, '["\\]', i)
    if not at then
      return nil
    elseif string.byte(event, at) == 34 then
      return string.sub(event, quote, at), quote, at
    end
    i = at + 2
  end
end
local function name_in(value)
  local quote = value and string.find(value, '"', 1, true)
  if not quote then
    return nil
  end
  return string.sub(value, quote), string.sub(value, 1, quote - 1)
end
local function name_from(event, value)
  local name, first, last = name_of(event)
  if name ~= '""' then
    return event, name
  end
  local known = name_in(value)
  if not known or known == '""' then
    return event, name
  end
  return string.sub(event, 1, first - 1) .. known .. string.sub(event, last + 1), known
end
local function named(event, marker)
  return (name_from(event, redis.call('GET', marker)))
end
local function mark(marker, ttl, event)
  local value = redis.call('GET', marker)
  local _, record = name_in(value)
  if not record and value and string.find(value, ' ', 1, true) then
    record = value .. ' '
  end
  local name
  event, name = name_from(event, value)
  redis.call('SET', marker, (record or '') .. (name or '""'), 'EX', ttl)
  return event
end
local function name_task(marker, ttl, event)
  local name = name_of(event) or '""'
  redis.call('SET', marker, name, 'EX', ttl)
  return name
end
