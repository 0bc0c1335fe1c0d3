"""Replay: the recorded history of one agent, one task name or a time range, for auditing.

Events come from the SQL archive first, then from the Redis log beyond the last archived
entry (what the projector has not committed yet), in log order. Times select by the entry's
stream id, that is when Redis appended the event.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Engine

from agentexec import events
from agentexec.config import CONF
from agentexec.connection import get_sync_redis
from agentexec.errors import EventDecodeError
from agentexec.events import AnyEvent
from agentexec.streams import Keys

from .archive import Archive
from .checkpoints import parse_id

__all__ = ["Replayed", "replay"]

_PAGE = 1000


@dataclass(frozen=True)
class Replayed:
    """One event of a replay, with its stream id and where it was read from."""

    event_id: str
    event: AnyEvent
    source: str
    """`archive` or `log`."""

    def as_json(self) -> str:
        payload: dict[str, Any] = json.loads(events.encode(self.event))
        return json.dumps({"id": self.event_id, "source": self.source, **payload})

    def as_text(self) -> str:
        event = self.event
        status = type(event).status
        return "  ".join(
            [
                event.ts.astimezone(UTC).isoformat(timespec="milliseconds"),
                self.event_id,
                f"{type(event).__struct_config__.tag:<14}",
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
) -> Iterator[Replayed]:
    """Yield the matching events in log order. With `engine` None, only the Redis log is
    read. A task name matches every event of the agents that ran under it."""
    low = (_ms(since), 0) if since else (0, 0)
    high = (_ms(until), 2**63 - 1) if until else None
    agents: set[UUID] = {agent_id} if agent_id else set()
    after = (-1, -1)
    if engine is not None:
        archive = Archive(engine, page=_PAGE)
        # From `low` on: every sequence number is >= 0.
        pages = archive.read((low[0], low[1] - 1), high, agent_id=agent_id, task_name=task_name)
        for archived in pages:
            for applied in archived:
                agents.add(applied.event.agent_id)
                yield Replayed(applied.event_id, applied.event, "archive")
        after = archive.last() or (-1, -1)
    start = max(low, (after[0], after[1] + 1))
    client = get_sync_redis()
    cursor = f"{start[0]}-{start[1]}"
    end = f"{high[0]}-{high[1]}" if high else "+"
    while True:
        page: Any = client.xrange(Keys(CONF.key_prefix).events, cursor, end, count=_PAGE)
        for raw_id, fields in page:
            try:
                event = events.decode_entry(fields)
            except EventDecodeError:
                continue
            if task_name is not None and event.task_name == task_name:
                agents.add(event.agent_id)
            if (agent_id is None and task_name is None) or event.agent_id in agents:
                yield Replayed(raw_id.decode(), event, "log")
        if len(page) < _PAGE:
            return
        ms, seq = parse_id(page[-1][0].decode())
        cursor = f"{ms}-{seq + 1}"


def _ms(when: datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)
