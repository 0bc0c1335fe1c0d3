"""New log ids below the checkpoint are never ignored (issue 12, item 7).

The log's old ids come from a clock a day ahead of this one (or, the same thing, Redis comes
back empty on a server whose clock is behind): every id Redis gives from now on is below the
projector's checkpoint until the projector lifts the log above it.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from sqlalchemy import Engine, select

import agentexec as ax
from agentexec import events
from agentexec.activity.models import Activity, ArchivedEvent
from agentexec.connection import close_redis, get_sync_redis
from agentexec.events import Event
from agentexec.projector import Projector, checkpoints
from agentexec.projector.rebuild import rebuild
from agentexec.streams import Keys

from .workload import append_all, checkpoint_position, lifecycle, snapshot, wait_until

DAY_MS = 86_400_000


def tasks(n: int, first: int) -> tuple[list[uuid.UUID], list[Event]]:
    ids = [uuid.UUID(int=first + i, version=4) for i in range(n)]
    return ids, [e for aid in ids for e in lifecycle(aid, steps=1)]


def append_ahead(evs: list[Event]) -> str:
    """Append with ids from a clock a day ahead; returns the last id."""
    client = get_sync_redis()
    key = Keys(ax.CONF.key_prefix).events
    ms = int(time.time() * 1000) + DAY_MS
    for seq, event in enumerate(evs):
        client.xadd(key, events.entry(event), id=f"{ms}-{seq}")
    return f"{ms}-{len(evs) - 1}"


def agents(engine: Engine) -> set[uuid.UUID]:
    with engine.connect() as conn:
        return set(conn.execute(select(Activity.agent_id)).scalars())


def archived_ids(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(ArchivedEvent.stream_ms, ArchivedEvent.stream_seq).order_by(
                ArchivedEvent.stream_ms, ArchivedEvent.stream_seq
            )
        )
        return [f"{ms}-{seq}" for ms, seq in rows]


async def test_redis_back_empty_with_a_clock_behind_loses_nothing(
    engine: Engine, projector: Projector, caplog: pytest.LogCaptureFixture
) -> None:
    keys = Keys(ax.CONF.key_prefix)
    client = get_sync_redis()
    old, old_events = tasks(5, 1)
    floor = append_ahead(old_events)
    await projector.catch_up()
    assert checkpoint_position(engine) == floor

    # Redis loses the log; events are appended before the projector comes back, with ids
    # below its checkpoint.
    client.delete(keys.events, keys.projector_lease)
    early, early_events = tasks(5, 100)
    below = append_all(early_events)
    assert checkpoints.after(floor, below)
    await projector.catch_up()
    assert "arrived below the checkpoint" in caplog.text
    assert "raised it to the checkpoint" in caplog.text
    # Appends from now on get ids above the checkpoint.
    late, late_events = tasks(5, 200)
    last = append_all(late_events)
    assert checkpoints.after(last, floor)
    await projector.catch_up()

    assert agents(engine) == {*old, *early, *late}
    assert checkpoint_position(engine) == last
    # One order: the archive in id order is the order events were applied in.
    ids = archived_ids(engine)
    assert len(ids) == len(old_events) + len(early_events) + len(late_events)
    assert all(checkpoints.after(i, floor) for i in ids[len(old_events) :])
    # The log holds each event once: the originals below the checkpoint were replaced.
    assert not client.xrange(keys.events, "-", below)
    live = snapshot(engine, checkpoint=True)
    await rebuild(engine)
    assert snapshot(engine, checkpoint=True) == live
    await close_redis()


async def test_entries_below_the_checkpoint_met_in_a_batch_are_lifted(
    engine: Engine, redis_conf: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The log is replaced under a running projector that keeps its lease (a snapshot
    restored, say): the group delivers entries below the checkpoint, which are new."""
    ax.CONF.block_ms = 100
    keys = Keys(ax.CONF.key_prefix)
    client = get_sync_redis()
    projector = Projector(engine, lease_seconds=5)
    stop = asyncio.Event()
    run = asyncio.create_task(projector.run(stop))
    try:
        old, old_events = tasks(4, 1)
        floor = append_ahead(old_events)
        await wait_until(lambda: checkpoint_position(engine) == floor)
        new, new_events = tasks(4, 100)
        pipe = client.pipeline(transaction=True)
        pipe.delete(keys.events)
        pipe.xgroup_create(keys.events, "projector", id="0", mkstream=True)
        for event in new_events:
            pipe.xadd(keys.events, events.entry(event))
        pipe.execute()
        await wait_until(lambda: agents(engine) == {*old, *new})
        assert "arrived below the checkpoint" in caplog.text
        assert all(checkpoints.after(i, floor) for i in archived_ids(engine)[len(old_events) :])
    finally:
        stop.set()
        await run
    live = snapshot(engine, checkpoint=True)
    await rebuild(engine)
    assert snapshot(engine, checkpoint=True) == live
    await close_redis()
