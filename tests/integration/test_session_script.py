"""Contracts of the session scripts. `session_change` (`Broker.change_session`): a change
applies only at the version its writer read, and running it again with its token (after a
lost reply) does not apply it twice; from a task's handler, only while its worker holds the
task's lease and the task has not ended. `session_restore` (`Broker.restore_session`): puts items
back only into a session that has no version (not written since Redis lost its data)."""

from __future__ import annotations

import uuid

import msgspec

import agentexec as ax
from agentexec import events
from agentexec.broker import Broker
from agentexec.connection import get_redis
from agentexec.events import SessionItemsAdded, TaskQueued
from agentexec.streams import WORKERS_GROUP, Keys
from agentexec.tasks import TaskLease


def added(key: uuid.UUID, version: int, index: int, item: bytes) -> bytes:
    return events.encode(
        SessionItemsAdded(
            agent_id=key,
            task_name="",
            session_id="s",
            version=version,
            index=index,
            items=[msgspec.Raw(item)],
        )
    )


async def test_a_change_applies_at_its_version_and_once_per_token(redis_conf: str) -> None:
    broker, key = Broker(), uuid.uuid4()
    first = await broker.change_session(key, 0, "add", "t1", [added(key, 1, 0, b"1")], [b"1"])
    assert first is not None and first[0] == 1 and len(first[1]) == 1
    # The same change again (its reply was lost): not applied twice, no second event.
    again = await broker.change_session(key, 0, "add", "t1", [added(key, 1, 0, b"1")], [b"1"])
    assert again == (1, [])
    # A writer that read version 0 is too late now.
    stale = await broker.change_session(key, 0, "add", "t2", [added(key, 1, 0, b"2")], [b"2"])
    assert stale is None
    state = await broker.session_state(key)
    assert (state.version, state.length, state.last) == (1, 1, b"1")
    popped = await broker.change_session(key, 1, "pop", "t3", [added(key, 2, 0, b"1")])
    assert popped is not None and popped[0] == 0
    assert (await broker.session_state(key)).version == 2
    log = await get_redis().xrange(Keys(ax.CONF.key_prefix).events)
    assert len(log) == 2


async def test_a_restore_puts_items_back_only_into_a_session_without_a_version(
    redis_conf: str,
) -> None:
    broker, lost, written = Broker(), uuid.uuid4(), uuid.uuid4()
    assert await broker.restore_session(lost, 7, [b"1", b"2"])
    state = await broker.session_state(lost)
    assert (state.version, state.length, state.last) == (7, 2, b"2")
    assert not await broker.restore_session(lost, 9, [b"x"])  # restored once: left alone
    await broker.change_session(written, 0, "add", "t", [added(written, 1, 0, b"new")], [b"new"])
    assert not await broker.restore_session(written, 3, [b"old"])  # written since the loss
    assert (await broker.session_items(written, None)) == ([b"new"], 1)


async def test_a_change_from_a_handler_is_fenced_by_its_task_lease(redis_conf: str) -> None:
    broker, key, client = Broker(), uuid.uuid4(), get_redis()
    task = TaskQueued(agent_id=uuid.uuid4(), task_name="t", queue="q")
    consumer = broker.consumer("q", "w:0")
    await consumer.ensure_groups()
    await broker.enqueue(task)
    [entry] = await consumer.read(10)
    lease = TaskLease(entry[0], entry[1], WORKERS_GROUP, "w:0")
    held = (task.agent_id, lease)
    first = await broker.change_session(key, 0, "add", "t1", [added(key, 1, 0, b"1")], [b"1"], held)
    assert first is not None and first is not False and first[0] == 1
    # Another worker took the task over: the first one's changes are refused, unapplied.
    await client.xclaim(entry[0], WORKERS_GROUP, "w:1", 0, [entry[1]])
    late = await broker.change_session(key, 1, "add", "t2", [added(key, 2, 1, b"2")], [b"2"], held)
    assert late is False
    assert (
        await broker.change_session(key, 1, "pop", "t3", [added(key, 2, 0, b"1")], (), held)
        is False
    )
    # The new holder may change it, and a writer outside any handler too.
    taken = (task.agent_id, TaskLease(entry[0], entry[1], WORKERS_GROUP, "w:1"))
    assert await broker.change_session(key, 1, "add", "t4", [added(key, 2, 1, b"2")], [b"2"], taken)
    assert await broker.change_session(key, 2, "add", "t5", [added(key, 3, 2, b"3")], [b"3"])
    # Once the task ended (its result stored), even its holder's changes are refused.
    await client.set(broker.keys.result(task.agent_id), b"done")
    ended = await broker.change_session(key, 3, "clear", "t6", [added(key, 4, 0, b"1")], (), taken)
    assert ended is False
    assert (await broker.session_items(key, None)) == ([b"1", b"2", b"3"], 3)
    assert (await broker.session_state(key)).version == 3
