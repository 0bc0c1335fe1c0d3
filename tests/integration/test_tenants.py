"""Tenants against real Redis and worker processes: the tenant a task is given (or inherits)
is in its `task.queued` metadata and on every event recorded about it (the worker's, the
handler's, the runner's, retries and failures), children, pipeline steps and tracker fan-ins
inherit it, and lists and statistics filter by it on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec import events
from agentexec.activity.models import Activity
from agentexec.api import create_app
from agentexec.connection import get_redis, get_sync_redis
from agentexec.projector import Projector
from agentexec.streams import Keys
from tests.apps.basic import Echo, Flaky, Spawn
from tests.integration.readmodel import conftest as readmodel
from tests.integration.readmodel.test_async_reads import async_url
from tests.support.waiting import scaled

# The read-model suite's fixtures: each test taking `engine` runs on SQLite and PostgreSQL.
engine, postgres, projector = readmodel.engine, readmodel.postgres, readmodel.projector


async def event_log() -> list[events.AnyEvent]:
    entries = await get_redis().xrange(Keys(ax.CONF.key_prefix).events)
    return [events.decode_entry(fields) for _, fields in entries]


def of(log: list[events.AnyEvent], agent_id: uuid.UUID) -> list[events.AnyEvent]:
    return [e for e in log if e.agent_id == agent_id]


async def test_every_event_of_a_tenants_task_carries_it(running_pool: ax.Pool) -> None:
    writes = await ax.enqueue("agent_writes", Echo(text="a"), tenant="acme")
    failing = await ax.enqueue("boom", Echo(text="b"), metadata={"tenant": "acme", "k": "v"})
    other = await ax.enqueue("agent_writes", Echo(text="c"), tenant="globex")
    plain = await ax.enqueue("echo", Echo(text="d"))
    assert await ax.get_result(writes, timeout=scaled(20)) == "a"
    assert await ax.get_result(other, timeout=scaled(20)) == "c"
    await ax.get_result(plain, timeout=scaled(20))
    with pytest.raises(ax.TaskFailedError):
        await ax.get_result(failing, timeout=scaled(20))
    log = await event_log()
    mine = of(log, writes.agent_id)
    kinds = {type(e).__name__ for e in mine}
    assert {"TaskQueued", "TaskStarted", "TaskProgress", "AgentTurn", "AgentToolCall"} <= kinds
    assert {"AgentHandoff", "AgentUsage", "TaskCompleted"} <= kinds
    assert [e.tenant for e in mine] == ["acme"] * len(mine)
    queued = mine[0]
    assert isinstance(queued, events.TaskQueued) and queued.metadata == {"tenant": "acme"}
    failed = of(log, failing.agent_id)
    assert {type(e).__name__ for e in failed} >= {"TaskQueued", "TaskStarted", "TaskFailed"}
    assert [e.tenant for e in failed] == ["acme"] * len(failed)
    assert failed[0].metadata == {"tenant": "acme", "k": "v"}
    assert {e.tenant for e in of(log, other.agent_id)} == {"globex"}
    assert {e.tenant for e in of(log, plain.agent_id)} == {None}


async def test_retries_carry_the_tenant(running_pool: ax.Pool, tmp_path: Path) -> None:
    task = await ax.enqueue(
        "flaky", Flaky(path=str(tmp_path / "runs"), failures=1), tenant="org:42"
    )
    assert await ax.get_result(task, timeout=scaled(20)) == 2
    mine = of(await event_log(), task.agent_id)
    assert any(isinstance(e, events.TaskRetried) for e in mine)
    assert [e.tenant for e in mine] == ["org:42"] * len(mine)


async def test_children_inherit_the_tenant_unless_given_one(running_pool: ax.Pool) -> None:
    parent = await ax.enqueue("spawn", Spawn(children=2, orphan=True), tenant="acme")
    ids = [uuid.UUID(i) for i in await ax.get_result(parent, timeout=scaled(20))]
    for child in ids:
        await ax.get_result(child, timeout=scaled(20))
    log = await event_log()
    for child in ids:  # the orphan (parent_id=None) too: it was queued by acme's handler
        mine = of(log, child)
        assert mine and [e.tenant for e in mine] == ["acme"] * len(mine)
        assert mine[0].metadata == {"tenant": "acme"}


def test_the_tenant_is_checked(redis_conf: str) -> None:
    import asyncio

    with pytest.raises(ValueError, match=r"'acme'.*'globex'"):
        asyncio.run(
            ax.enqueue("echo", Echo(text="x"), tenant="acme", metadata={"tenant": "globex"})
        )
    for bad in ("", "a b", "x" * 129, "semi;colon"):
        with pytest.raises(ValueError, match="not a usable tenant") as caught:
            asyncio.run(ax.enqueue("echo", Echo(text="x"), tenant=bad))
        assert repr(bad[:40]) in str(caught.value)
    with pytest.raises(ValueError, match="not a usable tenant"):
        ax.activity.create("manual", metadata={"tenant": 42})


async def test_lists_and_stats_filter_by_tenant(projector: Projector, engine: Engine) -> None:
    acme = [(await ax.enqueue("echo", Echo(text=str(i)), tenant="acme")).agent_id for i in range(3)]
    globex = (await ax.enqueue("echo", Echo(text="g"), metadata={"tenant": "globex"})).agent_id
    await ax.enqueue("echo", Echo(text="none"))
    made = ax.activity.create("manual", tenant="acme", metadata={"source": "import"})
    await projector.catch_up()
    with Session(engine) as s:
        listed = ax.activity.list(s, tenant="acme")
        assert sorted(i.agent_id for i in listed.items) == sorted([*acme, made])
        assert listed.total == 4
        stored = s.scalar(select(Activity.metadata_).where(Activity.agent_id == made))
        assert stored == {"source": "import", "tenant": "acme"}
        assert [
            i.agent_id for i in ax.activity.list(s, metadata_filter={"tenant": "globex"}).items
        ] == [globex]
        both = ax.activity.list(s, tenant="acme", metadata={"source": "import"})
        assert [i.agent_id for i in both.items] == [made]
        assert ax.activity.list(s, tenant="nobody").total == 0
        assert ax.activity.list(s).total == 6
        stats = ax.activity.stats(s, tenant="acme")
        assert stats.overall.total == 4
        assert {t.task_name: t.total for t in stats.tasks} == {"echo": 3, "manual": 1}
        assert ax.activity.stats(s, metadata_filter={"tenant": "globex"}).overall.total == 1
        with pytest.raises(ValueError, match="tenant='globex'"):
            ax.activity.list(s, tenant="acme", metadata={"tenant": "globex"})
    async_engine = create_async_engine(async_url(engine))
    try:
        async with AsyncSession(async_engine) as session:
            awaited = await ax.activity.aio.list(session, tenant="acme")
            awaited_stats = await ax.activity.aio.stats(session, tenant="acme")
            old_style = await ax.activity.aio.stats(session, metadata_filter={"tenant": "globex"})
    finally:
        await async_engine.dispose()
    assert sorted(i.agent_id for i in awaited.items) == sorted([*acme, made])
    assert (awaited_stats.overall.total, old_style.overall.total) == (4, 1)
    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        listed_json = (await client.get("/api/activities", params={"tenant": "acme"})).json()
        assert listed_json["total"] == 4
        stats_json = (await client.get("/api/activities/stats", params={"tenant": "globex"})).json()
        assert stats_json["overall"]["total"] == 1
        bad = await client.get("/api/activities", params={"tenant": "a b"})
        assert bad.status_code == 422
        clash = await client.get(
            "/api/activities", params={"tenant": "acme", "metadata": "tenant=globex"}
        )
        assert clash.status_code == 400 and "globex" in clash.json()["detail"]


async def test_a_pipelines_run_and_steps_carry_its_tenant(pipeline_pool: ax.Pool) -> None:
    from tests.apps.workflows import InputContext, pipeline, runs_file

    run = await pipeline.enqueue(context=InputContext(company="Acme"), tenant="acme")
    try:
        assert await ax.get_result(run, timeout=scaled(60)) == "Report: Acme brand in Acme market"
    finally:
        runs_file(run.agent_id).unlink(missing_ok=True)
    log = await event_log()
    steps = {
        e.agent_id for e in log if isinstance(e, events.TaskQueued) and e.parent_id == run.agent_id
    }
    assert len(steps) == 3
    of_run = [e for e in log if e.agent_id == run.agent_id or e.agent_id in steps]
    kinds = {type(e).__name__ for e in of_run}
    assert {"PipelineStepStarted", "PipelineStepFinished", "TaskCompleted", "TaskStarted"} <= kinds
    assert [e.tenant for e in of_run] == ["acme"] * len(of_run)


def test_a_trackers_events_and_fan_in_inherit_the_tenant(redis_conf: str, tmp_path: Path) -> None:
    from agentexec import tenants
    from tests.apps.workflows import Aggregate

    batch = str(uuid.uuid4())
    tracker = ax.Tracker("research", batch)
    # As inside the handler of a task of tenant "acme" (the worker marks it so).
    with tenants.serving(uuid.uuid4(), None, "acme"):
        tracker.incr()
        fan_in = tracker.on_complete("aggregate", Aggregate(batch_id=batch, workdir=str(tmp_path)))
        tracker.decr(key="only")
    entries = get_sync_redis().xrange(Keys(ax.CONF.key_prefix).events)
    log = [events.decode_entry(f) for _, f in entries]  # type: ignore[union-attr]
    counted = [e for e in log if e.agent_id == tracker.id]
    assert len(counted) == 3 and {e.tenant for e in counted} == {"acme"}
    [queued] = [e for e in log if e.agent_id == fan_in.agent_id]
    assert queued.tenant == "acme" and queued.metadata == {"tenant": "acme"}


async def test_events_recorded_outside_the_worker_get_the_tenant_from_the_agent_marker(
    redis_conf: str,
) -> None:
    # An application's own writes about a tenant's task (no worker serves it there), and a
    # cancel request: the append takes the tenant with the task name from the agent marker.
    made = ax.activity.create("import", tenant="acme")
    ax.activity.update(made, "halfway", percentage=50)
    ax.activity.complete(made)
    queued = await ax.enqueue("echo", Echo(text="x"), tenant="org:42")
    await ax.cancel(queued.agent_id)
    plain = ax.activity.create("import")
    ax.activity.update(plain, "no tenant")
    log = await event_log()
    assert [(type(e).__name__, e.tenant) for e in of(log, made)] == [
        ("TaskQueued", "acme"),
        ("TaskProgress", "acme"),
        ("TaskCompleted", "acme"),
    ]
    assert [(type(e).__name__, e.task_name, e.tenant) for e in of(log, queued.agent_id)] == [
        ("TaskQueued", "echo", "org:42"),
        ("TaskCancelRequested", "echo", "org:42"),
    ]
    assert {e.tenant for e in of(log, plain)} == {None}
    assert {e.task_name for e in of(log, plain)} == {"import"}
