"""Restore: what the projector puts back when Redis comes back without its data.

Redis holds the only copy of a queued task's entry and of a finished task's result; the SQL
archive holds every event the projector applied. When the event log's consumer group is gone
although the checkpoint says the projector applied part of the log, Redis lost its data
(FLUSHALL, a new server, a restore from an old snapshot). The projector then marks the
namespace (`Keys.restore_due`), catches up with what was appended since, and restores:

- every task the read model shows QUEUED is queued again from its archived `task.queued`
  event, with the same agent id, context and attempt count (a retry waiting for its backoff
  keeps its due time, a delayed task its time to run), through the enqueue script;
- every task the read model shows RUNNING is queued once more, due after a lease: its entry
  is gone, so if its worker dies nothing else would ever run it again. A worker still running
  such a task holds its held key (`Keys.held`, renewed with its lease), and a copy that comes
  due meanwhile waits another lease; once the task has ended, the copy is dropped;
- the result of every task that ended within `AGENTEXEC_RESULT_TTL` is stored again (unless
  one exists) and published, so `get_result` still answers, waiting callers included;
- the live items of every conversation session (`ax.AgentSession`) are put back from the
  `session_items` table, at the version of its latest archived change, unless the session
  was written since the loss (its new items then stand, see docs/sessions.md).

The mark is removed only when all of it is done: a projector that dies meanwhile leaves it to
the next owner, and each task is queued again once per loss whatever the number of passes.
With several partitions (`AGENTEXEC_PARTITIONS`), each has its own mark and is restored on its
own, with the tasks, results and sessions whose agent ids live in it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

import msgspec
from sqlalchemy import Connection, Engine, Table, inspect, select

from agentexec.activity.models import Activity, SessionItem
from agentexec.config import Settings
from agentexec.eventlog import Recorded
from agentexec.events import (
    TERMINAL,
    AnyEvent,
    Ending,
    SessionCleared,
    SessionEvent,
    SessionItemPopped,
    SessionItemsAdded,
    Status,
    TaskCanceled,
    TaskCompleted,
    TaskFailed,
    TaskQueued,
    TaskRetried,
    TaskStarted,
)
from agentexec.partitions import Partitions
from agentexec.results import Outcome, outcome_encoder
from agentexec.runtime import Runtime
from agentexec.sessions import session_agent_id

from .archive import Archive
from .checkpoints import parse_id

__all__ = ["Restorable", "restorable", "restore"]

logger = logging.getLogger(__name__)

_activity: Table = Activity.__table__  # type: ignore[assignment]
_session_items: Table = SessionItem.__table__  # type: ignore[assignment]

REQUEUED_MESSAGE = "Queued again: Redis lost the queued task."


@dataclass(frozen=True)
class Restorable:
    """What the archive allows to put back into Redis."""

    queued: list[tuple[TaskQueued, datetime | None]]
    """Tasks to queue again, with the time each is due (None: now)."""
    running: list[TaskQueued]
    """Tasks that were running, to queue again in case their worker dies."""
    results: list[tuple[UUID, bytes, int]]
    """Agent id, stored outcome and seconds left to live of each result to store again."""
    sessions: list[tuple[UUID, int, list[bytes]]] = field(default_factory=list)
    """Agent id, version and items (JSON, oldest first) of each session to put back."""


def restorable(
    engine: Engine,
    lost_at: str,
    settings: Settings,
    now: datetime | None = None,
    *,
    partition: int = 0,
    partitions: Partitions | None = None,
) -> Restorable:
    """Read from the read model and the archive what a Redis that lost `partition`'s data
    needs back.

    `lost_at` is the last entry of the partition's log that was lost: a task queued, retried
    or started after it has its entry in the new Redis, and is left alone. With
    `partitions` None, every agent is in the partition."""
    lost = parse_id(lost_at)

    def mine(agent_id: UUID) -> bool:
        return partitions is None or partitions.of(agent_id) == partition

    now = now or datetime.now(UTC)
    cutoff = (now - timedelta(seconds=settings.result_ttl)).replace(tzinfo=None)
    with engine.connect() as conn:
        active = {
            (row.agent_id): (row.status, row.attempts)
            for row in conn.execute(
                select(_activity.c.agent_id, _activity.c.status, _activity.c.attempts).where(
                    _activity.c.status.in_([Status.QUEUED, Status.RUNNING]),
                    _activity.c.queue.is_not(None),
                )
            )
            if mine(row.agent_id)
        }
        ended = [
            agent_id
            for agent_id in conn.execute(
                select(_activity.c.agent_id).where(
                    _activity.c.status.in_(list(TERMINAL)), _activity.c.updated_at >= cutoff
                )
            ).scalars()
            if mine(agent_id)
        ]
        queued, running = [], []
        for agent_id, history in _histories(conn, list(active)).items():
            status, attempts = active[agent_id]
            moves = [r.position for r in history if isinstance(r.event, _ENTRY_EVENTS)]
            if not any(isinstance(r.event, TaskQueued) for r in history) or max(moves) > lost:
                continue
            if status == Status.QUEUED:
                queued.append(_requeued(history, attempts, now))
            else:
                running.append(_requeued(history, attempts, now)[0])
        results = []
        for agent_id, history in _histories(conn, ended).items():
            end = next((r.event for r in reversed(history) if _is_terminal(r.event)), None)
            if end is None:
                continue
            left = settings.result_ttl - int((now - end.ts).total_seconds())
            if left > 0:
                results.append((agent_id, outcome_encoder.encode(_outcome(end)), left))
        sessions = [s for s in _sessions(conn) if mine(s[0])]
    return Restorable(queued, running, results, sessions)


async def restore(
    engine: Engine, runtime: Runtime, owner: str, lost_at: str, partition: int = 0
) -> Restorable:
    """Queue the lost tasks of `partition` again and store its lost results (see the
    module's docstring). `lost_at` (the partition's checkpoint when the loss was noticed)
    names this restore: doing it again queues nothing twice."""
    found = await asyncio.to_thread(
        functools.partial(
            restorable,
            engine,
            lost_at,
            runtime.settings,
            partition=partition,
            partitions=runtime.partitions,
        )
    )
    broker = runtime.broker
    await asyncio.gather(
        *(
            broker.enqueue(
                event,
                due=due,
                dedup=f"key:restore:{lost_at}:{event.agent_id}",
                what=f"projector {owner}: queuing {event.task_name!r} (agent {event.agent_id}) "
                "again",
                consequence="It stays QUEUED until the next projector restores it.",
            )
            for event, due in found.queued
        )
    )
    due_ms = int((time.time() + runtime.settings.lease_seconds) * 1000)
    await asyncio.gather(
        *(
            broker.requeue_held(event, f"key:restore:{lost_at}:{event.agent_id}", due_ms)
            for event in found.running
        )
    )
    # Waiters subscribed before the result was back are woken as a finish does.
    await broker.restore_results(found.results)
    await asyncio.gather(
        *(broker.restore_session(key, version, items) for key, version, items in found.sessions)
    )
    return found


def _sessions(conn: Connection) -> list[tuple[UUID, int, list[bytes]]]:
    """Each session of the table: its agent id, the version of its latest archived change
    (its item count when the archive was pruned below it) and its items."""
    if not inspect(conn).has_table(_session_items.name):
        return []  # a database not migrated to agentexec_0003 yet holds no sessions
    items: dict[UUID, list[bytes]] = {}
    query = select(_session_items.c.session_id, _session_items.c.item).order_by(
        _session_items.c.session_id, _session_items.c.position
    )
    for row in conn.execute(query):
        items.setdefault(session_agent_id(row.session_id), []).append(msgspec.json.encode(row.item))
    versions: dict[UUID, int] = {}
    kinds = (SessionItemsAdded, SessionItemPopped, SessionCleared)
    for page in Archive(conn, partition=None).read_agents(list(items), kinds):
        for recorded in page:
            event = recorded.event
            if isinstance(event, SessionEvent):
                versions[event.agent_id] = max(versions.get(event.agent_id, 0), event.version)
    return [(key, versions.get(key, len(found)), found) for key, found in items.items()]


_ENTRY_EVENTS = (TaskQueued, TaskRetried, TaskStarted)
"""Events that go with a task's entry being created or moved in Redis."""


def _histories(conn: Connection, agent_ids: list[UUID]) -> dict[UUID, list[Recorded]]:
    """The archived events of `agent_ids` that restoring needs, in log order."""
    out: dict[UUID, list[Recorded]] = {}
    kinds = (*_ENTRY_EVENTS, TaskCompleted, TaskFailed, TaskCanceled)
    for page in Archive(conn, partition=None).read_agents(agent_ids, kinds):
        for recorded in page:
            out.setdefault(recorded.event.agent_id, []).append(recorded)
    return out


def _requeued(
    history: list[Recorded], attempts: int, now: datetime
) -> tuple[TaskQueued, datetime | None]:
    queued = next(r.event for r in reversed(history) if isinstance(r.event, TaskQueued))
    due = queued.not_before
    last = history[-1].event
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
        return Outcome(
            Ending.COMPLETE, event.task_name, result=event.result, result_type=event.result_type
        )
    if isinstance(event, TaskCanceled):
        return Outcome(Ending.CANCELED, event.task_name, error="canceled")
    assert isinstance(event, TaskFailed)
    return Outcome(Ending.ERROR, event.task_name, error=event.error, attempts=event.attempt)
