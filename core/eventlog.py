"""The event log as its readers see it: a `Recorded` event is one event at its position.

Every reader gets the same shape, whether it read the Redis stream (the projector, the SSE
hub, the monitor, replay) or the SQL archive (rebuild, restore, replay, feeds that resume
further back than Redis holds): the position, the decoded event and the JSON it was decoded
from, which is what the archive stores and what a dead letter keeps.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from . import events
from .errors import EventDecodeError
from .events import TERMINAL, AnyEvent, Status
from .positions import Position

__all__ = ["Recorded", "Source"]


class Source(enum.StrEnum):
    """Where a recorded event was read from."""

    LOG = "log"
    """The Redis stream."""
    ARCHIVE = "archive"
    """The SQL archive the projector keeps (see `agentexec.projector`)."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """One event at its position in the log.

    `position` may be given in its text form (`"1700000000000-3"`, as Redis returns it).
    `data` is the event's JSON as recorded (empty when the event was built in memory).
    """

    position: Position
    event: AnyEvent
    data: bytes = b""
    source: Source = Source.LOG
    ts: datetime = field(init=False, repr=False, compare=False)
    """The event's time as naive UTC, the way the read model stores times."""

    def __post_init__(self) -> None:
        if not isinstance(self.position, Position):
            object.__setattr__(self, "position", Position.parse(self.position))
        ts = self.event.ts
        if ts.tzinfo is not None:
            ts = ts.astimezone(UTC).replace(tzinfo=None)
        object.__setattr__(self, "ts", ts)

    @classmethod
    def from_entry(cls, entry_id: str | bytes, fields: Mapping[Any, Any]) -> Recorded:
        """Decode a stream entry (as XREAD, XRANGE or XREADGROUP return it).

        Raises `EventDecodeError` when it is not an agentexec event.
        """
        data = fields.get(events.EVENT_FIELD)
        if data is None:
            raise EventDecodeError(
                f"stream entry has no {events.EVENT_FIELD!r} field: {list(fields)[:5]!r}"
            )
        data = bytes(data)
        return cls(Position.parse(entry_id), events.decode(data), data)

    @classmethod
    def from_archive(cls, ms: int, seq: int, data: str) -> Recorded:
        """Decode an archived event (its `stream_ms`, `stream_seq` and `data` columns).

        Raises `EventDecodeError` when it is not an agentexec event.
        """
        raw = data.encode()
        return cls(Position(ms, seq), events.decode(raw), raw, Source.ARCHIVE)

    @property
    def event_id(self) -> str:
        """The position in its text form: the event's identity everywhere it is shown."""
        return str(self.position)

    @property
    def type(self) -> str:
        """The event's type tag, e.g. `task.progress`."""
        tag: str = type(self.event).__struct_config__.tag  # type: ignore[assignment]
        return tag

    @property
    def status(self) -> Status | None:
        """The status the event moves its task to (None: no change)."""
        return type(self.event).status

    @property
    def terminal(self) -> bool:
        """True for an event that ends its task (complete, error, canceled)."""
        return type(self.event).status in TERMINAL

    @property
    def task_name(self) -> str:
        """The event's task name; "" for an event recorded without one (see `named`)."""
        return self.event.task_name

    def named(self, task_name: str) -> Recorded:
        """This event carrying `task_name`, for an event recorded without one (older events,
        and writes from outside the task's handler that did not know it)."""
        if not task_name or self.event.task_name == task_name:
            return self
        event = msgspec.structs.replace(self.event, task_name=task_name)
        return Recorded(self.position, event, self.data, self.source)
