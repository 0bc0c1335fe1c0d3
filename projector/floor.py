"""The log's floor: new events never get ids at or below what the projector has committed.

Redis gives an appended entry an id from its clock, above the stream's last id. When Redis
comes back without the log (FLUSHALL, a new server, an old snapshot) and its clock is behind
the ids the projector committed, new events get ids below the checkpoint: a consumer group
created at the checkpoint never delivers them, and the archive, kept in id order, would hold
them before events that happened earlier.

So the projector, when it takes the log over and finds it behind its checkpoint, lifts it
(`lift`): one script raises the stream's last id to the checkpoint (XSETID, creating the
stream and group first when missing), so later appends get ids above it, and appends again,
above it and in their order, the entries that arrived below it meanwhile and are not in the
archive, deleting the originals. Those keep their fields (the same bytes), so a worker that
looks for the event its lost reply appended still finds it; they get new ids, so the log,
the archive and every feed keep one order. A batch that holds an entry at or below the
checkpoint that is not archived (the log was restored while this projector held its lease)
has that entry lifted the same way instead of skipped (see `Projector._apply`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import Engine

from agentexec.positions import ORIGIN

from .archive import Archive

__all__ = ["lift"]

_PAGE = 10_000

# KEYS[1] the log. ARGV[1] the projector's group, ARGV[2] the floor (the checkpoint),
# ARGV[3] an id or '': every entry after it up to the floor is appended again, ARGV[4..] more
# ids of entries to append again. Creates the log and the group (at the floor) when missing,
# raises the log's last id to the floor, then appends each entry again (same fields) and
# deletes the original. Returns {raised (1 or 0), old id, new id, old id, new id...}.
_LIFT = """
local function id(s)
  local ms, seq = string.match(s, '^(%d+)-(%d+)$')
  return {tonumber(ms), tonumber(seq)}
end
local function below(a, b)
  return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2])
end
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
"""


async def lift(
    client: aioredis.Redis,
    engine: Engine,
    stream: str,
    group: str,
    floor: str,
    *,
    after: str | None = None,
    ids: list[str] | None = None,
) -> tuple[bool, list[tuple[str, str]]]:
    """Raise `stream`'s last id to `floor`, and append again above it the entries below it
    that the archive does not hold: those after `after` (every one when None and `ids` is
    None too), or those of `ids`. Returns whether the last id was raised, and the (old, new)
    ids of the entries appended again, in order."""
    moves: list[str] = []
    since = ""
    if ids is None:
        since = after or str(ORIGIN)
        while True:
            page: Any = await client.xrange(stream, f"({since}", floor, count=_PAGE)
            found = [entry_id.decode() for entry_id, _ in page]
            if not found:
                break
            known = await asyncio.to_thread(Archive(engine).archived, found)
            moves += [i for i in found if i not in known]
            since = found[-1]
    else:
        moves = ids
    script = client.register_script(_LIFT)
    reply: Any = await script(keys=[stream], args=[group, floor, since, *moves])
    pairs = [(_text(reply[i]), _text(reply[i + 1])) for i in range(1, len(reply), 2)]
    return bool(reply[0]), pairs


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
