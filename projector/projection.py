"""Projection: how a batch of events changes the read model.

`apply` runs inside the batch's transaction. Per batch it issues one statement per kind: the
archive rows, one read of the affected activity rows, one upsert of those rows, and the log
rows. The new state of each activity row is folded in Python from its current state and the
batch's events, so the rules live here and not in dialect-specific SQL:

- terminal statuses (COMPLETE, ERROR, CANCELED) are final: later events are logged but do
  not change the activity row;
- events without a status (tracker events) never create an activity row;
- `attempts` counts `task.started` events; `updated_at` is the latest event time applied;
- agent events (turns, tool calls, handoffs, usage) are logged as RUNNING entries, and a
  running task's latest message is what its agent did last;
- every event is archived under its stream id, which is the table's key: an event cannot
  be applied twice (the checkpoint keeps applied events out of batches in the first place).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Table, select

from agentexec.activity.models import Activity, ActivityLog, activity_row_id
from agentexec.events import (
    TERMINAL,
    AgentEvent,
    AnyEvent,
    Status,
    TaskCanceled,
    TaskCompleted,
    TaskFailed,
    TaskQueued,
    TaskStarted,
)

from . import bulk
from .archive import Archive
from .checkpoints import parse_id

__all__ = ["Applied", "apply"]

_activity: Table = Activity.__table__  # type: ignore[assignment]
_log: Table = ActivityLog.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class Applied:
    """One decoded event with its stream id and the JSON it was decoded from."""

    event_id: str
    event: AnyEvent
    data: bytes
    ts: datetime = field(init=False, repr=False)
    """The event's time as naive UTC, the way the tables store it."""
    position: tuple[int, int] = field(init=False, repr=False)
    """The stream id as (milliseconds, sequence)."""

    def __post_init__(self) -> None:
        ts = self.event.ts
        if ts.tzinfo is not None:
            ts = ts.astimezone(UTC).replace(tzinfo=None)
        object.__setattr__(self, "ts", ts)
        object.__setattr__(self, "position", parse_id(self.event_id))


def apply(conn: Connection, batch: Sequence[Applied], *, archive: bool = True) -> None:
    """Apply `batch` (in stream order) to the read model; `archive=False` when replaying the
    archive itself. The events must be new to the read model (the checkpoint says so, or
    `Archive.unarchived` picked them): an event applied before raises IntegrityError on its archive
    row."""
    if not batch:
        return
    if archive:
        Archive(conn).insert(batch)
    agents = {a.event.agent_id for a in batch}
    current = _load(conn, agents)
    row_ids = {agent_id: activity_row_id(agent_id) for agent_id in agents}
    # COPY and the JSON recordset bypass the column type: store the status as its name here.
    rows = [{**r, "status": Status(r["status"]).name} for r in _fold(current, batch, row_ids)]
    bulk.upsert(conn, _activity, rows, "agent_id", set(current))
    logs = [
        _log_row(a, row_ids)
        for a in batch
        if type(a.event).status is not None or isinstance(a.event, AgentEvent)
    ]
    bulk.insert_new(conn, _log, logs)


def _load(conn: Connection, agent_ids: Iterable[UUID]) -> dict[UUID, dict[str, Any]]:
    ids = list(agent_ids)
    found: dict[UUID, dict[str, Any]] = {}
    for start in range(0, len(ids), 1000):
        query = select(_activity).where(_activity.c.agent_id.in_(ids[start : start + 1000]))
        for row in conn.execute(query).mappings():
            found[row["agent_id"]] = dict(row)
    return found


def _fold(
    current: dict[UUID, dict[str, Any]], batch: Sequence[Applied], row_ids: dict[UUID, UUID]
) -> list[dict[str, Any]]:
    changed: dict[UUID, dict[str, Any]] = {}
    for applied in batch:
        event = applied.event
        row = changed.get(event.agent_id)
        if row is None:
            existing = current.get(event.agent_id)
            if existing is None and type(event).status is None:
                continue  # events without a status (trackers') never create an activity
            row = dict(existing) if existing is not None else _new_row(applied, row_ids)
        if _evolve(row, applied):
            changed[event.agent_id] = row
    return list(changed.values())


def _new_row(applied: Applied, row_ids: dict[UUID, UUID]) -> dict[str, Any]:
    event = applied.event
    ts = applied.ts
    return {
        "id": row_ids[event.agent_id],
        "agent_id": event.agent_id,
        "agent_type": event.task_name,
        "status": None,
        "latest_message": None,
        "latest_percentage": None,
        "attempts": 0,
        "error": None,
        "parent_id": None,
        "queue": None,
        "priority": None,
        "metadata": None,
        "created_at": ts,
        "updated_at": ts,
        "started_at": None,
        "finished_at": None,
        "last_event_id": applied.event_id,
    }


def _evolve(row: dict[str, Any], applied: Applied) -> bool:
    """Change `row` by one event; False when the event leaves it as it was."""
    event = applied.event
    if isinstance(event, AgentEvent):
        # What a running agent does now (a turn, a tool call, a handoff) becomes the task's
        # latest message, so a list shows it; the status does not change.
        if row["status"] != Status.RUNNING or not event.message:
            return False
        row["latest_message"] = event.message
        row["last_event_id"] = applied.event_id
        row["updated_at"] = max(row["updated_at"], applied.ts)
        return True
    status = type(event).status
    if row["status"] in TERMINAL or (status is None and row["status"] is not None):
        return False
    ts = applied.ts
    row["status"] = status or Status.QUEUED
    row["last_event_id"] = applied.event_id
    row["updated_at"] = max(row["updated_at"], ts)
    if event.task_name and not row["agent_type"]:
        row["agent_type"] = event.task_name
    if event.message:
        row["latest_message"] = event.message
    if event.percentage is not None:
        row["latest_percentage"] = event.percentage
    if event.metadata is not None:
        row["metadata"] = {**(row["metadata"] or {}), **event.metadata}
    if isinstance(event, TaskQueued):
        row["queue"] = event.queue
        row["priority"] = event.priority.value
        row["parent_id"] = event.parent_id
    elif isinstance(event, TaskStarted):
        row["attempts"] += 1
        row["started_at"] = ts
        row["finished_at"] = None
    elif isinstance(event, TaskCompleted | TaskFailed | TaskCanceled):
        row["finished_at"] = ts
        if isinstance(event, TaskFailed):
            row["error"] = event.error
    return True


def _log_row(applied: Applied, row_ids: dict[UUID, UUID]) -> dict[str, Any]:
    event = applied.event
    return {
        "activity_id": row_ids[event.agent_id],
        "event_id": applied.event_id,
        "message": event.message,
        # An agent event is logged under the status of the task it reports on: RUNNING.
        "status": (type(event).status or Status.RUNNING).name,
        "percentage": event.percentage,
        "created_at": applied.ts,
    }
