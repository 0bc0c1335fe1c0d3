"""Faults of what the projector reads: events the database refuses, and a log whose new ids
fall below the checkpoint (Redis back empty with its clock behind)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import select

import agentexec as ax
from agentexec.activity.models import ActivityLog, ArchivedEvent
from agentexec.connection import REDIS_ERRORS, get_redis
from agentexec.events import TaskProgress
from agentexec.projector import checkpoints
from tests.faults.checker import check
from tests.faults.cluster import Cluster
from tests.integration.readmodel.workload import checkpoint_position, foreign_entry, wait_until
from tests.support.waiting import async_wait_for

pytestmark = pytest.mark.timeout(240)

DAY_MS = 86_400_000


async def _completed(cluster: Cluster, tasks: list[ax.Task], at_least: int) -> None:
    keys = [cluster.keys.result(t.agent_id) for t in tasks]

    async def enough() -> bool:
        try:
            return int(await get_redis().exists(*keys)) >= at_least
        except REDIS_ERRORS:
            return False

    await async_wait_for(enough, timeout=90, what=f"{at_least} tasks to end")


def _hostile(task: ax.Task, kind: int) -> TaskProgress:
    """A progress event of a running task that a database may refuse. Appended to the log
    straight away, as an old producer or a hand-made XADD would: no validation at the call
    stands in between."""
    if kind == 0:
        return TaskProgress(agent_id=task.agent_id, task_name="", message="half\x00way")
    if kind == 1:
        return TaskProgress(agent_id=task.agent_id, task_name="n" * 300, message="long name")
    return TaskProgress(agent_id=task.agent_id, task_name="", message="big", percentage=2**63)


async def _refused_events(cluster: Cluster) -> None:
    cluster.start_projector("--batch-size", "20")
    cluster.start_pool(workers=2, concurrency=8)
    tasks = await cluster.enqueue_jobs(60, work=0.6, steps=3)
    await _completed(cluster, tasks, 3)
    hostile = tasks[::5]
    for number, task in enumerate(hostile):
        await get_redis().xadd(cluster.keys.events, foreign_entry(_hostile(task, number % 3)))
        cluster.fault("an event the database may refuse, appended to the log")
    await check(cluster, tasks)
    # Only what no safe form stores is left out of the read model: dead-lettered, with its
    # id and the reason.
    huge = len(hostile[2::3])
    letters = await get_redis().xrange(cluster.keys.dead_letters)
    assert len(letters) == huge
    assert all(b"refused" in fields[b"reason"] for _, fields in letters)
    with cluster.engine.connect() as conn:
        messages = list(conn.execute(select(ActivityLog.message)).scalars())
    nul = "half\x00way" if cluster.postgres is None else "half\\x00way"
    assert messages.count(nul) == len(hostile[::3])
    assert messages.count("long name") == len(hostile[1::3])
    cluster.figures.notes.append(f"{huge} events dead-lettered")


@pytest.mark.fault("15. Events the database refuses (out-of-range number), SQLite")
async def test_events_the_database_refuses_sqlite(cluster: Cluster) -> None:
    await _refused_events(cluster)


@pytest.mark.postgres
@pytest.mark.fault("16. Events the database refuses (NUL, name too long, number), PostgreSQL")
async def test_events_the_database_refuses_postgres(cluster: Cluster) -> None:
    await _refused_events(cluster)


@pytest.mark.fault("17. Redis back empty, its clock a day behind the archived ids")
async def test_redis_back_empty_with_its_clock_behind(cluster: Cluster) -> None:
    client = get_redis()
    # The log's ids so far come from a clock a day ahead of the one Redis will have.
    await client.xgroup_create(cluster.keys.events, "projector", id="0", mkstream=True)
    ahead = f"{int(time.time() * 1000) + DAY_MS}-0"
    await client.execute_command("XSETID", cluster.keys.events, ahead)
    first = cluster.start_projector()
    cluster.start_pool(workers=2, concurrency=4)
    before = await cluster.enqueue_jobs(20, work=0.2, steps=2)
    await _completed(cluster, before, len(before))
    last = (await client.xrevrange(cluster.keys.events, count=1))[0][0].decode()
    await wait_until(lambda: checkpoint_position(cluster.engine) == last, 60)
    assert checkpoints.after(last, ahead)
    await asyncio.to_thread(first.stop)

    # Redis loses the log while no projector runs; tasks go on, with ids below the checkpoint.
    await client.flushall()
    cluster.fault("FLUSHALL, then ids from a clock a day behind")
    during = await cluster.enqueue_jobs(20, work=0.2, steps=2)
    await _completed(cluster, during, 5)
    second = cluster.start_projector()
    after = await cluster.enqueue_jobs(20, work=0.2, steps=2)
    await check(cluster, [*before, *during, *after])
    log = Path(second.log.name).read_text()
    assert "arrived below the checkpoint" in log
    # One order: every event of the tasks since the loss is archived above the checkpoint.
    new = {t.agent_id for t in during + after}
    with cluster.engine.connect() as conn:
        rows = conn.execute(
            select(ArchivedEvent.stream_ms, ArchivedEvent.stream_seq, ArchivedEvent.agent_id)
        ).all()
    assert all(checkpoints.after(f"{ms}-{seq}", last) for ms, seq, aid in rows if aid in new)
