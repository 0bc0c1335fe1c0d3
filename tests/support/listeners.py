"""What the test Redis can tell about the processes listening on it, for tests that must wait
until workers or waiters are ready: the library needs no hook of its own for these."""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import RedisCluster

from agentexec.connection import get_redis
from tests.support.waiting import async_wait_for


async def _nodes() -> list[dict[str, Any]]:
    """Keyword arguments that send a command to each server: one for a single server, one per
    primary of a Redis Cluster (each knows only its own connections)."""
    client: Any = get_redis()
    if not isinstance(client, RedisCluster):
        return [{}]
    await client.initialize()
    return [{"target_nodes": node} for node in client.get_primaries()]


async def subscribers(channel: str) -> int:
    """How many connections are subscribed to `channel` (PUBSUB NUMSUB)."""
    total = 0
    for target in await _nodes():
        [(_, count)] = await get_redis().pubsub_numsub(channel, **target)
        total += int(count)
    return total


async def blocked_in(command: str) -> int:
    """How many connections are blocked in `command` (e.g. `xreadgroup`) right now."""
    total = 0
    for target in await _nodes():
        clients = await get_redis().client_list(**target)
        total += sum(1 for c in clients if c.get("cmd") == command and "b" in c.get("flags", ""))
    return total


async def wait_for_idle_workers(count: int) -> None:
    """Wait until `count` worker processes are blocked in their read for new tasks: started,
    subscribed and idle, so a task enqueued now is picked up at once."""

    async def idle() -> bool:
        return await blocked_in("xreadgroup") >= count

    await async_wait_for(idle, timeout=30, what=f"{count} idle worker(s)")
