"""Hard text at the edges: failures whose message cannot be encoded or holds credentials,
progress messages the database cannot store or that are huge. Each is recorded, once, in a
form every backend stores, and the read model equals what the worker recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.activity.models import Activity, ActivityLog, ArchivedEvent
from agentexec.connection import get_redis
from agentexec.events import Priority
from agentexec.projector import Projector
from agentexec.streams import WORKERS_GROUP
from tests.apps import edges
from tests.support.logs import keys_of, log_entries


@pytest.fixture
def edges_pool(redis_conf: str) -> Iterator[ax.Pool]:
    edges.pool.start()
    try:
        yield edges.pool
    finally:
        edges.pool.shutdown()


async def _fail_once(task_name: str, path: Path) -> tuple[UUID, ax.TaskFailedError]:
    task = await ax.enqueue(task_name, edges.Runs(path=str(path)))
    with pytest.raises(ax.TaskFailedError) as raised:
        await ax.get_result(task, timeout=60)
    # Ended and acknowledged: no lease left to expire, so it cannot run again.
    pending = await get_redis().xpending(
        keys_of(task.agent_id).queue("edges", Priority.LOW), WORKERS_GROUP
    )
    assert pending["pending"] == 0
    assert path.read_text().splitlines() == ["run"]
    return task.agent_id, raised.value


def _row(engine: Engine, agent_id: UUID) -> tuple[Activity, list[str], list[str]]:
    with Session(engine) as session:
        activity = session.scalars(select(Activity).where(Activity.agent_id == agent_id)).one()
        logs = list(
            session.scalars(
                select(ActivityLog.message)
                .where(ActivityLog.activity_id == activity.id)
                .order_by(ActivityLog.id)
            )
        )
        archived = list(
            session.scalars(select(ArchivedEvent.data).where(ArchivedEvent.agent_id == agent_id))
        )
        session.expunge(activity)
        return activity, logs, archived


async def test_a_failure_with_an_unencodable_message_is_recorded_once(
    engine: Engine, projector: Projector, edges_pool: ax.Pool, tmp_path: Path
) -> None:
    agent_id, error = await _fail_once("surrogate_failure", tmp_path / "runs")
    assert error.error == "ValueError: bad \\udc80 text"
    await asyncio.wait_for(projector.catch_up(), 60)
    activity, logs, _ = _row(engine, agent_id)
    assert activity.status == ax.Status.ERROR
    assert activity.error == "ValueError: bad \\udc80 text"
    assert logs[-1] == "Task failed with error: ValueError: bad \\udc80 text"


async def test_a_result_that_cannot_be_encoded_fails_the_task_once(
    engine: Engine, projector: Projector, edges_pool: ax.Pool, tmp_path: Path
) -> None:
    agent_id, error = await _fail_once("surrogate_result", tmp_path / "runs")
    assert "cannot be stored" in error.error and "\\udc80" in error.error
    await asyncio.wait_for(projector.catch_up(), 60)
    assert _row(engine, agent_id)[0].error == error.error


async def test_a_failure_whose_str_raises_is_recorded_once(
    engine: Engine, projector: Projector, edges_pool: ax.Pool, tmp_path: Path
) -> None:
    agent_id, error = await _fail_once("unprintable_failure", tmp_path / "runs")
    assert error.error.startswith("Unprintable: <")
    await asyncio.wait_for(projector.catch_up(), 60)
    assert _row(engine, agent_id)[0].status == ax.Status.ERROR


async def test_credentials_in_a_failure_reach_neither_the_caller_nor_the_read_model(
    engine: Engine, projector: Projector, edges_pool: ax.Pool, tmp_path: Path
) -> None:
    agent_id, error = await _fail_once("leaky_failure", tmp_path / "runs")
    assert "redis://agent:***@cache.internal:6379/0" in error.error
    await asyncio.wait_for(projector.catch_up(), 60)
    activity, logs, archived = _row(engine, agent_id)
    assert activity.status == ax.Status.ERROR and activity.error == error.error
    for text in (str(error), activity.error, *logs, *archived):
        assert edges.PASSWORD not in text and edges.API_KEY not in text
        assert edges.API_KEY[:12] not in text


async def test_unstorable_and_huge_progress_messages_are_stored_in_a_safe_bounded_form(
    engine: Engine, projector: Projector, edges_pool: ax.Pool, tmp_path: Path
) -> None:
    task = await ax.enqueue("awkward_progress", edges.Runs(path=str(tmp_path / "runs")))
    assert await ax.get_result(task, timeout=60) == "done"
    entries = await log_entries()
    assert max(len(fields[b"event"]) for _, fields in entries) < 70_000  # not 5 MB
    await asyncio.wait_for(projector.catch_up(), 60)
    activity, logs, _ = _row(engine, task.agent_id)
    assert activity.status == ax.Status.COMPLETE
    progress = [m for m in logs if m.startswith(("nul", "xxx"))]
    assert progress[0] == "nul \\x00 and \\udc80 surrogate"
    assert len(progress[1].encode()) <= ax.CONF.max_message_bytes
    assert progress[1].endswith("(AGENTEXEC_MAX_MESSAGE_BYTES)]")
