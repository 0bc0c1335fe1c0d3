"""Task trees against a real pool and projector on SQLite and PostgreSQL: tasks queued from a
handler are its children, pipeline steps are their run's, `children`, `detail` and the list
filter show them (sync and async sessions, and REST), and bad parent ids are refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec import events
from agentexec.api import create_app
from agentexec.projector import Projector
from agentexec.projector.rebuild import rebuild
from agentexec.tasks import RunningTask, reset_running, set_running
from tests.apps import workflows
from tests.apps.basic import Echo, Spawn
from tests.apps.workflows import InputContext, pipeline, runs_file
from tests.support.logs import log_entries
from tests.support.waiting import async_wait_for, scaled

from .test_async_reads import async_url
from .workload import append_all, snapshot

NO_CHILDREN = {"queued": 0, "running": 0, "complete": 0, "error": 0, "canceled": 0}


async def queued_events() -> list[events.TaskQueued]:
    entries = await log_entries()
    found = (events.decode_entry(f) for _, f in entries)
    return [e for e in found if isinstance(e, events.TaskQueued)]


async def test_tasks_queued_by_a_handler_are_its_children(
    running_pool: ax.Pool, projector: Projector, engine: Engine
) -> None:
    parent = await ax.enqueue("spawn", Spawn(children=3, orphan=True))
    ids = [uuid.UUID(i) for i in await ax.get_result(parent, timeout=scaled(30))]
    kids, orphan = ids[:3], ids[3]
    for kid in kids:
        await ax.get_result(kid, timeout=scaled(30))
    await ax.get_result(orphan, timeout=scaled(30))
    await projector.catch_up()

    parents = {e.agent_id: e.parent_id for e in await queued_events()}
    assert [parents[k] for k in kids] == [parent.agent_id] * 3
    assert parents[orphan] is None and parents[parent.agent_id] is None

    with Session(engine) as s:
        tree = ax.activity.children(s, parent.agent_id)
        detail = ax.activity.detail(s, parent.agent_id)
        listed = ax.activity.list(s, parent_id=str(parent.agent_id))
        leaf = ax.activity.children(s, kids[0])
        missing = ax.activity.children(s, uuid.uuid4())
    assert tree is not None and detail is not None and leaf is not None
    assert [i.agent_id for i in tree.items] == kids  # oldest first
    assert all(i.parent_id == parent.agent_id and i.status == "complete" for i in tree.items)
    assert (tree.parent_status, tree.total) == ("complete", 3)
    assert tree.counts == {**NO_CHILDREN, "complete": 3}
    assert [(c.agent_id, c.agent_type, c.status) for c in detail.children] == [
        (k, "echo", "complete") for k in kids
    ]
    assert detail.children_counts == tree.counts
    assert sorted(i.agent_id for i in listed.items) == sorted(kids) and listed.total == 3
    assert (leaf.items, leaf.total, leaf.counts) == ([], 0, NO_CHILDREN)
    assert missing is None

    async_engine = create_async_engine(async_url(engine))
    try:
        async with AsyncSession(async_engine) as session:
            assert await ax.activity.children(session, parent.agent_id) == tree
            assert await ax.activity.detail(session, parent.agent_id) == detail
            listing = await ax.activity.list(session, parent_id=parent.agent_id)
            assert listing.total == 3
    finally:
        await async_engine.dispose()

    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        answer = await client.get(f"/api/activities/{parent.agent_id}/children")
        assert answer.status_code == 200
        assert answer.json()["counts"] == tree.counts
        assert [i["agent_id"] for i in answer.json()["items"]] == [str(k) for k in kids]
        page = await client.get(f"/api/activities/{parent.agent_id}/children?page_size=2")
        assert len(page.json()["items"]) == 2 and page.json()["total"] == 3
        listed_json = await client.get("/api/activities", params={"parent_id": parent.agent_id})
        assert listed_json.json()["total"] == 3
        body = (await client.get(f"/api/activities/{parent.agent_id}")).json()
        assert body["children_counts"] == tree.counts
        assert (await client.get(f"/api/activities/{uuid.uuid4()}/children")).status_code == 404
        assert (await client.get("/api/activities/nope/children")).status_code == 422
        assert (await client.get("/api/activities?parent_id=nope")).status_code == 422

    before = snapshot(engine)
    await rebuild(engine)
    assert snapshot(engine) == before


async def test_a_parent_shows_its_children_progress(
    running_pool: ax.Pool, projector: Projector, engine: Engine
) -> None:
    parent = await ax.enqueue("spawn", Spawn(children=2, child_delay=60, wait=60))

    async def two_running() -> bool:
        await projector.catch_up()
        with Session(engine) as s:
            tree = ax.activity.children(s, parent.agent_id)
        return tree is not None and tree.counts["running"] == 2

    await async_wait_for(two_running, timeout=scaled(30), what="two running children")
    with Session(engine) as s:
        detail = ax.activity.detail(s, parent.agent_id)
    assert detail is not None and detail.status == "running"
    assert detail.children_counts == {**NO_CHILDREN, "running": 2}

    # A cancel of the parent is a cancel of its children.
    assert await ax.cancel(parent.agent_id)
    for child in detail.children:
        with pytest.raises(ax.TaskFailedError, match="canceled"):
            await ax.get_result(child.agent_id, timeout=scaled(30))
    await projector.catch_up()
    with Session(engine) as s:
        tree = ax.activity.children(s, parent.agent_id)
    assert tree is not None and tree.counts == {**NO_CHILDREN, "canceled": 2}


async def test_an_explicit_parent_and_bad_ones(
    running_pool: ax.Pool, projector: Projector, engine: Engine
) -> None:
    parent = await ax.enqueue("echo", Echo(text="parent"))
    child = await ax.enqueue("echo", Echo(text="child"), parent_id=str(parent.agent_id))
    manual = ax.activity.create("by-hand")
    adopted = await ax.enqueue("echo", Echo(text="of a manual activity"), parent_id=manual)
    await ax.get_result(child, timeout=scaled(30))
    await ax.get_result(adopted, timeout=scaled(30))
    with pytest.raises(ax.InvalidAgentIdError, match="parent_id 'nope' is not a UUID"):
        await ax.enqueue("echo", Echo(text="x"), parent_id="nope")
    unknown = uuid.uuid4()
    with pytest.raises(ax.UnknownActivityError, match=f"parent_id {unknown} is not known"):
        await ax.enqueue("echo", Echo(text="x"), parent_id=unknown)
    await projector.catch_up()
    with Session(engine) as s:
        tree = ax.activity.children(s, parent.agent_id)
        of_manual = ax.activity.children(s, manual)
        with pytest.raises(ax.InvalidAgentIdError):
            ax.activity.children(s, "nope")
        with pytest.raises(ax.InvalidAgentIdError):
            ax.activity.list(s, parent_id="nope")
    assert tree is not None and [i.agent_id for i in tree.items] == [child.agent_id]
    assert of_manual is not None and [i.agent_id for i in of_manual.items] == [adopted.agent_id]


@pytest.fixture
def pipeline_pool(redis_conf: str) -> Iterator[ax.Pool]:
    workflows.pipeline_pool.start()
    try:
        yield workflows.pipeline_pool
    finally:
        workflows.pipeline_pool.shutdown()


async def test_a_pipeline_run_is_the_parent_of_its_steps(
    pipeline_pool: ax.Pool, projector: Projector, engine: Engine
) -> None:
    run = await pipeline.enqueue(context=InputContext(company="Acme"))
    try:
        await ax.get_result(run, timeout=scaled(60))
    finally:
        runs_file(run.agent_id).unlink(missing_ok=True)
    await projector.catch_up()
    with Session(engine) as s:
        tree = ax.activity.children(s, run.agent_id)
        detail = ax.activity.detail(s, run.agent_id)
    assert tree is not None and detail is not None
    assert [i.agent_type for i in tree.items] == [
        "ResearchPipeline.gather_data",
        "ResearchPipeline.analyze",
        "ResearchPipeline.report",
    ]
    assert tree.counts == {**NO_CHILDREN, "complete": 3}
    assert [c.agent_id for c in detail.children] == [i.agent_id for i in tree.items]
    # Each step is timed like any task.
    assert all(i.attempts == 1 and i.run_seconds is not None for i in tree.items)


async def test_a_tracker_fan_in_is_a_child_of_the_task_that_registered_it(
    redis_conf: str,
) -> None:
    orchestrator = ax.activity.create("orchestrator")
    tracker = ax.Tracker("tree-test", uuid.uuid4())
    token = set_running(RunningTask(orchestrator, "orchestrator"))
    try:
        tracker.incr()
        fan_in = tracker.on_complete("aggregate-later", Echo(text="fan in"))
        sibling = await ax.enqueue("echo", Echo(text="queued from the handler"))
        loose = await ax.enqueue("echo", Echo(text="no parent"), parent_id=None)
    finally:
        reset_running(token)
    with pytest.raises(ax.UnknownActivityError, match="is not known"):
        ax.Tracker("tree-test", uuid.uuid4()).on_complete(
            "aggregate-later", Echo(text="x"), parent_id=uuid.uuid4()
        )
    with pytest.raises(ax.InvalidAgentIdError):
        ax.Tracker("tree-test", uuid.uuid4()).on_complete(
            "aggregate-later", Echo(text="x"), parent_id="nope"
        )
    tracker.decr("the one child")
    parents = {e.agent_id: e.parent_id for e in await queued_events()}
    assert parents[fan_in.agent_id] == orchestrator
    assert parents[sibling.agent_id] == orchestrator
    assert parents[loose.agent_id] is None


async def test_a_pipeline_run_started_by_a_handler_is_its_child(redis_conf: str) -> None:
    orchestrator = ax.activity.create("orchestrator")
    token = set_running(RunningTask(orchestrator, "orchestrator"))
    try:
        run = await pipeline.enqueue(context=InputContext(company="Acme"))
        alone = await pipeline.enqueue(context=InputContext(company="Acme"), parent_id=None)
    finally:
        reset_running(token)
    parents = {e.agent_id: e.parent_id for e in await queued_events()}
    assert parents[run.agent_id] == orchestrator
    assert parents[alone.agent_id] is None
    steps = [a for a, p in parents.items() if p == run.agent_id]
    assert len(steps) == 1  # its first step, a child of the run


async def test_children_in_one_statement_cover_every_edge(
    projector: Projector, engine: Engine
) -> None:
    """`children` reads the counts, the parent's status and the page in one statement: a
    page past the end keeps the counts, a parent not projected (yet) has children without
    a status, a task without children has zero counts, and an unknown id gives None; the
    statement, built once, serves every parent and page."""
    start = datetime.now(UTC) - timedelta(minutes=5)
    parent, orphan_parent, lonely = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    kids = [uuid.uuid4() for _ in range(5)]
    evs: list[events.Event] = [
        events.TaskQueued(agent_id=parent, task_name="fan_out", queue="q", ts=start),
        events.TaskQueued(agent_id=lonely, task_name="leaf", queue="q", ts=start),
    ]
    evs += [
        events.TaskQueued(
            agent_id=kid,
            task_name="leaf",
            queue="q",
            parent_id=parent if i < 3 else orphan_parent,
            ts=start + timedelta(seconds=i + 1),
        )
        for i, kid in enumerate(kids)
    ]
    evs += [events.TaskStarted(agent_id=kids[1], task_name="leaf", worker="w")]
    append_all(evs)
    await projector.catch_up()
    with Session(engine) as s:
        first = ax.activity.children(s, parent, page=1, page_size=2)
        second = ax.activity.children(s, parent, page=2, page_size=2)
        past = ax.activity.children(s, parent, page=9, page_size=2)
        orphans = ax.activity.children(s, orphan_parent)
        none = ax.activity.children(s, lonely)
        unknown = ax.activity.children(s, uuid.uuid4())
    assert first is not None and second is not None and past is not None
    counts = {**NO_CHILDREN, "queued": 2, "running": 1}
    assert [i.agent_id for i in first.items + second.items] == kids[:3]
    assert [i.status for i in first.items] == [ax.Status.QUEUED, ax.Status.RUNNING]
    assert (first.counts, first.total, first.parent_status) == (counts, 3, ax.Status.QUEUED)
    assert (past.items, past.counts, past.total, past.page) == ([], counts, 3, 9)
    assert orphans is not None and orphans.parent_status is None
    assert [i.agent_id for i in orphans.items] == kids[3:]
    assert orphans.counts == {**NO_CHILDREN, "queued": 2}
    assert none is not None and (none.items, none.counts, none.total) == ([], NO_CHILDREN, 0)
    assert unknown is None
