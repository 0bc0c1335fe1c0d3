"""Lua scripts that make a multi-key step atomic without MULTI, so that many of them can share
one pipeline round trip (see `Batcher`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


ENQUEUE = Script(
    "enqueue",
    """
-- KEYS: event log, queue stream. ARGV: event JSON.
local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[1])
redis.call('XADD', KEYS[2], '*', 'event', ARGV[1])
return id
""",
)

FINISH = Script(
    "finish",
    """
-- KEYS: event log, result key, queue stream.
-- ARGV: event JSON, outcome, result TTL (s), result channel, group, entry id, consumer.
-- The worker must still hold the entry: one that lost its lease cannot end the task.
local held = redis.call('XPENDING', KEYS[3], ARGV[5], ARGV[6], ARGV[6], 1, ARGV[7])
if #held == 0 then
  return false
end
local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[2])
redis.call('XACK', KEYS[3], ARGV[5], ARGV[6])
redis.call('XDEL', KEYS[3], ARGV[6])
return id
""",
)

RENEW = Script(
    "renew",
    """
-- KEYS: queue stream. ARGV: group, consumer, entry ids.
-- Resets the idle time of the entries this consumer still holds; returns the ones it lost.
local lost = {}
for i = 3, #ARGV do
  local held = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #held == 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
""",
)
