"""Redis comes back empty: the projector restores queued tasks and results from the archive."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

import agentexec as ax
from agentexec import events
from agentexec.connection import get_redis
from agentexec.events import (
    Priority,
    TaskCompleted,
    TaskFailed,
    TaskQueued,
    TaskRetried,
    TaskStarted,
)
from agentexec.projector import Projector
from agentexec.projector.restore import REQUEUED_MESSAGE
from agentexec.streams import PROJECTOR_GROUP, Keys, ensure_group
from tests.integration.readmodel.workload import append_all
from tests.support.listeners import subscribers
from tests.support.waiting import async_wait_for, scaled


def _queued(queue: str = "q", **fields: object) -> TaskQueued:
    return TaskQueued(
        agent_id=uuid.uuid4(),
        task_name="research",
        queue=queue,
        context=msgspec.Raw(b'{"company":"Acme"}'),
        message="Waiting to start.",
        **fields,  # type: ignore[arg-type]
    )


async def _queue_entries(stream: str) -> list[events.AnyEvent]:
    return [events.decode_entry(f) for _, f in await get_redis().xrange(stream)]


async def test_redis_flushed_restores_queued_tasks_and_results(projector: Projector) -> None:
    keys = Keys(ax.CONF.key_prefix)
    waiting = _queued(priority=Priority.HIGH, timeout=30.0)
    later = datetime.now(UTC) + timedelta(hours=1)
    delayed = _queued(not_before=later)
    retried = _queued()
    done, failed, running = _queued(), _queued(), _queued()
    started = [
        TaskStarted(agent_id=e.agent_id, task_name="research", message="Task started.")
        for e in (retried, done, failed, running)
    ]
    ends = [
        TaskRetried(
            agent_id=retried.agent_id,
            task_name="research",
            error="ConnectionError: x",
            delay=0.0,
            message="Attempt 1 failed.",
        ),
        TaskCompleted(
            agent_id=done.agent_id,
            task_name="research",
            message="done",
            result=msgspec.Raw(b'{"answer":42}'),
        ),
        TaskFailed(agent_id=failed.agent_id, task_name="research", error="ValueError: y"),
    ]
    append_all([waiting, delayed, retried, done, failed, running, *started, *ends])
    await projector.catch_up()
    await get_redis().flushall()

    # Someone waits for a result that Redis lost; a fresh projector (as after a restart)
    # notices the loss.
    waiter = asyncio.create_task(ax.get_result(done.agent_id, timeout=scaled(5)))
    # A task queued since Redis came back has its entry: it is not queued again.
    fresh = _queued()
    append_all([fresh])
    channel = keys.result_channel(done.agent_id)
    await async_wait_for(lambda: subscribers(channel), what="the waiter subscribed")
    await Projector(projector.engine, lease_seconds=5).catch_up()
    assert await waiter == {"answer": 42}

    queued = await _queue_entries(keys.queue("q", Priority.HIGH))
    assert [e.agent_id for e in queued] == [waiting.agent_id]
    again = queued[0]
    assert isinstance(again, TaskQueued)
    assert (again.context, again.timeout, again.attempt) == (waiting.context, 30.0, 1)
    low = await _queue_entries(keys.queue("q", Priority.LOW))
    # The retried task is due now, and is on its second attempt.
    assert [(e.agent_id, e.attempt) for e in low] == [(retried.agent_id, 2)]
    # The delayed task keeps its time to run; the running one is queued once more, due after
    # a lease (in case its worker died with the entry), on its next attempt.
    members = {
        events.decode(member[2:]).agent_id: (events.decode(member[2:]), due)
        for member, due in await get_redis().zrange(keys.delayed("q"), 0, -1, withscores=True)
    }
    assert set(members) == {delayed.agent_id, running.agent_id}
    assert members[delayed.agent_id][1] == int(later.timestamp() * 1000)
    again_later, due = members[running.agent_id]
    assert again_later.attempt == 2
    lease_ms = ax.CONF.lease_seconds * 1000
    assert 0.5 * lease_ms < due - time.time() * 1000 <= lease_ms

    # Results of tasks that ended are there again; the running task is left to its worker.
    assert await ax.get_result(done.agent_id, timeout=scaled(1)) == {"answer": 42}
    with pytest.raises(ax.TaskFailedError, match="ValueError: y"):
        await ax.get_result(failed.agent_id, timeout=scaled(1))
    assert not await get_redis().exists(keys.result(running.agent_id))

    # The log records what was queued again, and a second pass changes nothing.
    logged = [events.decode_entry(f) for _, f in await get_redis().xrange(keys.events)]
    assert sorted(str(e.agent_id) for e in logged) == sorted(
        str(e.agent_id) for e in (fresh, waiting, delayed, retried)
    )
    assert {e.message for e in logged if e.agent_id != fresh.agent_id} == {REQUEUED_MESSAGE}
    assert not await get_redis().exists(keys.restore_due)
    await Projector(projector.engine, lease_seconds=5).catch_up()
    assert len(await _queue_entries(keys.queue("q", Priority.HIGH))) == 1
    assert len(await get_redis().xrange(keys.events)) == 4
    assert await get_redis().zcard(keys.delayed("q")) == 2


async def test_a_restore_cut_short_is_finished_by_the_next_owner(projector: Projector) -> None:
    keys = Keys(ax.CONF.key_prefix)
    waiting = _queued()
    append_all([waiting])
    await projector.catch_up()
    await get_redis().flushall()
    # The owner noticed the loss, recreated the group and died before restoring: the mark
    # outlives it.
    await ensure_group(get_redis(), keys.events, PROJECTOR_GROUP, start=projector.position)
    await get_redis().set(keys.restore_due, projector.position)
    await Projector(projector.engine, lease_seconds=5).catch_up()
    low = await _queue_entries(keys.queue("q", Priority.LOW))
    assert [e.agent_id for e in low] == [waiting.agent_id]


async def test_a_new_namespace_restores_nothing(projector: Projector) -> None:
    # No checkpoint yet: an empty Redis is a fresh start, not a loss.
    await projector.catch_up()
    assert not await get_redis().exists(Keys(ax.CONF.key_prefix).restore_due)
