"""Helpers of the read-model suite: realistic event traffic, and table snapshots to compare."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from sqlalchemy import Engine, select

from agentexec import events
from agentexec.activity.models import Base
from agentexec.connection import get_sync_redis
from agentexec.events import (
    Event,
    TaskCompleted,
    TaskFailed,
    TaskProgress,
    TaskQueued,
    TaskStarted,
)
from agentexec.runtime import current
from tests.support.waiting import scaled


def lifecycle(agent_id: uuid.UUID, task_name: str = "research", steps: int = 3) -> list[Event]:
    """The events of one task: queued, started, progress, then completed or failed."""
    out: list[Event] = [
        TaskQueued(agent_id=agent_id, task_name=task_name, queue="q", message="Waiting to start.")
    ]
    out.append(TaskStarted(agent_id=agent_id, task_name=task_name, message="Task started."))
    for i in range(steps):
        pct = (i + 1) * 100 // (steps + 1)
        out.append(
            TaskProgress(agent_id=agent_id, task_name="", message=f"step {i}", percentage=pct)
        )
    if agent_id.int % 5 == 0:
        out.append(TaskFailed(agent_id=agent_id, task_name=task_name, message="failed", error="x"))
    else:
        out.append(
            TaskCompleted(agent_id=agent_id, task_name=task_name, message="done", percentage=100)
        )
    return out


def traffic(n_events: int, *, seed: int = 1) -> list[Event]:
    """About `n_events` events of interleaved tasks, in a plausible log order."""
    rng = random.Random(seed)
    streams: list[list[Event]] = []
    total = 0
    while total < n_events:
        life = lifecycle(uuid.UUID(int=rng.getrandbits(128), version=4))
        streams.append(life)
        total += len(life)
    out: list[Event] = []
    live: list[list[Event]] = []
    pending = list(reversed(streams))
    while pending or live:
        while pending and len(live) < 50:
            live.append(pending.pop())
        life = rng.choice(live)
        out.append(life.pop(0))
        if not life:
            live.remove(life)
    return out


def foreign_entry(event: Event) -> dict[bytes, bytes]:
    """The entry of `event` as an older version of agentexec, or another writer, may have
    appended it: encoded as it is, without `events.encode`'s bounding and escaping, so that a
    NUL reaches the projector."""
    return {events.EVENT_FIELD: msgspec.json.encode(event)}


def append_all(evs: list[Event], chunk: int = 2000, *, foreign: bool = False) -> str:
    """XADD the events to the namespace's log (`foreign_entry`s when `foreign`); returns the
    last entry id. With several partitions: partition 0's log (the others stay empty)."""
    client = get_sync_redis()
    key = current().keys.events
    last = ""
    for start in range(0, len(evs), chunk):
        pipe = client.pipeline(transaction=False)
        for event in evs[start : start + chunk]:
            pipe.xadd(key, foreign_entry(event) if foreign else events.entry(event))
        last = pipe.execute()[-1].decode()
    return last


def snapshot(engine: Engine, *, checkpoint: bool = False) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the read model, in a comparable form. Log rows are compared without
    their serial id (PostgreSQL sequences are not transactional: a rolled-back batch leaves
    gaps); `event_id` identifies them."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name.endswith("checkpoints") and not checkpoint:
                continue
            cols = [
                c for c in table.c if not (table.name.endswith("activity_log") and c.name == "id")
            ]
            rows = conn.execute(select(*cols)).all()
            tables[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return tables


def checkpoint_position(engine: Engine) -> str | None:
    """The checkpoint of the log `append_all` writes (partition 0's)."""
    from agentexec.activity.models import Checkpoint

    with engine.connect() as conn:
        return conn.execute(
            select(Checkpoint.position).where(Checkpoint.name == current().keys.events)
        ).scalar()


async def wait_until(condition: Callable[[], object], timeout: float = 30.0) -> None:
    """Wait for `condition()` (run in a thread: it may query SQL) to hold; `timeout` is
    seconds on a quiet machine, stretched by load (tests/support/waiting.py)."""
    async with asyncio.timeout(scaled(timeout)):
        # The database has no change notification to wait on: poll it.
        while not await asyncio.to_thread(condition):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
