"""Lua scripts that make a multi-key step atomic without MULTI, so that many of them can share
one pipeline round trip (see `Batcher`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

# Prepended to scripts that check ownership. Returns true when the entry may be ended by
# `consumer`: pending to it, or pending to nobody (the stream or group is gone).
_OWNERSHIP = """
local function may_end(stream, group, id, consumer)
  local pending = redis.pcall('XPENDING', stream, group, id, id, 1)
  if pending.err or #pending == 0 then
    return true
  end
  return pending[1][2] == consumer
end
"""


# Prepended to scripts that a worker may run again after losing the reply. Returns the id of
# the entry of `stream` from `since` (ms) on that holds `event`: the append of the earlier
# run, when it happened. Scans only on such a retry (`since` given), so a normal run pays
# nothing.
_APPENDED = """
local function appended(stream, since, event)
  if not since then
    return nil
  end
  for _, entry in ipairs(redis.call('XRANGE', stream, since, '+', 'COUNT', 100000)) do
    if entry[2][2] == event then
      return entry[1]
    end
  end
end
"""


# Prepended to the enqueue scripts. A dedup key holds "agent_id event_id" of the first enqueue
# under it; the agent marker lets activity writes tell known agent ids.
_DEDUP = """
local function already_queued(dedup)
  local first = redis.call('GET', dedup)
  if first then
    local sep = string.find(first, ' ', 1, true)
    return {string.sub(first, sep + 1), string.sub(first, 1, sep - 1)}
  end
end
local function remember(dedup, window, marker, marker_ttl, agent_id, id)
  redis.call('SET', marker, '1', 'EX', marker_ttl)
  redis.call('SET', dedup, agent_id .. ' ' .. id, 'EX', window)
  return {id, agent_id}
end
"""


# Prepended to the scripts that apply a task's transition (agentexec.transitions): applies the
# ops in ARGV[i..last]: 'x' key-index event-JSON (XADD), 's' key-index value TTL (SET),
# 'p' channel message (PUBLISH), and '?' key-index n m: the n items after it if KEYS[key-index]
# exists, else the m items after those.
_APPLY = """
local function apply(i, last)
  while i <= last do
    local op = ARGV[i]
    if op == 'x' then
      redis.call('XADD', KEYS[tonumber(ARGV[i + 1])], '*', 'event', ARGV[i + 2])
      i = i + 3
    elseif op == 's' then
      redis.call('SET', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], 'EX', ARGV[i + 3])
      i = i + 4
    elseif op == 'p' then
      redis.call('PUBLISH', ARGV[i + 1], ARGV[i + 2])
      i = i + 3
    else
      local yes, no = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
      local first = i + 4
      if redis.call('EXISTS', KEYS[tonumber(ARGV[i + 1])]) == 1 then
        apply(first, first + yes - 1)
      else
        apply(first + yes, first + yes + no - 1)
      end
      i = first + yes + no
    end
  end
end
"""


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


ENQUEUE = Script(
    "enqueue",
    _DEDUP
    + """
-- KEYS: event log, queue stream, dedup key, agent marker.
-- ARGV: event JSON, dedup window (s), agent id, agent marker TTL (s).
-- The dedup key makes enqueue idempotent: by the caller's idempotency key, and by agent id
-- so that a retry after a lost reply cannot queue the task twice. Returns the queued event's
-- id and agent id (those of the first enqueue when the key was already taken).
local first = already_queued(KEYS[3])
if first then
  return first
end
local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[1])
redis.call('XADD', KEYS[2], '*', 'event', ARGV[1])
return remember(KEYS[3], ARGV[2], KEYS[4], ARGV[4], ARGV[3], id)
""",
)

START = Script(
    "start",
    _OWNERSHIP
    + _APPENDED
    + """
-- KEYS: event log, queue stream, result key, held key, then cancel markers: the task's and
-- its parent's, if it has one.
-- ARGV: task.started event JSON, group, entry id, consumer; on a retry after a lost reply,
-- the time (ms) of the first try.
-- Returns the event's id (the first run's, when it appended it), or why the task must not
-- start here:
--  0 another worker holds the entry (it took it over while this one had it queued: only
--    one of them may run it);
-- -1 the task already ended (an entry queued again after Redis lost its data, whose first
--    run ended meanwhile): the entry is dropped;
-- -2 another worker still runs the task, on an entry Redis lost (its held key, see RENEW):
--    the caller defers the entry;
--  false the task (or its parent) was canceled before it started.
if not may_end(KEYS[2], ARGV[2], ARGV[3], ARGV[4]) then
  return 0
