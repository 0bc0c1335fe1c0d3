"""Replay: the recorded history of one agent, one task name or a time range, for auditing.

Events come from the SQL archive first, then from the Redis log beyond the last archived
entry (what the projector has not committed yet), in log order. Times select by the entry's
stream id, that is when Redis appended the event.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Engine, or_, select, tuple_

from agentexec import events
from agentexec.activity.models import ArchivedEvent
from agentexec.config import CONF
from agentexec.connection import get_sync_redis
from agentexec.errors import EventDecodeError
from agentexec.eventlog import Recorded
from agentexec.positions import ORIGIN, Position
from agentexec.streams import Keys

__all__ = ["as_json", "as_text", "replay"]

_PAGE = 1000


def as_json(recorded: Recorded) -> str:
    """One line of `agentexec replay --json`: the event's JSON with its `id` and `source`."""
    payload: dict[str, Any] = json.loads(events.encode(recorded.event))
    return json.dumps({"id": recorded.event_id, "source": recorded.source.value, **payload})


def as_text(recorded: Recorded) -> str:
    """One line of `agentexec replay`: time, id, type, agent, task, status and message."""
    event = recorded.event
    status = type(event).status
    return "  ".join(
        [
            event.ts.astimezone(UTC).isoformat(timespec="milliseconds"),
            recorded.event_id,
            f"{recorded.type:<14}",
            str(event.agent_id),
            event.task_name or "-",
            status.value if status else "-",
            event.message + (f" ({event.percentage}%)" if event.percentage is not None else ""),
        ]
    )


def replay(
    engine: Engine | None,
    *,
    agent_id: UUID | None = None,
    task_name: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[Recorded]:
    """Yield the matching events in log order, each with the `source` it was read from.
    With `engine` None, only the Redis log is read. A task name matches every event of the
    agents that ran under it."""
    low = Position.first_at(since) if since else ORIGIN
    high = Position.last_at(until) if until else None
    agents: set[UUID] = {agent_id} if agent_id else set()
    start = low
    if engine is not None:
        for item in _from_archive(engine, agent_id, task_name, low, high):
            agents.add(item.event.agent_id)
            yield item
        last = _last_archived(engine)
        if last is not None:
            start = max(low, last.after())
    client = get_sync_redis()
    cursor = str(start)
    end = str(high) if high else "+"
    while True:
        page: Any = client.xrange(Keys(CONF.key_prefix).events, cursor, end, count=_PAGE)
        for raw_id, fields in page:
            try:
                recorded = Recorded.from_entry(raw_id, fields)
            except EventDecodeError:
                continue
            event = recorded.event
            if task_name is not None and event.task_name == task_name:
                agents.add(event.agent_id)
            if (agent_id is None and task_name is None) or event.agent_id in agents:
                yield recorded
        if len(page) < _PAGE:
            return
        cursor = str(Position.parse(page[-1][0]).after())


def _from_archive(
    engine: Engine,
    agent_id: UUID | None,
    task_name: str | None,
    low: Position,
    high: Position | None,
) -> Iterator[Recorded]:
    table = ArchivedEvent.__table__.c
    key = tuple_(table.stream_ms, table.stream_seq)
    query = select(table.stream_ms, table.stream_seq, table.data).where(key >= tuple_(*low))
    if high is not None:
        query = query.where(key <= tuple_(*high))
    if agent_id is not None:
        query = query.where(table.agent_id == agent_id)
    if task_name is not None:
        of_task = select(table.agent_id).where(table.task_name == task_name).distinct()
        query = query.where(or_(table.task_name == task_name, table.agent_id.in_(of_task)))
    query = query.order_by(table.stream_ms, table.stream_seq)
    with engine.connect() as conn:
        for ms, seq, data in conn.execute(query):
            yield Recorded.from_archive(ms, seq, data)


def _last_archived(engine: Engine) -> Position | None:
    table = ArchivedEvent.__table__.c
    with engine.connect() as conn:
        row = conn.execute(
            select(table.stream_ms, table.stream_seq)
            .order_by(table.stream_ms.desc(), table.stream_seq.desc())
            .limit(1)
        ).first()
    return Position(row[0], row[1]) if row else None
