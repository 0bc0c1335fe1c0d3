"""Coalesced pipelines and the Lua scripts behind enqueue and completion."""

from __future__ import annotations

import asyncio

import pytest

import agentexec as ax
from agentexec import events
from agentexec.batcher import get_batcher
from agentexec.connection import get_redis
from agentexec.streams import WORKERS_GROUP, Keys
from tests.apps.basic import Echo
from tests.integration.test_pool import _wait_running
from tests.support.waiting import scaled


async def test_concurrent_commands_share_round_trips_and_keep_their_replies(
    redis_conf: str,
) -> None:
    batcher = get_batcher()
    replies = await asyncio.gather(
        *(batcher.execute("INCRBY", "axbatch", n) for n in range(1, 101))
    )
    assert sorted(replies) == [sum(range(1, n + 1)) for n in range(1, 101)]
    with pytest.raises(Exception, match="WRONGTYPE"):
        await asyncio.gather(batcher.execute("XADD", "axbatch", "*", "a", "b"))
    await get_redis().delete("axbatch")


async def test_scripts_are_reloaded_when_redis_forgot_them(redis_conf: str) -> None:
    await ax.enqueue("echo", Echo(text="loads the script"))
    await get_redis().script_flush()
    task = await ax.enqueue("echo", Echo(text="after SCRIPT FLUSH"))
    assert await get_redis().xlen(Keys(ax.CONF.key_prefix).events) == 2
    assert task.event_id


async def test_a_worker_that_lost_its_task_cannot_complete_it(running_pool: ax.Pool) -> None:
    keys = Keys(ax.CONF.key_prefix)
    task = await ax.enqueue("echo", Echo(text="stolen", delay=1.0))
    await _wait_running(task.agent_id)
    stream = keys.queue(task.queue_name, task.priority)
    [entry] = await get_redis().xpending_range(stream, WORKERS_GROUP, "-", "+", 10)
    # Another consumer takes the entry over, as after a lease expiry.
    await get_redis().xclaim(stream, WORKERS_GROUP, "thief", 0, [entry["message_id"]])
    with pytest.raises(TimeoutError):
        await ax.get_result(task, timeout=scaled(3))
    log = [events.decode_entry(f) for _, f in await get_redis().xrange(keys.events)]
    assert not [e for e in log if isinstance(e, events.TaskCompleted)]
    [still] = await get_redis().xpending_range(stream, WORKERS_GROUP, "-", "+", 10)
    assert still["consumer"] == b"thief"


async def test_lease_renewal_never_takes_a_task_back(redis_conf: str) -> None:
    """A renewal after a takeover leaves the entry with its new owner and stops the handler."""
    from tests.apps import basic

    ax.CONF.lease_seconds = 0.6  # renew every 0.2 s
    ax.CONF.graceful_shutdown_timeout = 0.5
    keys = Keys(ax.CONF.key_prefix)
    basic.pool.start()
    try:
        task = await ax.enqueue("echo", Echo(text="stolen", delay=30))
        await _wait_running(task.agent_id)
        stream = keys.queue(task.queue_name, task.priority)
        [entry] = await get_redis().xpending_range(stream, WORKERS_GROUP, "-", "+", 10)
        # A live new owner renews its lease; over several renewal periods of the old owner,
        # the entry must stay with it.
        for _ in range(20):
            await get_redis().xclaim(
                stream, WORKERS_GROUP, "thief", 0, [entry["message_id"]], justid=True
            )
            await asyncio.sleep(0.05)
        [still] = await get_redis().xpending_range(stream, WORKERS_GROUP, "-", "+", 10)
        assert still["consumer"] == b"thief"
    finally:
        basic.pool.shutdown()
