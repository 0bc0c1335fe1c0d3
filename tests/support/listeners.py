"""What the test Redis can tell about the processes listening on it, for tests that must wait
until workers or waiters are ready: the library needs no hook of its own for these."""

from __future__ import annotations

from agentexec.connection import get_redis


async def subscribers(channel: str) -> int:
    """How many connections are subscribed to `channel` (PUBSUB NUMSUB)."""
    [(_, count)] = await get_redis().pubsub_numsub(channel)
    return int(count)


async def blocked_in(command: str) -> int:
    """How many connections are blocked in `command` (e.g. `xreadgroup`) right now."""
    clients = await get_redis().client_list()
    return sum(1 for c in clients if c.get("cmd") == command and "b" in c.get("flags", ""))
