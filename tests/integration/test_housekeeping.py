"""Housekeeping of a pool's Redis keys: idle consumer names and old dead letters go."""

from __future__ import annotations

import time
from typing import Any

import agentexec as ax
from agentexec.connection import get_redis
from agentexec.streams import WORKERS_GROUP, Keys, ensure_group
from agentexec.workers.deadletters import list_dead_letters, trim_dead_letters
from agentexec.workers.housekeeping import remove_idle_consumers
from tests.apps import basic
from tests.apps.basic import Echo
from tests.support.waiting import async_wait_for

DAY_MS = 86_400_000


async def consumers(queue: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for stream in Keys(ax.CONF.key_prefix).queues(queue):
        for info in await get_redis().xinfo_consumers(stream, WORKERS_GROUP):
            found[info["name"].decode()] = info
    return found


async def test_idle_consumers_go_unless_they_hold_a_task(redis_conf: str) -> None:
    client = get_redis()
    high, low = Keys(ax.CONF.key_prefix).queues("q")
    for stream in (high, low):
        await ensure_group(client, stream, WORKERS_GROUP)
    await client.xadd(low, {b"event": b"{}"})
    await client.xgroup_createconsumer(high, WORKERS_GROUP, "exited:0")
    await client.xreadgroup(WORKERS_GROUP, "holds-a-task:1", {low: ">"})
    assert set(await consumers("q")) == {"exited:0", "holds-a-task:1"}

    assert await remove_idle_consumers("q", idle_seconds=3600) == []

    async def idle() -> bool:  # Redis counts idle time in whole milliseconds
        return bool((await consumers("q"))["exited:0"]["idle"] >= 1)

    await async_wait_for(idle, what="'exited:0' to be idle for a millisecond")
    assert await remove_idle_consumers("q", idle_seconds=0.001) == ["exited:0"]
    # The one with a pending entry stays, for the lease logic to take its task over.
    assert set(await consumers("q")) == {"holds-a-task:1"}


async def test_a_restarted_pool_removes_the_names_of_its_predecessors(redis_conf: str) -> None:
    ax.CONF.idle_consumer_seconds = 0.5
    basic.pool.start()
    try:
        task = await ax.enqueue("echo", Echo(text="first"))
        await ax.get_result(task, timeout=30)
    finally:
        basic.pool.shutdown()
    old = set(await consumers(basic.pool.queue_name))
    assert old

    async def idle() -> bool:
        found = await consumers(basic.pool.queue_name)
        return all(found[name]["idle"] >= 600 for name in old)

    await async_wait_for(idle, what="the old consumers to be idle")
    basic.pool.start()
    try:

        async def gone() -> bool:
            return not old & set(await consumers(basic.pool.queue_name))

        await async_wait_for(gone, what="the old consumer names to be removed")
        task = await ax.enqueue("echo", Echo(text="second"))
        assert (await ax.get_result(task, timeout=30)).text == "second"
    finally:
        basic.pool.shutdown()


async def test_dead_letters_older_than_the_retention_go(redis_conf: str) -> None:
    client = get_redis()
    key = Keys(ax.CONF.key_prefix).dead_letters
    now = int(time.time() * 1000)
    for ms in (now - 40 * DAY_MS, now - 31 * DAY_MS, now - 29 * DAY_MS):
        await client.xadd(key, {b"reason": b"old"}, id=f"{ms}-0")
    await client.xadd(key, {b"reason": b"new"})
    assert await trim_dead_letters(0) == 0
    assert await trim_dead_letters(30 * 86400) == 2
    assert [d.reason for d in await list_dead_letters()] == ["old", "new"]
