"""Outages of Redis that are not a clean disconnect: out of memory with `noeviction`, and
restarts under callers waiting for results (issue 12, items 5 and 6)."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio

import agentexec as ax
from agentexec import events
from agentexec.connection import REDIS_ERRORS, get_redis
from tests.faults.checker import check
from tests.faults.cluster import Cluster, wait_for_event
from tests.support.memory import fill, free
from tests.support.waiting import async_wait_for

pytestmark = pytest.mark.timeout(240)


@pytest.mark.fault("11. Redis out of memory (maxmemory, noeviction) under load")
async def test_redis_out_of_memory_under_load(cluster: Cluster) -> None:
    client = redis.asyncio.Redis.from_url(cluster.redis.url)
    try:
        projector = cluster.start_projector()
        cluster.start_pool(workers=2, concurrency=4)
        lease = float(ax.CONF.lease_seconds)
        tasks = await cluster.enqueue_jobs(24, work=lease, steps=4)
        for task in tasks[:4]:
            await wait_for_event(task.agent_id, events.TaskProgress)
        used = int((await client.info("memory"))["used_memory"])
        await client.config_set("maxmemory", used + 2_000_000)
        written = await fill(client)
        cluster.fault("Redis out of memory: every write refused")
        # Refused for several leases: starts, progress and outcomes wait; leases hold.
        await asyncio.sleep(lease * 3)  # the outage itself, not a wait for a condition
        await free(client, written)
        await client.config_set("maxmemory", 0)
        keys = [cluster.keys.result(t.agent_id) for t in tasks]

        async def all_ended() -> bool:
            try:
                return int(await get_redis().exists(*keys)) == len(tasks)
            except REDIS_ERRORS:
                return False

        await async_wait_for(all_ended, timeout=120, what="every task to end")
        cluster.recovered()
        assert projector.process.poll() is None, "the projector exited during the outage"
        await check(cluster, tasks)
    finally:
        await client.aclose()


@pytest.mark.fault("12. Redis restarted while callers wait in get_result and gather")
async def test_waiters_across_redis_restarts(cluster: Cluster) -> None:
    cluster.start_projector()
    tasks = await cluster.enqueue_jobs(20, work=0.2)
    single = [asyncio.ensure_future(ax.get_result(t, timeout=180)) for t in tasks[:10]]
    several = asyncio.ensure_future(ax.gather(*tasks[10:], timeout=180))
    for round_ in range(3):
        cluster.redis.kill()
        cluster.fault("SIGKILL redis-server with callers waiting")
        await asyncio.sleep(0.3)  # the outage itself
        cluster.redis.start()
        if round_ == 1:
            # The results are stored between restarts: some waiters reconnect, read them.
            cluster.start_pool(workers=2, concurrency=4)
    await asyncio.wait_for(asyncio.gather(*single, several), 180)
    cluster.recovered()
    await check(cluster, tasks)