end
local first = appended(KEYS[1], ARGV[5], ARGV[1])
if first then
  return first
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
  redis.call('XDEL', KEYS[2], ARGV[3])
  return -1
end
local holder = redis.call('GET', KEYS[4])
if holder and holder ~= ARGV[4] then
  return -2
end
if redis.call('EXISTS', unpack(KEYS, 5)) > 0 then
  return false
end
return redis.call('XADD', KEYS[1], '*', 'event', ARGV[1])
""",
)

READ = Script(
    "read",
    """
-- KEYS: a queue's streams, highest priority first. ARGV: group, consumer, count.
-- New entries of the highest priority stream that has any, in one round trip where an
-- XREADGROUP per priority would take one each. Returns XREADGROUP's reply, or false.
for _, stream in ipairs(KEYS) do
  local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
    'STREAMS', stream, '>')
  if reply then
    return reply
  end
end
return false
""",
)

DEFER = Script(
    "defer",
    _OWNERSHIP
    + """
-- KEYS: queue stream, delayed set. ARGV: group, entry id, consumer, delayed member, due (ms).
-- Moves a held entry to the delayed set, unchanged and without an event (see START's -2).
if not may_end(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then
  return false
end
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return true
""",
)

RETRY = Script(
    "retry",
    _OWNERSHIP
    + _APPENDED
    + """
-- KEYS: queue stream, delayed set, event log.
-- ARGV: group, entry id, consumer, delayed member, due (ms), task.retried event JSON; on a
-- retry after a lost reply, the time (ms) of the first try.
-- Moves a held entry to the delayed set, so that the retry waits without holding a worker.
-- Rejected when the task was taken over (see FINISH). Returns the event's id.
if not may_end(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then
  return false
end
local first = appended(KEYS[3], ARGV[7], ARGV[6])
if first then
  return first
end
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
local id = redis.call('XADD', KEYS[3], '*', 'event', ARGV[6])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return id
""",
)

PROMOTE = Script(
    "promote",
    """
-- KEYS: delayed set, high stream, low stream. ARGV: now (ms), limit.
-- Moves due members ("h:" or "l:" + event JSON) to their stream; returns the next due time.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  local stream = KEYS[3]
  if string.sub(member, 1, 2) == 'h:' then
    stream = KEYS[2]
  end
  redis.call('XADD', stream, '*', 'event', string.sub(member, 3))
  redis.call('ZREM', KEYS[1], member)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #nxt == 0 then
  return false
end
return nxt[2]
""",
)

CANCEL = Script(
    "cancel",
    """
-- KEYS: result key, cancel marker, event log. ARGV: marker TTL (s), cancel-requested event
-- JSON, cancel channel, agent id. Returns false when the task has already ended.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
local id = redis.call('XADD', KEYS[3], '*', 'event', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return id
""",
)

FINISH = Script(
    "finish",
    _OWNERSHIP
    + _APPLY
    + """
-- KEYS: event log, result key, queue stream.
-- ARGV: event JSON, outcome, result TTL (s), result channel, group, entry id, consumer.
-- Rejected when the task was taken over (pending to another consumer) or already ended (its
-- result exists): a worker that lost its lease cannot end the task. When the entry is pending
-- to nobody and no result exists, Redis lost it (it came back empty): the outcome stands.
if not may_end(KEYS[3], ARGV[5], ARGV[6], ARGV[7]) or redis.call('EXISTS', KEYS[2]) == 1 then
  return false
end
local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[2])
redis.call('XACK', KEYS[3], ARGV[5], ARGV[6])
redis.call('XDEL', KEYS[3], ARGV[6])
-- Then the task's transition, ARGV[8...].
apply(8, #ARGV)
return id
""",
)

TRANSITION = Script(
    "transition",
    _APPLY
    + """
-- KEYS and ARGV: a task's transition alone, for outcomes recorded by another script (a dead
-- letter's, whose ARGV ends with the entry's fields).
apply(1, #ARGV)
return true
""",
)

DEAD_LETTER = Script(
    "dead_letter",
    _OWNERSHIP
    + """
-- KEYS: queue stream, dead-letter stream, event log, result key.
-- ARGV: group, entry id, consumer, '1' when the task is known (then:) task.failed event
-- JSON, outcome, result TTL (s), result channel; then the dead letter's field/value pairs
-- from ARGV[9]. Rejected like FINISH when another worker holds the entry; an entry whose
-- task already ended is dropped without a second outcome.
if not may_end(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then
  return false
end
local known = ARGV[4] == '1'
local ended = known and redis.call('EXISTS', KEYS[4]) == 1
if not ended then
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, 9))
  if known then
    redis.call('XADD', KEYS[3], '*', 'event', ARGV[5])
    redis.call('SET', KEYS[4], ARGV[6], 'EX', ARGV[7])
    redis.call('PUBLISH', ARGV[8], ARGV[6])
  end
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return not ended
""",
)

APPEND_HELD = Script(
    "append_held",
    _OWNERSHIP
    + """
-- KEYS: event log, agent marker, result key, queue stream, dedup key.
-- ARGV: event JSON, agent marker TTL (s), group, entry id, consumer, dedup TTL (s).
-- An event appended by a task's own handler: rejected once the worker running it lost the
-- entry (taken over after its lease expired) or the task ended, so that a worker that comes
-- back late cannot write into the history of the run that replaced it. The dedup key (one
-- per event) makes a retry after a lost reply return the first append's id.
local first = redis.call('GET', KEYS[5])
if first then
  return first
end
if not may_end(KEYS[4], ARGV[3], ARGV[4], ARGV[5]) or redis.call('EXISTS', KEYS[3]) == 1 then
  return false
end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[1])
redis.call('SET', KEYS[5], id, 'EX', ARGV[6])
return id
""",
)

RENEW = Script(
    "renew",
    """
-- KEYS: queue stream, then the result key of each entry's task, then its held key.
-- ARGV: group, consumer, lease (ms), then the entry ids (in the order of their keys).
-- Resets the idle time of the entries this consumer still holds; returns the ones it lost:
-- pending to another consumer, or not pending to anyone once their task has ended. An entry
-- pending to nobody whose task has not ended was lost by Redis (it came back empty): the
-- worker keeps running it, its outcome is recorded (see FINISH), and its held key stands in
-- for the lease, so that a copy queued again from the archive waits (see START).
local n = #ARGV - 3
local lost = {}
for i = 1, n do
  local id = ARGV[i + 3]
  local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if not pending.err and #pending == 1 then
    if pending[1][2] == ARGV[2] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
    else
      lost[#lost + 1] = id
    end
  elseif redis.call('EXISTS', KEYS[i + 1]) == 1 then
    lost[#lost + 1] = id
  else
    -- pcall: out of memory, Redis refuses this SET; the other leases must still be renewed.
    redis.pcall('SET', KEYS[i + 1 + n], ARGV[2], 'PX', ARGV[3])
  end
end
return lost
""",
)

REQUEUE_HELD = Script(
    "requeue_held",
    """
-- KEYS: dedup key, delayed set. ARGV: dedup window (s), due (ms), delayed member.
-- Queues a task that was running when Redis lost its data once more, in the delayed set
-- (due after a lease: by then a worker still running it holds its held key). Once per dedup
-- key. No event: the task's activity stays RUNNING.
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  return 1
end
return 0
""",
)

ENQUEUE_LATER = Script(
    "enqueue_later",
    _DEDUP
    + """
-- KEYS: event log, delayed set, dedup key, agent marker.
-- ARGV: event JSON, dedup window (s), agent id, agent marker TTL (s), due (ms), delayed
-- member, schedule channel.
-- Like ENQUEUE, but parks the task in the delayed set and tells the workers when it is due.
local first = already_queued(KEYS[3])
if first then
  return first
end
local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
redis.call('PUBLISH', ARGV[7], ARGV[5])
return remember(KEYS[3], ARGV[2], KEYS[4], ARGV[4], ARGV[3], id)
""",
)

ENQUEUE_PIPELINE = Script(
    "enqueue_pipeline",
    """
-- KEYS: event log, first step's queue stream, dedup key, run marker, step marker.
-- ARGV: run's task.queued JSON, first step's task.queued JSON, dedup window (s), run id,
-- marker TTL (s).
-- Records a pipeline run and queues its first step, idempotently like ENQUEUE. Returns the
-- run's queued event id and run id (those of the first call when the key was taken).
local first = redis.call('GET', KEYS[3])
if first then
  local sep = string.find(first, ' ', 1, true)
  return {string.sub(first, sep + 1), string.sub(first, 1, sep - 1)}
end
local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[1])
redis.call('XADD', KEYS[1], '*', 'event', ARGV[2])
redis.call('XADD', KEYS[2], '*', 'event', ARGV[2])
redis.call('SET', KEYS[4], '1', 'EX', ARGV[5])
redis.call('SET', KEYS[5], '1', 'EX', ARGV[5])
redis.call('SET', KEYS[3], ARGV[4] .. ' ' .. id, 'EX', ARGV[3])
return {id, ARGV[4]}
""",
)

TRACK = Script(
    "track",
    """
-- KEYS: tracker hash, counted set, event log.
-- ARGV: op ('incr', 'decr' or 'fan_in'), dedup key ('' for none), the op's event JSON,
-- tracker.completed JSON, TTL while open (s), TTL once complete (s); for 'fan_in' also the
-- fan-in task.queued JSON, its queue stream, its agent marker, its agent id, marker TTL.
-- Counts exist only here, so they are spliced into the events' JSON (which end in '}').
-- Returns {pending, total, 1 if counted else 0, fan-in agent id or false}.
local function counted(json, pending, total, extra)
  return string.sub(json, 1, -2) .. ',"pending":' .. pending .. ',"total":' .. total
    .. extra .. '}'
end
local op = ARGV[1]
local state = KEYS[1]
local changed = 1
if op ~= 'fan_in' and ARGV[2] ~= '' then
  changed = redis.call('SADD', KEYS[2], op .. ':' .. ARGV[2])
end
local pending, total
if changed == 0 then
  pending = tonumber(redis.call('HGET', state, 'pending') or '0')
elseif op == 'incr' then
  pending = redis.call('HINCRBY', state, 'pending', 1)
  redis.call('HINCRBY', state, 'total', 1)
elseif op == 'decr' then
  pending = redis.call('HINCRBY', state, 'pending', -1)
else
  if redis.call('HSETNX', state, 'fan_in_id', ARGV[10]) == 1 then
    redis.call('HSET', state, 'fan_in', ARGV[7], 'fan_in_stream', ARGV[8], 'fan_in_marker',
      ARGV[9], 'marker_ttl', ARGV[11])
  end
  pending = tonumber(redis.call('HGET', state, 'pending') or '0')
end
total = tonumber(redis.call('HGET', state, 'total') or '0')
if changed == 1 and op ~= 'fan_in' then
  redis.call('XADD', KEYS[3], '*', 'event', counted(ARGV[3], pending, total, ''))
end
local fan_in_id = redis.call('HGET', state, 'fan_in_id')
local ttl = ARGV[5]
if total > 0 and pending <= 0 then
  ttl = ARGV[6]
  if redis.call('HSETNX', state, 'completed', '1') == 1 then
    local extra = ''
    if fan_in_id then
      extra = ',"fan_in_id":"' .. fan_in_id .. '"'
    end
    redis.call('XADD', KEYS[3], '*', 'event', counted(ARGV[4], pending, total, extra))
  end
  if fan_in_id and redis.call('HSETNX', state, 'fired', '1') == 1 then
    local f = redis.call('HMGET', state, 'fan_in', 'fan_in_stream', 'fan_in_marker', 'marker_ttl')
    redis.call('XADD', KEYS[3], '*', 'event', f[1])
    redis.call('XADD', f[2], '*', 'event', f[1])
    redis.call('SET', f[3], '1', 'EX', f[4])
  end
end
redis.call('EXPIRE', state, ttl)
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('EXPIRE', KEYS[2], ttl)
end
return {pending, total, changed, fan_in_id}
""",
)

REMOVE_IDLE_CONSUMERS = Script(
    "remove_idle_consumers",
    """
-- KEYS: a queue's streams. ARGV: group, idle (ms).
-- Removes the group's consumers that hold no pending entry and were idle for at least ARGV[2]
-- ms (names of workers that exited). Checked and removed in one step: a consumer that takes
-- an entry in between would lose it with its name. A live worker that was removed is
-- recreated by its next read. Returns stream, name pairs of the consumers removed.
local removed = {}
for _, stream in ipairs(KEYS) do
  local consumers = redis.pcall('XINFO', 'CONSUMERS', stream, ARGV[1])
  if not consumers.err then
    for _, consumer in ipairs(consumers) do
      local info = {}
      for i = 1, #consumer, 2 do
        info[consumer[i]] = consumer[i + 1]
      end
      if info['pending'] == 0 and info['idle'] >= tonumber(ARGV[2]) then
        redis.call('XGROUP', 'DELCONSUMER', stream, ARGV[1], info['name'])
        removed[#removed + 1] = stream
        removed[#removed + 1] = info['name']
      end
    end
  end
end
return removed
""",
)
