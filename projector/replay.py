"""Replay: the recorded history of one agent, one task name or a time range, for auditing.

Events come from the SQL archive first, then from the Redis log beyond the last archived
entry (what the projector has not committed yet), in log order. Times select by the entry's
stream id, that is when Redis appended the event. With several partitions each partition is
read so, and their events merged in time order (stream id, then partition): an agent's events
are all in one partition, in its log order.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Engine

from agentexec import events
from agentexec.eventlog import Recorded
from agentexec.positions import ORIGIN, Position
from agentexec.runtime import Runtime, current

from .archive import Archive

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
    runtime: Runtime | None = None,
) -> Iterator[Recorded]:
    """Yield the matching events in log order, each with the `source` it was read from.
    With `engine` None, only the Redis log is read. A task name matches every event of the
    agents that ran under it."""
    runtime = runtime or current()
    partitions = runtime.partitions
    if agent_id is not None:
        reads = [partitions.of(agent_id)]  # its events are all there
    else:
        reads = list(partitions)
    if engine is not None and agent_id is None:
        # Partitions the archive holds beyond the present count (it was lowered) too.
        reads += [p for p in Archive(engine, partition=None).partitions() if p not in reads]
    low = Position.first_at(since) if since else ORIGIN
    high = Position.last_at(until) if until else None
    merged = heapq.merge(
        *(
            (
                (r.position, p, r)
                for r in _partition(engine, runtime, p, agent_id, task_name, low, high)
            )
            for p in reads
        ),
        key=lambda t: t[:2],
    )
    for _, _, recorded in merged:
        yield recorded


def _partition(
    engine: Engine | None,
    runtime: Runtime,
    partition: int,
    agent_id: UUID | None,
    task_name: str | None,
    low: Position,
    high: Position | None,
) -> Iterator[Recorded]:
    """The matching events of one partition, in its log order."""
    agents: set[UUID] = {agent_id} if agent_id else set()
    start = low
    if engine is not None:
        archive = Archive(engine, page=_PAGE, partition=partition)
        pages = archive.read(low.before(), high, agent_id=agent_id, task_name=task_name)
        for archived in pages:
            for item in archived:
                agents.add(item.event.agent_id)
                yield item
        last = archive.last()
        if last is not None:
            start = max(low, last.after())
    if partition >= len(runtime.partitions):
        return  # archived only
    broker = runtime.broker
    after = start.before() if start > ORIGIN else None
    while True:
        page = broker.read_log_sync(after, until=high, count=_PAGE, partition=partition)
        for recorded in page.recorded:
            event = recorded.event
            if task_name is not None and event.task_name == task_name:
                agents.add(event.agent_id)
            if (agent_id is None and task_name is None) or event.agent_id in agents:
                yield recorded
        if page.size < _PAGE:
            return
        after = page.last
