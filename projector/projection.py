"""Projection: how a batch of events changes the read model.

`apply` runs inside the batch's transaction. Per batch it issues one statement per kind: the
archive rows, one read of the affected activity rows, one upsert of those rows, and the log
rows. The new state of each activity row is folded in Python from its current state and the
batch's events by `agentexec.activity.state.evolve` (the rules live there, not in
dialect-specific SQL); the counts by task name and status follow the rows' changes
(`agentexec.activity.counts`). Besides:

- status events and agent events (turns, tool calls, handoffs, usage) are logged, agent
  events as RUNNING entries;
- session events (`session.*`) maintain the session items (`agentexec.projector.sessions`);
  they make no activity row;
- every event is archived under its stream id, which is the table's key: an event cannot
  be applied twice (the checkpoint keeps applied events out of batches in the first place).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import Connection, Table, select

from agentexec.activity import counts
from agentexec.activity.counts import Deltas
from agentexec.activity.models import Activity, ActivityLog, activity_row_id
from agentexec.activity.state import ActivityState, Attempt, Transition, evolve
from agentexec.eventlog import Recorded
from agentexec.events import AgentEvent, Status

from . import bulk
from .archive import Archive
from .sessions import apply as apply_sessions

__all__ = ["Transition", "apply"]

_activity: Table = Activity.__table__  # type: ignore[assignment]
_log: Table = ActivityLog.__table__  # type: ignore[assignment]
_History = tuple[Attempt, ...]


def apply(
    conn: Connection,
    batch: Sequence[Recorded],
    *,
    archive: bool = True,
    partition: int = 0,
    transitions: list[Transition] | None = None,
) -> None:
    """Apply `batch` (in stream order) to the read model; `archive=False` when replaying the
    archive itself; else the events are archived in `partition` (of the log they were read
    from). The events must be new to the read model (the checkpoint says so, or
    `Archive.unarchived` picked them): an event applied before raises IntegrityError on its archive
    row. Each change of an activity is added to `transitions` when given (for metrics, once
    the transaction commits)."""
    if not batch:
        return
    if archive:
        Archive(conn, partition=partition).insert(batch)
    agents = {a.event.agent_id for a in batch}
    current = _load(conn, agents)
    row_ids = {agent_id: activity_row_id(agent_id) for agent_id in agents}
    changed = _fold(current, batch, transitions)
    rows = [_row(state, row_ids[state.agent_id]) for state in changed]
    bulk.upsert(conn, _activity, rows, "agent_id", set(current))
    counts.add(conn, _count_changes(current, changed))
    logs = [
        _log_row(a, row_ids)
        for a in batch
        if type(a.event).status is not None or isinstance(a.event, AgentEvent)
    ]
    bulk.insert_new(conn, _log, logs)
    apply_sessions(conn, batch)


def _load(conn: Connection, agent_ids: Iterable[UUID]) -> dict[UUID, ActivityState]:
    ids = list(agent_ids)
    found: dict[UUID, ActivityState] = {}
    for start in range(0, len(ids), 1000):
        query = select(_activity).where(_activity.c.agent_id.in_(ids[start : start + 1000]))
        for row in conn.execute(query).mappings():
            found[row["agent_id"]] = _state(row)
    return found


def _count_changes(current: dict[UUID, ActivityState], changed: list[ActivityState]) -> Deltas:
    deltas: Deltas = Counter()
    for state in changed:
        before = current.get(state.agent_id)
        if before is not None:
            deltas[before.task_name, before.status.name] -= 1
        deltas[state.task_name, state.status.name] += 1
    return deltas


def _fold(
    current: dict[UUID, ActivityState],
    batch: Sequence[Recorded],
    transitions: list[Transition] | None,
) -> list[ActivityState]:
    changed: dict[UUID, ActivityState] = {}
    for recorded in batch:
        agent_id = recorded.event.agent_id
        state = changed.get(agent_id) or current.get(agent_id)
        after = evolve(state, recorded)
        if after is not state and after is not None:
            changed[agent_id] = after
            if transitions is not None:
                transitions.append((state, after))
    return list(changed.values())


def _state(row: Any) -> ActivityState:
    return ActivityState(
        agent_id=row["agent_id"],
        task_name=row["agent_type"],
        status=Status(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_event_id=row["last_event_id"],
        message=row["latest_message"],
        percentage=row["latest_percentage"],
        attempts=row["attempts"],
        error=row["error"],
        parent_id=row["parent_id"],
        queue=row["queue"],
        priority=row["priority"],
        metadata=row["metadata"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        queued_at=row["queued_at"],
        due_at=row["due_at"],
        worker=row["worker"],
        retries=row["retries"] or 0,
        queue_wait_seconds=row["queue_wait_seconds"],
        run_seconds=row["run_seconds"],
        attempt_history=msgspec.convert(row["attempt_history"] or (), _History),
    )


def _row(state: ActivityState, row_id: UUID) -> dict[str, Any]:
    return {
        "id": row_id,
        "agent_id": state.agent_id,
        "agent_type": state.task_name,
        # COPY and the JSON recordset bypass the column type: the status is stored by name.
        "status": state.status.name,
        "latest_message": state.message,
        "latest_percentage": state.percentage,
        "attempts": state.attempts,
        "error": state.error,
        "parent_id": state.parent_id,
        "queue": state.queue,
        "priority": state.priority,
        "metadata": state.metadata,
        "created_at": state.created_at,
        "updated_at": state.updated_at,
        "started_at": state.started_at,
        "finished_at": state.finished_at,
        "queued_at": state.queued_at,
        "due_at": state.due_at,
        "worker": state.worker,
        "retries": state.retries,
        "queue_wait_seconds": state.queue_wait_seconds,
        "run_seconds": state.run_seconds,
        "attempt_history": msgspec.to_builtins(state.attempt_history) or None,
        "last_event_id": state.last_event_id,
    }


def _log_row(recorded: Recorded, row_ids: dict[UUID, UUID]) -> dict[str, Any]:
    event = recorded.event
    return {
        "activity_id": row_ids[event.agent_id],
        "event_id": recorded.event_id,
        "message": event.message,
        # An agent event is logged under the status of the task it reports on: RUNNING.
        "status": (type(event).status or Status.RUNNING).name,
        "percentage": event.percentage,
        "created_at": recorded.ts,
    }
