"""The write side of the activity API: what it appends, and the mistakes it refuses."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from pydantic import BaseModel

import agentexec as ax
from agentexec import events
from agentexec.connection import close_redis
from agentexec.events import TaskCompleted, TaskFailed, TaskProgress, TaskQueued
from agentexec.tasks import RunningTask, reset_running, set_running
from tests.support.logs import log_entries_sync


class Job(BaseModel):
    text: str


def logged() -> list[events.AnyEvent]:
    entries = log_entries_sync()
    return [events.decode_entry(fields) for _, fields in entries]  # type: ignore[union-attr]


def test_create_appends_a_queued_event(redis_conf: str) -> None:
    agent_id = ax.activity.create(task_name="custom_task", message="Starting", agent_id=None)
    assert isinstance(agent_id, uuid.UUID)
    # In the first one's partition (with several): the log keeps order within a partition.
    partitions = ax.runtime.current().partitions
    given = partitions.place(uuid.uuid4(), partitions.of(agent_id))
    assert ax.activity.create("custom_task", agent_id=str(given), session=None) == given
    first, second = logged()
    assert isinstance(first, TaskQueued) and first.agent_id == agent_id
    assert (first.task_name, first.message) == ("custom_task", "Starting")
    assert second.message == ax.CONF.activity_message_create


def test_update_complete_and_error_spellings(redis_conf: str) -> None:
    aid = ax.activity.create("t")
    ax.activity.update(aid, "Processing batch 3 of 10", percentage=30)
    ax.activity.update(aid, "no percentage")
    ax.activity.complete(aid, message="Done")
    ax.activity.complete(aid)
    ax.activity.error(aid, "Operation failed: boom")
    ax.activity.error(aid, error="Failed: quota")
    _, p1, p2, c1, c2, e1, e2 = logged()
    assert isinstance(p1, TaskProgress) and (p1.message, p1.percentage) == (
        "Processing batch 3 of 10",
        30,
    )
    assert p2.percentage is None
    assert isinstance(c1, TaskCompleted) and (c1.message, c1.percentage) == ("Done", 100)
    assert c2.message == "Task completed successfully."
    assert isinstance(e1, TaskFailed) and (e1.message, e1.error) == (
        "Operation failed: boom",
        "Operation failed: boom",
    )
    assert isinstance(e2, TaskFailed)
    assert (e2.message, e2.error) == ("Task failed with error: Failed: quota", "Failed: quota")


@pytest.mark.parametrize("percentage", [-1, 101, 50.5, True, "50"])
def test_percentage_outside_0_to_100_is_refused(redis_conf: str, percentage: object) -> None:
    aid = ax.activity.create("t")
    with pytest.raises(ValueError, match=r"percentage .* from 0 to 100"):
        ax.activity.update(aid, "x", percentage=percentage)  # type: ignore[arg-type]
    assert len(logged()) == 1


@pytest.mark.parametrize("message", ["", "   "])
def test_empty_message_is_refused(redis_conf: str, message: str) -> None:
    aid = ax.activity.create("t")
    with pytest.raises(ValueError, match="empty"):
        ax.activity.update(aid, message)
    with pytest.raises(ValueError, match="empty"):
        ax.activity.error(aid)
    with pytest.raises(ValueError, match="task name"):
        ax.activity.create("")


def test_unknown_agent_id_is_refused(redis_conf: str) -> None:
    stranger = uuid.uuid4()
    for call in (
        lambda: ax.activity.update(stranger, "hello"),
        lambda: ax.activity.complete(stranger),
        lambda: ax.activity.error(stranger, "x"),
    ):
        with pytest.raises(ax.UnknownActivityError, match=str(stranger)):
            call()
    with pytest.raises(ValueError, match="not a UUID"):
        ax.activity.update("not-a-uuid", "hello")
    assert logged() == []


async def test_enqueued_task_is_known_and_handler_context_skips_the_check(
    redis_conf: str,
) -> None:
    task = await ax.enqueue("anything", Job(text="x"))
    ax.activity.update(task.agent_id, "from outside the worker", percentage=10)
    # Inside the task's own handler the id is known without asking Redis.
    inside = uuid.uuid4()
    token = set_running(RunningTask(inside))
    try:
        await asyncio.to_thread(ax.activity.update, inside, "from a sync handler")
        ax.activity.update(inside, "from an async handler")
    finally:
        reset_running(token)
    assert [e.message for e in logged()][1:] == [
        "from outside the worker",
        "from a sync handler",
        "from an async handler",
    ]
    await close_redis()


def test_unreachable_redis_is_reported(redis_conf: str) -> None:
    ax.CONF.redis_url = "redis://127.0.0.1:1/0"
    with pytest.raises(ax.RedisUnavailableError, match=r"127\.0\.0\.1:1"):
        ax.activity.create("t")
