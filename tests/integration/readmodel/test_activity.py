"""The activity API against the read model, on SQLite and PostgreSQL alike (the contract)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.activity.models import Activity, ActivityLog, Status
from agentexec.activity.writes import append
from agentexec.events import TaskCompleted, TaskProgress, TaskStarted
from agentexec.projector import Projector


class Job(BaseModel):
    text: str


async def test_lifecycle_of_a_manual_activity(engine: Engine, projector: Projector) -> None:
    agent_id = ax.activity.create("custom_task", message="Starting custom operation")
    ax.activity.update(agent_id, "Phase 1 complete", percentage=33)
    ax.activity.update(str(agent_id), "Phase 2 complete", percentage=66)
    ax.activity.complete(agent_id, message="All processing finished")
    assert await projector.catch_up() == 4

    with Session(engine) as session:
        activity = ax.activity.detail(session, agent_id)
        assert activity is not None
        assert activity.agent_type == "custom_task"
        assert activity.status == "COMPLETE" and activity.status is Status.COMPLETE
        assert activity.status in ("COMPLETE", "ERROR")
        assert activity.status.value == "COMPLETE"
        assert activity.latest_percentage == 100
        assert [(log.status, log.message, log.percentage) for log in activity.logs] == [
            (Status.QUEUED, "Starting custom operation", None),
            (Status.RUNNING, "Phase 1 complete", 33),
            (Status.RUNNING, "Phase 2 complete", 66),
            (Status.COMPLETE, "All processing finished", 100),
        ]
        assert activity.created_at.tzinfo is UTC
        assert activity.updated_at >= activity.created_at
        assert ax.activity.active_count(session) == 0


async def test_enqueued_task_runs_through_the_worker_events(
    engine: Engine, projector: Projector
) -> None:
    task = await ax.enqueue("research", Job(text="Acme"), metadata={"tenant": "t1"})
    aid = task.agent_id
    await projector.catch_up()
    with Session(engine) as session:
        queued = ax.activity.detail(session, aid)
        assert queued is not None and queued.status == Status.QUEUED
        assert ax.activity.active_count(session) == 1
        row = session.scalars(select(Activity).where(Activity.agent_id == aid)).one()
        assert (row.queue, row.priority, row.metadata_) == (
            "agentexec_tasks",
            "low",
            {"tenant": "t1"},
        )

    for attempt in (1, 2):
        append(
            TaskStarted(
                agent_id=aid, task_name="research", attempt=attempt, message="Task started."
            )
        )
    append(TaskProgress(agent_id=aid, task_name="", message="half way", percentage=50))
    append(TaskCompleted(agent_id=aid, task_name="research", message="done", percentage=100))
    # Late events from a zombie worker: logged, but COMPLETE is final.
    append(TaskStarted(agent_id=aid, task_name="research", message="late start"))
    ax.activity.error(aid, error="too late")
    await projector.catch_up()

    with Session(engine) as session:
        row = session.scalars(select(Activity).where(Activity.agent_id == aid)).one()
        assert row.status == Status.COMPLETE
        assert row.attempts == 2
        assert row.latest_message == "done" and row.latest_percentage == 100
        assert row.error is None
        assert row.started_at is not None and row.finished_at is not None
        assert len(row.logs) == 7
        assert [log.status for log in row.logs][-2:] == [Status.RUNNING, Status.ERROR]


async def test_errors_keep_the_first_terminal_status(engine: Engine, projector: Projector) -> None:
    aid = ax.activity.create("api_task")
    ax.activity.error(aid, "API error: quota exceeded")
    ax.activity.complete(aid)
    await projector.catch_up()
    with Session(engine) as session:
        activity = ax.activity.detail(session, aid)
        assert activity is not None
        assert activity.status == "ERROR" and activity.error == "API error: quota exceeded"
        assert activity.logs[1].message == "API error: quota exceeded"

    other = ax.activity.create("api_task")
    ax.activity.error(other, error="boom")
    await projector.catch_up()
    with Session(engine) as session:
        detail = ax.activity.detail(session, other)
        assert detail is not None and detail.latest_log == "Task failed with error: boom"


async def test_list_puts_active_first_then_newest(engine: Engine, projector: Projector) -> None:
    done = [ax.activity.create(f"done_{i}") for i in range(3)]
    for aid in done:
        ax.activity.complete(aid)
    running = ax.activity.create("running")
    ax.activity.update(running, "working", percentage=10)
    queued = ax.activity.create("queued")
    await projector.catch_up()

    with Session(engine) as session:
        page = ax.activity.list(session, page=1, page_size=2)
        assert (page.total, page.page, page.page_size, page.pages, page.total_pages) == (
            5,
            1,
            2,
            3,
            3,
        )
        assert [i.agent_id for i in page.items] == [queued, running]
        assert page.items[1].latest_log == page.items[1].latest_log_message == "working"
        assert page.items[1].percentage == page.items[1].latest_percentage == 10
        rest = ax.activity.list(session, page=2, page_size=2).items
        rest += ax.activity.list(session, page=3, page_size=2).items
        assert [i.agent_id for i in rest] == list(reversed(done))
        assert all(i.status == "COMPLETE" for i in rest)
        assert ax.activity.active_count(session) == 2
        assert ax.activity.list(session, page=9).items == []
        with pytest.raises(ValueError, match="page 0"):
            ax.activity.list(session, page=0)


async def test_detail_of_unknown_agent_is_none(engine: Engine, projector: Projector) -> None:
    with Session(engine) as session:
        assert ax.activity.detail(session, uuid.uuid4()) is None
        assert ax.activity.detail(session, str(uuid.uuid4())) is None
        with pytest.raises(ValueError, match="not a UUID"):
            ax.activity.detail(session, "nope")


async def test_cancel_pending(engine: Engine, projector: Projector) -> None:
    pending = [ax.activity.create("stale") for _ in range(3)]
    ax.activity.update(pending[0], "running", percentage=5)
    finished = ax.activity.create("finished")
    ax.activity.complete(finished)
    await projector.catch_up()

    with Session(engine) as session:
        assert ax.activity.cancel_pending(session) == 3
    await projector.catch_up()
    with Session(engine) as session:
        statuses = dict(session.execute(select(Activity.agent_id, Activity.status)).all())
        assert all(statuses[a] == Status.CANCELED for a in pending)
        assert statuses[finished] == Status.COMPLETE
        assert ax.activity.cancel_pending(session) == 0
        assert ax.activity.active_count(session) == 0


async def test_seed_query_by_status(engine: Engine, projector: Projector) -> None:
    running_id = ax.activity.create("research")
    ax.activity.update(running_id, "Researching", percentage=25)
    failed_id = ax.activity.create("research")
    ax.activity.error(failed_id, "Operation failed: boom")
    await projector.catch_up()

    # As written in "Activity Tracking" (seed 002), Query by Status.
    with Session(engine) as session:
        # Get running activities
        running = session.query(Activity).filter(Activity.logs.any(status=Status.RUNNING)).all()

        # Get recently completed
        from datetime import datetime, timedelta

        hour_ago = datetime.utcnow() - timedelta(hours=1)

        recent = (
            session.query(Activity)
            .filter(Activity.updated_at >= hour_ago)
            .order_by(Activity.updated_at.desc())
            .all()
        )

        # Get error activities
        errors = session.query(Activity).filter(Activity.logs.any(status=Status.ERROR)).all()

    assert [a.agent_id for a in running] == [running_id]
    assert {a.agent_id for a in recent} == {running_id, failed_id}
    assert [a.agent_id for a in errors] == [failed_id]


async def test_status_compares_with_strings_in_sql(engine: Engine, projector: Projector) -> None:
    aid = ax.activity.create("x")
    await projector.catch_up()
    with Session(engine) as session:
        assert session.scalar(select(Activity.agent_id).where(Activity.status == "QUEUED")) == aid
        assert session.scalar(select(Activity.agent_id).where(Activity.status == "queued")) == aid
        assert (
            session.scalar(
                select(ActivityLog.status).where(ActivityLog.status.in_([Status.QUEUED]))
            )
            == "QUEUED"
        )
        future = datetime.now(UTC) + timedelta(minutes=5)
        assert session.scalar(select(Activity.agent_id).where(Activity.created_at < future)) == aid
