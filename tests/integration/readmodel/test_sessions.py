"""`ax.AgentSession` against real Redis and a projector on SQLite and PostgreSQL: the Session
protocol, atomic pops, the projected `session_items` table (exact under rebuild), the size
limit, `needs_summarization`, and the session's events in replay."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

import agentexec as ax
from agentexec import events, sessions
from agentexec.activity.models import Activity, SessionItem
from agentexec.connection import get_redis
from agentexec.eventlog import Recorded
from agentexec.projector import Projector
from agentexec.projector.rebuild import rebuild
from agentexec.projector.replay import as_text, replay
from agentexec.runtime import current
from agentexec.sessions import AgentSession, session_agent_id
from agentexec.streams import WORKERS_GROUP
from agentexec.tasks import RunningTask, TaskLease, reset_running, set_running
from tests.integration.readmodel.conftest import database_url
from tests.integration.readmodel.workload import snapshot
from tests.support.logs import log_entries


def table_items(engine: Engine, session_id: str) -> list[Any]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(SessionItem.position, SessionItem.item)
            .where(SessionItem.session_id == session_id)
            .order_by(SessionItem.position)
        ).all()
    assert [r.position for r in rows] == list(range(len(rows)))
    return [r.item for r in rows]


async def session_events(session_id: str) -> list[events.AnyEvent]:
    entries = await log_entries()
    log = [events.decode_entry(fields) for _, fields in entries]
    return [e for e in log if isinstance(e, events.SessionEvent) and e.session_id == session_id]


def message(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "content": text}


async def test_the_session_protocol_is_read_at_once_and_projected(
    projector: Projector, engine: Engine
) -> None:
    session = AgentSession("chat-1")
    other = AgentSession("chat-1")  # another worker's object for the same conversation
    assert await session.get_items() == []
    assert await session.pop_item() is None

    await session.add_items([message("user", "Hello!"), message("assistant", "Hi there!")])
    await other.add_items([message("user", "How are you?")])
    # Read-your-writes: each object sees the other's items at once, without the projector.
    everything = [
        message("user", "Hello!"),
        message("assistant", "Hi there!"),
        message("user", "How are you?"),
    ]
    assert await session.get_items() == everything
    assert await other.get_items(limit=2) == everything[1:]
    assert await other.get_items(limit=0) == []

    assert await other.pop_item() == message("user", "How are you?")
    assert await session.get_items() == everything[:2]
    await projector.catch_up()
    assert table_items(engine, "chat-1") == everything[:2]

    await session.clear_session()
    assert await other.get_items() == []
    await session.add_items([message("user", "Again")])
    await projector.catch_up()
    assert table_items(engine, "chat-1") == [message("user", "Again")]

    kinds = [type(e).__name__ for e in await session_events("chat-1")]
    assert kinds == [
        "SessionItemsAdded",
        "SessionItemsAdded",
        "SessionItemPopped",
        "SessionCleared",
        "SessionItemsAdded",
    ]
    log = await session_events("chat-1")
    assert [e.version for e in log] == [1, 2, 3, 4, 5]  # type: ignore[union-attr]
    # A session is not a task: no activity row is made for it.
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Activity)).scalar() == 0


async def test_concurrent_pops_never_return_the_same_item(
    projector: Projector, engine: Engine
) -> None:
    await AgentSession("shared").add_items([{"n": n} for n in range(40)])
    poppers = [AgentSession("shared") for _ in range(8)]

    async def drain(session: AgentSession) -> list[Any]:
        got = []
        while (item := await session.pop_item()) is not None:
            got.append(item["n"])
        return got

    results = await asyncio.gather(*(drain(s) for s in poppers))
    popped = [n for got in results for n in got]
    assert sorted(popped) == list(range(40))  # each item exactly once
    assert await AgentSession("shared").get_items() == []
    pops = [e for e in await session_events("shared") if isinstance(e, events.SessionItemPopped)]
    assert sorted(e.index for e in pops) == list(range(40))
    await projector.catch_up()
    assert table_items(engine, "shared") == []


async def test_the_table_equals_a_rebuild_from_the_archive(
    projector: Projector, engine: Engine
) -> None:
    a, b = AgentSession("a"), AgentSession("b")
    await a.add_items([message("user", f"a{n}") for n in range(5)])
    await b.add_items([message("user", "b0"), {"type": "function_call", "arguments": "{}"}])
    await projector.catch_up()  # part of the history in one batch...
    await a.pop_item()
    await a.pop_item()
    await a.add_items([message("assistant", "a3'")])
    await b.clear_session()
    await b.add_items([message("user", "b-again"), message("user", "NUL \x00 and é")])
    await projector.catch_up()  # ...the rest in another
    before = snapshot(engine)
    assert table_items(engine, "a") == [
        message("user", "a0"),
        message("user", "a1"),
        message("user", "a2"),
        message("assistant", "a3'"),
    ]
    assert table_items(engine, "b") == [
        message("user", "b-again"),
        message("user", "NUL \x00 and é"),
    ]
    assert table_items(engine, "b") == await b.get_items()
    assert table_items(engine, "a") == await a.get_items()

    await rebuild(engine)
    assert snapshot(engine) == before


async def test_large_items_are_refused_whole_and_big_calls_split_into_events(
    projector: Projector, engine: Engine
) -> None:
    session = AgentSession("big", max_item_bytes=4096)
    with pytest.raises(ax.AgentexecError, match="max_item_bytes=4,096"):
        await session.add_items([message("user", "fits"), message("user", "x" * 5000)])
    with pytest.raises(ax.AgentexecError, match="cannot be stored as JSON"):
        await session.add_items([{"when": object()}])
    assert await session.get_items() == [] and await session_events("big") == []

    roomy = AgentSession("big")
    items = [message("user", str(n) * 100_000) for n in range(6)]  # 600 kB in one call
    await roomy.add_items(items)
    added = await session_events("big")
    assert len(added) > 1  # recorded in several events, appended atomically in order
    assert [e.index for e in added] == sorted(e.index for e in added)  # type: ignore[union-attr]
    assert await roomy.get_items() == items
    await projector.catch_up()
    assert table_items(engine, "big") == items


async def test_needs_summarization_at_max_items(redis_conf: str) -> None:
    session = AgentSession("long", max_items=3)
    assert not session.needs_summarization()
    await session.add_items([message("user", "1"), message("assistant", "2")])
    assert not session.needs_summarization()
    await session.add_items([message("user", "3")])
    assert session.needs_summarization()
    await session.pop_item()
    assert not session.needs_summarization()

    # Another object learns the length from its own reads.
    other = AgentSession("long", max_items=2)
    assert not other.needs_summarization()
    await other.get_items(limit=1)
    assert other.needs_summarization()
    assert not AgentSession("long").needs_summarization()  # no max_items: never
    with pytest.raises(ValueError, match="max_items=0"):
        AgentSession("long", max_items=0)
    with pytest.raises(ax.InvalidNameError, match="session id"):
        AgentSession("")


async def test_a_handler_that_lost_its_task_leaves_the_session_unchanged(
    redis_conf: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker = current().broker
    # With several partitions, the task lives in another than the session: its fence is then
    # checked apart from the change (Broker.change_session), which must still refuse it.
    partitions = broker.partitions
    elsewhere = (partitions.of(session_agent_id("handed-over")) + 1) % len(partitions)
    task = events.TaskQueued(agent_id=partitions.new_id(elsewhere), task_name="t", queue="q")
    consumer = broker.consumer("q", "w:0")
    await consumer.ensure_groups()
    await broker.enqueue(task)
    [entry] = await consumer.read(10)
    lease = TaskLease(entry[0], entry[1], WORKERS_GROUP, "w:0")
    session = AgentSession("handed-over")
    running = set_running(RunningTask(task.agent_id, "t", lease=lease))
    try:
        await session.add_items([message("user", "Hello!")])  # held: applied
        # The lease expired (a freeze) and another worker took the task over.
        await get_redis().xclaim(entry[0], WORKERS_GROUP, "w:1", 0, [entry[1]])
        with caplog.at_level("WARNING", logger="agentexec.eventlog"):
            await session.add_items([message("assistant", "late")])
            assert await session.pop_item() is None
            await session.clear_session()
    finally:
        reset_running(running)
    discarded = [r for r in caplog.records if "lost the task to another one" in r.getMessage()]
    assert len(discarded) == 3
    assert str(task.agent_id) in discarded[0].getMessage()
    assert await session.get_items() == [message("user", "Hello!")]
    assert [type(e) for e in await session_events("handed-over")] == [events.SessionItemsAdded]
    # Outside a handler, changes are unfenced as before.
    await session.add_items([message("assistant", "Hi!")])
    assert await session.count() == 2


async def test_replay_shows_the_session_history(projector: Projector, engine: Engine) -> None:
    session = AgentSession("audited")
    await session.add_items([message("user", "Hello"), message("assistant", "Hi")])
    await session.pop_item()
    await projector.catch_up()
    await session.clear_session()  # only in the Redis log so far

    history = list(replay(engine, agent_id=session_agent_id("audited")))
    assert [r.type for r in history] == [
        "session.items_added",
        "session.item_popped",
        "session.cleared",
    ]
    assert [r.source for r in history] == ["archive", "archive", "log"]
    popped = history[1].event
    assert isinstance(popped, events.SessionItemPopped)
    assert popped.index == 1 and bytes(popped.item) == b'{"role":"assistant","content":"Hi"}'
    assert "session.item_popped" in as_text(history[1]) and "item 1 popped" in as_text(history[1])

    env = {
        **os.environ,
        "AGENTEXEC_REDIS_URL": ax.CONF.redis_url,
        "AGENTEXEC_KEY_PREFIX": ax.CONF.key_prefix,
        "AGENTEXEC_PARTITIONS": str(ax.CONF.partitions),
        "AGENTEXEC_DATABASE_URL": database_url(engine),
    }
    command = [sys.executable, "-m", "agentexec.cli", "--log-level", "WARNING", "replay"]
    lines = subprocess.run(
        [*command, "--session", "audited", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    shown = [json.loads(line) for line in lines]
    assert [e["type"] for e in shown] == [r.type for r in history]
    assert shown[0]["items"][1] == message("assistant", "Hi")


async def test_every_reader_of_the_log_takes_session_events(redis_conf: str) -> None:
    """The monitor's board and the feeds' frames take a session event without choking; a
    feed does not carry the items."""
    from agentexec.api.messages import Delivery
    from agentexec.monitor import Board

    session = AgentSession("readers")
    await session.add_items([message("user", "secret-ish")])
    entries = await log_entries()
    recorded = [Recorded.from_entry(i, f) for i, f in entries]
    board = Board()
    for r in recorded:
        board.apply(r)
    assert board.rows == {}
    frame = Delivery.of(recorded[-1]).frame
    assert b"session.items_added" in frame and b"secret-ish" not in frame
    assert sessions.session_agent_id("readers") == recorded[-1].event.agent_id


async def test_sessions_that_redis_lost_are_put_back_from_the_table(
    projector: Projector, engine: Engine
) -> None:
    kept = AgentSession("kept")
    await kept.add_items([message("user", "1"), message("assistant", "2")])
    await kept.pop_item()
    await kept.add_items([message("assistant", "2'")])
    await AgentSession("rewritten").add_items([message("user", "old")])
    await projector.catch_up()
    await get_redis().flushall()

    # Written after the loss, before the projector noticed it: the new history stands.
    await AgentSession("rewritten").add_items([message("user", "new")])
    await Projector(projector.engine, lease_seconds=5).catch_up()

    assert await kept.get_items() == [message("user", "1"), message("assistant", "2'")]
    assert await AgentSession("rewritten").get_items() == [message("user", "new")]
    assert table_items(engine, "rewritten") == [message("user", "new")]
    # The kept session goes on from its version before the loss.
    await kept.add_items([message("user", "3")])
    log = await session_events("kept")
    assert [e.version for e in log] == [4]  # type: ignore[union-attr]
    await projector.catch_up()
    assert table_items(engine, "kept") == await kept.get_items()
