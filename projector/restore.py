"""Restore: what the projector puts back when Redis comes back without its data.

Redis holds the only copy of a queued task's entry and of a finished task's result; the SQL
archive holds every event the projector applied. When the event log's consumer group is gone
although the checkpoint says the projector applied part of the log, Redis lost its data
(FLUSHALL, a new server, a restore from an old snapshot). The projector then marks the
namespace (`Keys.restore_due`), catches up with what was appended since, and restores:

- every task the read model shows QUEUED is queued again from its archived `task.queued`
  event, with the same agent id, context and attempt count (a retry waiting for its backoff
  keeps its due time, a delayed task its time to run). Queuing goes through the enqueue script
  guarded by the agent id, so a restore that runs twice queues each task once;
- the result of every task that ended within `AGENTEXEC_RESULT_TTL` is stored again (unless
  one exists), so `get_result` still answers.

The mark is removed only when all of it is done: a projector that dies meanwhile leaves it to
the next owner. Tasks RUNNING at the time go on in their workers, which record their outcome.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import Engine, Table, select

from agentexec import events
from agentexec.activity.models import Activity, ArchivedEvent
from agentexec.config import CONF
from agentexec.connection import get_redis
from agentexec.events import (
    TERMINAL,
    AnyEvent,
    Status,
    TaskCanceled,
    TaskCompleted,
    TaskFailed,
    TaskQueued,
    TaskRetried,
)
from agentexec.queue import queue_event
from agentexec.results import Outcome, outcome_encoder
from agentexec.streams import Keys

__all__ = ["Restorable", "restorable", "restore"]

logger = logging.getLogger(__name__)

_activity: Table = Activity.__table__  # type: ignore[assignment]
_archive: Table = ArchivedEvent.__table__  # type: ignore[assignment]

REQUEUED_MESSAGE = "Queued again: Redis lost the queued task."


@dataclass(frozen=True)
class Restorable:
    """What the archive allows to put back into Redis."""

    queued: list[tuple[TaskQueued, datetime | None]]
    """Tasks to queue again, with the time each is due (None: now)."""
    results: list[tuple[UUID, bytes, int]]
    """Agent id, stored outcome and seconds left to live of each result to store again."""


def restorable(engine: Engine, now: datetime | None = None) -> Restorable:
    """Read from the read model and the archive what a Redis that lost its data needs back."""
    now = now or datetime.now(UTC)
    cutoff = (now - timedelta(seconds=CONF.result_ttl)).replace(tzinfo=None)
    with engine.connect() as conn:
        waiting = {
            row.agent_id: row.attempts
            for row in conn.execute(
                select(_activity.c.agent_id, _activity.c.attempts).where(
                    _activity.c.status == Status.QUEUED, _activity.c.queue.is_not(None)
                )
            )
        }
        ended = list(
            conn.execute(
                select(_activity.c.agent_id).where(
                    _activity.c.status.in_(list(TERMINAL)), _activity.c.updated_at >= cutoff
                )
            ).scalars()
        )
        queued = [
            _requeued(history, waiting[agent_id], now)
            for agent_id, history in _histories(conn, list(waiting)).items()
            if any(isinstance(e, TaskQueued) for e in history)
        ]
        results = []
        for agent_id, history in _histories(conn, ended).items():
            end = next((e for e in reversed(history) if _is_terminal(e)), None)
            if end is None:
                continue
            left = CONF.result_ttl - int((now - end.ts).total_seconds())
            if left > 0:
                results.append((agent_id, outcome_encoder.encode(_outcome(end)), left))
    return Restorable(queued, results)


async def restore(engine: Engine, keys: Keys, owner: str) -> Restorable:
    """Queue the lost tasks again and store the lost results (see the module's docstring)."""
    found = await asyncio.to_thread(restorable, engine)
    for event, due in found.queued:
        await queue_event(
            event,
            due,
            None,
            f"projector {owner}: queuing {event.task_name!r} (agent {event.agent_id}) again",
            "It stays QUEUED until the next projector restores it.",
        )
    client = get_redis()
    async with client.pipeline(transaction=False) as pipe:
        for agent_id, outcome, ttl in found.results:
            pipe.set(keys.result(agent_id), outcome, ex=ttl, nx=True)
            # Waiters subscribed before the result was back: wake them as a finish does.
            pipe.publish(keys.result_channel(agent_id), outcome)
        await pipe.execute()
    return found


def _histories(conn: Any, agent_ids: list[UUID]) -> dict[UUID, list[AnyEvent]]:
    """The archived events of `agent_ids` that restoring needs, in log order."""
    out: dict[UUID, list[AnyEvent]] = {}
    kinds = [
        TaskQueued.__struct_config__.tag,
        TaskRetried.__struct_config__.tag,
        TaskCompleted.__struct_config__.tag,
        TaskFailed.__struct_config__.tag,
        TaskCanceled.__struct_config__.tag,
    ]
    for start in range(0, len(agent_ids), 1000):
        part = agent_ids[start : start + 1000]
        query = (
            select(_archive.c.data)
            .where(_archive.c.agent_id.in_(part), _archive.c.type.in_(kinds))
            .order_by(_archive.c.stream_ms, _archive.c.stream_seq)
        )
        for (data,) in conn.execute(query):
            event = events.decode(data.encode())
            out.setdefault(event.agent_id, []).append(event)
    return out


def _requeued(
    history: list[AnyEvent], attempts: int, now: datetime
) -> tuple[TaskQueued, datetime | None]:
    queued = next(e for e in reversed(history) if isinstance(e, TaskQueued))
    due = queued.not_before
    last = history[-1]
    if isinstance(last, TaskRetried):
        due = last.ts + timedelta(seconds=last.delay)
    event = msgspec.structs.replace(
        queued, attempt=attempts + 1, ts=now, message=REQUEUED_MESSAGE, not_before=due
    )
    return event, due if due is not None and due > now else None


def _is_terminal(event: AnyEvent) -> bool:
    return isinstance(event, TaskCompleted | TaskFailed | TaskCanceled)


def _outcome(event: AnyEvent) -> Outcome:
    # The same outcomes the worker stores (workers/worker.py).
    if isinstance(event, TaskCompleted):
        return Outcome("complete", event.task_name, result=event.result)
    if isinstance(event, TaskCanceled):
        return Outcome("canceled", event.task_name, error="canceled")
    assert isinstance(event, TaskFailed)
    return Outcome("error", event.task_name, error=event.error)
