"""Faults of what the workers depend on: the projector, Redis, and the network to Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter

import pytest
from sqlalchemy import Engine

import agentexec as ax
from agentexec import events
from agentexec.connection import REDIS_ERRORS, get_redis
from agentexec.positions import Position
from tests.faults.checker import check
from tests.faults.cluster import Cluster, wait_for_event, wait_for_file
from tests.faults.proxy import Proxy
from tests.integration.readmodel.workload import checkpoint_position, wait_until
from tests.support.waiting import async_wait_for, scaled

pytestmark = pytest.mark.timeout(240)


def ids(tasks: list[ax.Task]) -> set[object]:
    return {t.agent_id for t in tasks}


async def _completed(cluster: Cluster, tasks: list[ax.Task], at_least: int) -> None:
    keys = [cluster.keys.result(t.agent_id) for t in tasks]

    async def enough() -> bool:
        try:
            return int(await get_redis().exists(*keys)) >= at_least
        except REDIS_ERRORS:
            return False  # the test's own connection went down with the fault

    await async_wait_for(enough, timeout=90, what=f"{at_least} tasks to end")


@pytest.mark.fault("4. SIGKILL of the projector mid-batch; two projectors at once")
async def test_projector_killed_mid_batch_then_two_projectors(cluster: Cluster) -> None:
    first = cluster.start_projector("--batch-size", "20")
    cluster.start_pool(workers=2, concurrency=8)
    tasks = await cluster.enqueue_jobs(150, work=0.2, steps=4)
    await wait_until(lambda: checkpoint_position(cluster.engine) not in (None, "0-0"), 60)
    first.kill()
    cluster.fault("SIGKILL projector")
    killed_at = checkpoint_position(cluster.engine)
    cluster.start_projector("--batch-size", "20")
    cluster.start_projector("--batch-size", "20")
    await wait_until(lambda: checkpoint_position(cluster.engine) != killed_at, 60)
    cluster.recovered()
    await check(cluster, tasks)


@pytest.mark.fault("5. SIGKILL of Redis, restart from its AOF")
async def test_redis_killed_and_restarted_from_its_aof(cluster: Cluster) -> None:
    cluster.start_projector()
    cluster.start_pool(workers=2, concurrency=4)
    tasks = await cluster.enqueue_jobs(52, work=0.4, steps=2)
    # Some run across the outage and after it.
    tasks += await cluster.enqueue_jobs(8, work=float(ax.CONF.lease_seconds) * 3, steps=6)
    await _completed(cluster, tasks, 8)
    # Down for longer than a lease: the workers keep running their tasks meanwhile.
    cluster.redis.kill()
    cluster.fault("SIGKILL redis-server")
    await asyncio.sleep(float(ax.CONF.lease_seconds) * 2)  # the outage itself, not a wait
    cluster.redis.start(timeout=scaled(10))
    started = time.monotonic()
    await _completed(cluster, tasks, 60)
    cluster.recovered()
    cluster.figures.notes.append(f"all tasks ended {time.monotonic() - started:.1f}s after restart")
    await check(cluster, tasks)


@pytest.mark.fault("6. FLUSHALL under load")
async def test_flushall_under_load(cluster: Cluster) -> None:
    cluster.start_projector()
    cluster.start_pool(workers=2, concurrency=2)
    ended = await cluster.enqueue_jobs(3, work=0.1)
    await _completed(cluster, ended, 3)
    lease = float(ax.CONF.lease_seconds)
    markers = [cluster.marker() for _ in range(4)]
    running = [
        await ax.enqueue("fault_job", cluster.job(work=lease * 2, steps=6, marker=m))
        for m in markers
    ]
    queued = await cluster.enqueue_jobs(12, work=0.2)
    for task in running:
        await wait_for_event(task.agent_id, events.TaskProgress)
    last = (await get_redis().xrevrange(cluster.keys.events, count=1))[0][0].decode()
    # At or past it: the running tasks' progress goes on, and a projector behind (under load)
    # can take `last` and later events in one batch, never stopping at `last` itself.
    await wait_until(lambda: projected_past(cluster.engine, last), 60)
    await get_redis().flushall()
    cluster.fault("FLUSHALL")
    after = await cluster.enqueue_jobs(10, work=0.2)
    # Then a worker process dies, with the tasks it ran: their entries went with the flush.
    await asyncio.sleep(lease / 2)
    pids = [int(await wait_for_file(m + ".pid")) for m in markers]
    os.kill(pids[0], signal.SIGKILL)
    cluster.killed_pids.add(pids[0])
    cluster.fault("SIGKILL of a worker running tasks whose entries Redis lost")
    doomed = {t.agent_id for t, pid in zip(running, pids, strict=True) if pid == pids[0]}
    # The running tasks end once, with their outcome, in the workers that run them, and the
    # killed ones run again; the projector queues the queued tasks again from the archive,
    # and stores the results of those that had ended; new tasks run.
    await check(cluster, [*ended, *running, *queued, *after])
    # The log was flushed: its task.queued events are the restore's and those of the tasks
    # enqueued since, one per task.
    entries = await get_redis().xrange(cluster.keys.events)
    requeued = Counter(
        e.agent_id
        for e in (events.decode_entry(fields) for _, fields in entries)
        if isinstance(e, events.TaskQueued)
    )
    assert requeued == Counter(t.agent_id for t in queued + after)
    # The tasks whose worker lived were not started again; the killed ones were, once.
    restarted = Counter(
        (e.agent_id, e.attempt)
        for e in (events.decode_entry(fields) for _, fields in entries)
        if isinstance(e, events.TaskStarted) and e.agent_id in ids(running)
    )
    assert restarted == Counter((aid, 2) for aid in doomed)


@pytest.mark.fault("9. TCP proxy that cuts connections and drops replies")
async def test_connections_cut_and_replies_dropped(cluster: Cluster) -> None:
    proxy = await Proxy(cluster.redis.port).start()
    try:
        cluster.use_redis(proxy.url)
        cluster.start_projector()
        cluster.start_pool(workers=2, concurrency=4)
        tasks = await cluster.enqueue_jobs(30, work=0.3, steps=2)
        await _completed(cluster, tasks, 5)
        for round_ in range(6):
            # Enqueue through the faults too: enqueue retries, never twice.
            enqueuing = asyncio.create_task(cluster.enqueue_jobs(10, work=0.3, steps=2))
            await asyncio.sleep(0.3)
            if round_ % 2:
                await proxy.drop_replies(0.2)
                cluster.fault("replies dropped, then connections cut")
            else:
                proxy.cut()
                cluster.fault("connections cut")
            tasks += await enqueuing
            await asyncio.sleep(0.3)
        await _completed(cluster, tasks, len(tasks))
        cluster.recovered()
        await check(cluster, tasks)
        cluster.figures.notes.append(f"{proxy.connections} connections accepted by the proxy")
    finally:
        await cluster.close()
        await proxy.close()


def projected_past(engine: Engine, last: str) -> bool:
    checkpoint = checkpoint_position(engine)
    return checkpoint is not None and Position.parse(checkpoint) >= Position.parse(last)
