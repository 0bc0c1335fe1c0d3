"""Projection: how a batch of events changes the read model.

`apply` runs inside the batch's transaction. Per batch it issues one statement per kind: the
archive rows, one read of the affected activity rows, one upsert of those rows, and the log
rows. The new state of each activity row is folded in Python from its current state and the
batch's events, so the rules live here and not in dialect-specific SQL:

- terminal statuses (COMPLETE, ERROR, CANCELED) are final: later events are logged but do
  not change the activity row;
- `attempts` counts `task.started` events; `updated_at` is the latest event time applied;
- rows are keyed by the event's stream id, and inserts skip rows already present, so
  applying a batch twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from agentexec.activity.models import Activity, ActivityLog, ArchivedEvent, activity_row_id
from agentexec.events import (
    TERMINAL,
    AnyEvent,
    Status,
    TaskCanceled,
    TaskCompleted,
    TaskFailed,
    TaskQueued,
    TaskStarted,
)
from sqlalchemy import Connection, Insert, Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite

from .checkpoints import parse_id

__all__ = ["Applied", "apply", "chunks"]

_activity: Table = Activity.__table__  # type: ignore[assignment]
_log: Table = ActivityLog.__table__  # type: ignore[assignment]
_archive: Table = ArchivedEvent.__table__  # type: ignore[assignment]

_MAX_PARAMS = 30_000
"""Bound parameters per statement: below SQLite's 32,766 and PostgreSQL's 65,535."""


@dataclass(frozen=True, slots=True)
class Applied:
    """One decoded event with its stream id and the JSON it was decoded from."""

    event_id: str
    event: AnyEvent
    data: bytes


def apply(conn: Connection, batch: Sequence[Applied], *, archive: bool = True) -> None:
    """Apply `batch` (in stream order) to the read model; `archive=False` when replaying the
    archive itself."""
    if not batch:
        return
    if archive:
        _insert_ignoring_existing(conn, _archive, [_archive_row(a) for a in batch])
    rows = _fold(_load(conn, {a.event.agent_id for a in batch}), batch)
    if rows:
        _upsert_activities(conn, rows)
    logs = [_log_row(a) for a in batch if type(a.event).status is not None]
    _insert_ignoring_existing(conn, _log, logs)


def chunks(rows: Sequence[dict[str, Any]]) -> Iterator[Sequence[dict[str, Any]]]:
    """Split rows into statements that stay below every dialect's parameter limit."""
    if not rows:
        return
    size = max(1, _MAX_PARAMS // max(1, len(rows[0])))
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _load(conn: Connection, agent_ids: Iterable[UUID]) -> dict[UUID, dict[str, Any]]:
    ids = list(agent_ids)
    found: dict[UUID, dict[str, Any]] = {}
    for start in range(0, len(ids), 1000):
        query = select(_activity).where(_activity.c.agent_id.in_(ids[start : start + 1000]))
        for row in conn.execute(query).mappings():
            found[row["agent_id"]] = dict(row)
    return found


def _fold(current: dict[UUID, dict[str, Any]], batch: Sequence[Applied]) -> list[dict[str, Any]]:
    changed: dict[UUID, dict[str, Any]] = {}
    for applied in batch:
        event = applied.event
        row = changed.get(event.agent_id)
        if row is None:
            existing = current.get(event.agent_id)
            row = dict(existing) if existing is not None else _new_row(applied)
        if _evolve(row, applied):
            changed[event.agent_id] = row
    return list(changed.values())


def _new_row(applied: Applied) -> dict[str, Any]:
    event = applied.event
    ts = _naive_utc(event.ts)
    return {
        "id": activity_row_id(event.agent_id),
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
    status = type(event).status
    if row["status"] in TERMINAL or (status is None and row["status"] is not None):
        return False
    ts = _naive_utc(event.ts)
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


def _upsert_activities(conn: Connection, rows: list[dict[str, Any]]) -> None:
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(_activity)
        stmt = stmt.on_conflict_do_update(
            index_elements=[_activity.c.agent_id],
            set_={c.name: stmt.excluded[c.name] for c in _activity.c if c.name != "id"},
        )
        for part in chunks(rows):
            conn.execute(stmt, part)
        return
    # Other dialects: the rows read in this transaction say which exist.
    existing = set(_load(conn, (r["agent_id"] for r in rows)))
    new = [r for r in rows if r["agent_id"] not in existing]
    old = [{**r, "_agent_id": r["agent_id"]} for r in rows if r["agent_id"] in existing]
    if new:
        conn.execute(_activity.insert(), new)
    if old:
        values: dict[str, Any] = {c.name: bindparam(c.name) for c in _activity.c if c.name != "id"}
        conn.execute(
            update(_activity).where(_activity.c.agent_id == bindparam("_agent_id")).values(values),
            old,
        )


def _insert_ignoring_existing(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    dialect = conn.dialect.name
    stmt: Insert
    if dialect == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    else:
        # The checkpoint already keeps applied events out of later batches.
        stmt = table.insert()
    for part in chunks(rows):
        conn.execute(stmt, part)


def _archive_row(applied: Applied) -> dict[str, Any]:
    ms, seq = parse_id(applied.event_id)
    event = applied.event
    return {
        "stream_ms": ms,
        "stream_seq": seq,
        "type": type(event).__struct_config__.tag,
        "agent_id": event.agent_id,
        "task_name": event.task_name,
        "ts": _naive_utc(event.ts),
        "data": applied.data.decode(),
    }


def _log_row(applied: Applied) -> dict[str, Any]:
    event = applied.event
    return {
        "activity_id": activity_row_id(event.agent_id),
        "event_id": applied.event_id,
        "message": event.message,
        "status": type(event).status,
        "percentage": event.percentage,
        "created_at": _naive_utc(event.ts),
    }


def _naive_utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        return ts
    return ts.astimezone(UTC).replace(tzinfo=None)
