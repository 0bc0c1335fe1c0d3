-- Task names and tenants: the agent marker holds its task's identity, the JSON its events
-- carry after "task_name": the name as a JSON string (with its quotes), followed by
-- ',"tenant":"<tenant>"' when the task has a tenant (an event's `tenant` field directly
-- follows its `task_name`), after "<agent id> <event id> " where the marker doubles as the
-- enqueue's dedup key (see `dedup`); a marker without one (as older versions wrote) knows
-- none. Every script that sets a marker takes the identity from the event it writes, and
-- every append of an event recorded without a name (`"task_name":""`) gets the marker's, so
-- each event in the log carries its task's name, and its tenant when the task has one (an
-- event that has its name but no tenant gets the marker's tenant when the names agree). An
-- event's first "task_name" key is its own: it precedes every field that may hold an object.
-- A tenant holds no quote or backslash (see `agentexec.tenants`).
-- name_of(event): the task name of `event` as JSON (with quotes), and where it starts and
-- ends in `event`; nil when it has none.
-- named(event, marker): `event`, with the identity `marker` holds when it has none.
-- mark(marker, ttl, event): `named`, and sets `marker` to the identity for `ttl` seconds,
-- keeping its dedup record.
-- name_task(marker, ttl, event): sets `marker` to the identity of `event`, a task.queued, for
-- `ttl` seconds; returns it.
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
local TENANT = ',"tenant":"'
local function tenant_after(event, last)
  -- The tenant fragment (',"tenant":"..."') right after the name ending at `last`, or ''.
  if string.sub(event, last + 1, last + #TENANT) ~= TENANT then
    return ''
  end
  local close = string.find(event, '"', last + #TENANT + 1, true)
  return close and string.sub(event, last + 1, close) or ''
end
local function split(identity)
  -- '"name","tenant":"t"' -> '"name"', ',"tenant":"t"' (a quote inside a JSON string is
  -- escaped, so the fragment's unescaped quotes cannot occur in the name).
  local at = string.find(identity, TENANT, 1, true)
  if not at then
    return identity, ''
  end
  return string.sub(identity, 1, at - 1), string.sub(identity, at)
end
local function name_from(event, value)
  local name, first, last = name_of(event)
  if not name then
    return event, name
  end
  local own = tenant_after(event, last)
  local known = name_in(value)
  local known_name, known_tenant = '""', ''
  if known then
    known_name, known_tenant = split(known)
  end
  if name ~= '""' then
    if own ~= '' or known_tenant == '' or known_name ~= name then
      return event, name .. own
    end
    return string.sub(event, 1, last) .. known_tenant .. string.sub(event, last + 1),
      name .. known_tenant
  end
  if known_name == '""' then
    return event, name .. own
  end
  local tenant = own ~= '' and own or known_tenant
  return string.sub(event, 1, first - 1) .. known_name .. tenant ..
    string.sub(event, last + 1 + #own), known_name .. tenant
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
  local name, _, last = name_of(event)
  local identity = name and (name .. tenant_after(event, last)) or '""'
  redis.call('SET', marker, identity, 'EX', ttl)
  return identity
end
