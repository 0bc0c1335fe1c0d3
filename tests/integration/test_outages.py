"""Outages of Redis that are not a clean disconnect: a restart under waiting callers, a server
out of memory, an evicting server, and errors of the client library that are not connection
errors. Each test runs its own redis-server, so that it can kill, restart or fill it."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

import agentexec as ax
from agentexec import events
from agentexec.connection import REDIS_ERRORS, get_redis
from agentexec.embedded import EmbeddedRedis
from agentexec.streams import Keys
from tests.apps import basic
from tests.apps.basic import Echo
from tests.support.memory import fill, free
from tests.support.waiting import async_wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def server(redis_conf: str) -> Iterator[EmbeddedRedis]:
    """A private redis-server (AOF on: a kill and restart loses nothing) for this test."""
    own = EmbeddedRedis(appendonly=True).start()
    ax.CONF.redis_url = own.url
    try:
        yield own
    finally:
        own.close()


class LoopErrors:
    """Records what reaches the event loop's exception handler ("Task exception was never
    retrieved" and the like)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self._loop = asyncio.get_running_loop()
        self._loop.set_exception_handler(lambda _loop, context: self.seen.append(context))

    def check(self) -> None:
        gc.collect()  # unretrieved task exceptions are reported when the task is collected
        self._loop.set_exception_handler(None)
        assert not self.seen, [c.get("message") for c in self.seen]


async def _subscribed(agent_ids: list[object]) -> None:
    keys = Keys(ax.CONF.key_prefix)
    channels = [keys.result_channel(a) for a in agent_ids]

    async def all_subscribed() -> bool:
        try:
            counts = await get_redis().pubsub_numsub(*channels)
        except REDIS_ERRORS:
            return False  # this test's own connection went down with the server
        return all(n >= 1 for _, n in counts)

    await async_wait_for(all_subscribed, timeout=10, what="the waiters to subscribe")


async def test_get_result_and_gather_return_after_a_redis_restart(
    server: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    errors = LoopErrors()
    tasks = [await ax.enqueue("echo", Echo(text=f"t{i}")) for i in range(3)]
    one = asyncio.create_task(ax.get_result(tasks[0], timeout=60))
    several = asyncio.create_task(ax.gather(tasks[1], tasks[2], timeout=60))
    await _subscribed([t.agent_id for t in tasks])
    for _ in range(2):  # twice: the second restart finds a waiter that reconnected once
        server.kill()
        await asyncio.sleep(0.2)  # the outage itself, not a wait for a condition
        EmbeddedRedis.start(server)
        await _subscribed([t.agent_id for t in tasks])
    # The results are stored after the restarts, by real workers.
    basic.pool.start()
    try:
        first = await asyncio.wait_for(one, 60)
        rest = await asyncio.wait_for(several, 60)
    finally:
        basic.pool.shutdown()
    assert first.text == "t0"
    assert [r.text for r in rest] == ["t1", "t2"]
    errors.check()
    assert "never retrieved" not in caplog.text


async def _limit_memory(client: redis.asyncio.Redis, headroom: int = 4_000_000) -> None:
    used = int((await client.info("memory"))["used_memory"])
    await client.config_set("maxmemory-policy", "noeviction")
    await client.config_set("maxmemory", used + headroom)


async def _started(client: redis.asyncio.Redis, count: int) -> bool:
    log = await client.xrange(Keys(ax.CONF.key_prefix).events)
    started = [e for e in (events.decode_entry(f) for _, f in log)]
    return len([e for e in started if isinstance(e, events.TaskStarted)]) >= count


async def test_out_of_memory_is_an_outage_for_workers(
    server: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """Tasks that start, report progress and end while Redis refuses writes each run once,
    keep their lease, and record their progress and outcome once memory is freed."""
    ax.CONF.lease_seconds = 1.5
    client = redis.asyncio.Redis.from_url(server.url)
    try:
        await _limit_memory(client)
        basic.pool.start()
        try:
            tasks = [await ax.enqueue("progress", Echo(text="p", delay=0.6)) for _ in range(6)]
            await async_wait_for(
                lambda: _started(client, len(tasks)), timeout=30, what="every task to start"
            )
            written = await fill(client)
            # Out of memory for several leases: the pool's renewals still go through.
            await asyncio.sleep(ax.CONF.lease_seconds * 3)  # the outage itself
            await free(client, written)
            results = await ax.gather(*tasks, timeout=60)
        finally:
            basic.pool.shutdown()
        assert results == ["done"] * len(tasks)
        log = await get_redis().xrange(Keys(ax.CONF.key_prefix).events)
        decoded = [events.decode_entry(f) for _, f in log]
        for task in tasks:
            mine = [e for e in decoded if e.agent_id == task.agent_id]
            kinds = [type(e).__name__ for e in mine]
            assert kinds.count("TaskStarted") == 1, kinds
            assert kinds.count("TaskCompleted") == 1, kinds
            assert kinds.count("TaskProgress") == 3, kinds
    finally:
        await client.aclose()


async def test_enqueue_out_of_memory_raises_the_projects_error(server: EmbeddedRedis) -> None:
    client = redis.asyncio.Redis.from_url(server.url)
    try:
        await _limit_memory(client, headroom=1_000_000)
        written = await fill(client)
        ax.CONF.enqueue_timeout = 0.3
        with pytest.raises(ax.RedisOutOfMemoryError, match="CONFIG SET maxmemory"):
            await ax.enqueue("echo", Echo(text="refused"))
        assert await client.xlen(Keys(ax.CONF.key_prefix).events) == 0
        # Accepted as soon as memory is freed.
        await free(client, written)
        task = await ax.enqueue("echo", Echo(text="accepted"))
        assert await client.xlen(Keys(ax.CONF.key_prefix).events) == 1
        assert task.agent_id
    finally:
        await client.aclose()


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
async def test_an_evicting_redis_is_refused_with_the_fix(
    server: EmbeddedRedis, policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.asyncio.Redis.from_url(server.url)
    try:
        await client.config_set("maxmemory-policy", policy)
        with pytest.raises(ax.ConfigurationError, match="CONFIG SET maxmemory-policy noeviction"):
            await ax.enqueue("echo", Echo(text="x"))
        with pytest.raises(ax.ConfigurationError, match=policy):
            basic.pool.start()
        ax.CONF.allow_eviction = True
        await ax.enqueue("echo", Echo(text="x"))
        assert "AGENTEXEC_ALLOW_EVICTION" in caplog.text
    finally:
        await client.aclose()


async def test_a_redis_without_config_is_run_with_a_warning(
    server: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    server.stop()
    EmbeddedRedis.start(server)  # the same port
    client = redis.asyncio.Redis.from_url(server.url)
    try:
        await client.execute_command("ACL", "SETUSER", "default", "-config")
        await ax.enqueue("echo", Echo(text="x"))
        assert "could not check Redis's maxmemory-policy" in caplog.text
    finally:
        await client.aclose()
