"""The event log: `EventLog.append` is its one writer, and a `Recorded` event is one event at
its position, as every reader gets it.

Every event appended carries its task's name: inside a handler the handler's context gives it
(`agentexec.tasks.event_identity`); elsewhere the append takes it from the agent marker the
task's enqueue wrote (`lua/lib/names.lua`), in the same script.

Every reader gets the same shape, whether it read the Redis stream (the projector, the SSE
hub, the monitor, replay) or the SQL archive (rebuild, restore, replay, feeds that resume
further back than Redis holds): the position, the decoded event and the JSON it was decoded
from, which is what the archive stores and what a dead letter keeps.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from . import events, outbox
from .broker import Broker
from .connection import REDIS_ERRORS
from .credentials import redact_url
from .errors import EventDecodeError, RedisUnavailableError, UnknownActivityError
from .events import TERMINAL, AnyEvent, Event, SessionEvent, Status
from .positions import Position
from .streams import AGENT_TTL
from .tasks import RunningTask, TaskLease

__all__ = ["EventLog", "Recorded", "Source"]

logger = logging.getLogger(__name__)


class EventLog:
    """The one writer of the event log of `broker`'s namespace (default: a new `Broker()`).

    With a `lease` (a task's handler writing, the lease its worker holds, see
    `agentexec.tasks.RunningTask`), the append is fenced by it through the outbox
    (`agentexec.outbox`): the events of one agent keep their order, and once the worker lost
    the task to another (its lease expired, as after a freeze) the event is discarded with a
    warning and "" returned. Without, with `check`, the agent id must be known: a task was
    enqueued or an activity created with it within `AGENT_TTL` of its latest event, else
    `UnknownActivityError`; an event without a task name gets its task's.

    Returns the event's stream id. Raises `RedisUnavailableError` when Redis is unreachable.
    """

    def __init__(self, broker: Broker | None = None) -> None:
        self.broker = broker or Broker()

    async def append(
        self,
        event: Event,
        lease: TaskLease | None = None,
        *,
        check: bool = True,
        wait: bool = False,
    ) -> str:
        """Append `event` (see the class); from async code. Fenced appends go after the
        agent's queued ones. A single try; with `wait`, a fenced append is retried while
        Redis is unreachable, for up to `AGENTEXEC_ENQUEUE_TIMEOUT` seconds (the handler
        waits, as a sync handler's thread does)."""
        try:
            if lease is not None:
                timeout = self.broker.settings.enqueue_timeout if wait else 0.0
                return await outbox.append(self.broker, event, lease, wait=timeout)
            return self._known(event, await self.broker.append_known(event, check=check))
        except REDIS_ERRORS as e:
            raise self._unreachable(event, e) from e

    async def checkpoint(
        self, event: Event, lease: TaskLease, run: str, conversation: bytes
    ) -> str:
        """Append `event` (an `agent.checkpoint`) fenced by `lease`, after the agent's queued
        events, and save `conversation` as run `run`'s checkpoint in the same step; "" when
        the worker lost the task. A worker that takes the task over reads it with
        `saved_checkpoint`."""
        try:
            return await outbox.append(self.broker, event, lease, (run, conversation))
        except REDIS_ERRORS as e:
            raise self._unreachable(event, e) from e

    async def saved_checkpoint(self, agent_id: UUID, run: str) -> bytes | None:
        """The conversation run `run` of `agent_id` saved with its latest `agent.checkpoint`
        event, or None. Raises `RedisUnavailableError` when Redis is unreachable."""
        try:
            return await self.broker.checkpoint(agent_id, run)
        except REDIS_ERRORS as e:
            raise RedisUnavailableError(
                f"could not read the checkpoint of agent {agent_id}: Redis at "
                f"{redact_url(self.broker.settings.redis_url)} is unreachable ({e})"
            ) from e

    def append_sync(
        self, event: Event, lease: TaskLease | None = None, *, check: bool = True
    ) -> str:
        """Append `event` (see the class); from sync code. On a running event loop (an async
        handler calling the sync activity API) a fenced append is queued and "" returned at
        once: waiting would stall the loop, its other tasks and its lease renewals. On a sync
        handler's thread it is retried while Redis is unreachable, for up to
        `AGENTEXEC_ENQUEUE_TIMEOUT` seconds."""
        if lease is not None:
            if outbox.on_event_loop():
                outbox.queue(self.broker, event, lease)
                return ""
            return outbox.append_sync(self.broker, event, lease)
        try:
            return self._known(event, self.broker.append_known_sync(event, check=check))
        except REDIS_ERRORS as e:
            raise self._unreachable(event, e) from e

    async def append_session(
        self,
        key: UUID,
        version: int,
        op: str,
        token: str,
        changes: Sequence[SessionEvent],
        items: Sequence[bytes] = (),
        held: RunningTask | None = None,
    ) -> tuple[int, list[str]] | Literal[False] | None:
        """Append the events `changes` of one change `op` ('add' with `items`, 'pop',
        'clear') of the conversation session `key` (its agent id, see `agentexec.sessions`)
        together with the change of its live items, if the session is still at `version`.
        Returns the item count after it and the events' ids; None when another writer changed
        the session since `version` was read (read again and retry). `token` names the
        change: appending it again after a lost reply does not apply it twice (unless another
        change came in between).

        With `held`, the task whose handler makes the change (`agentexec.tasks.running_task`),
        the change is fenced by its lease like the handler's other appends: once its worker
        lost the task to another (its lease expired, as after a freeze) or the task ended,
        nothing changes, a warning is logged and False returned. Without (outside a handler,
        or a task only marked), unfenced: a session outlives the tasks that use it."""
        encoded = [events.encode(change) for change in changes]
        fence = None if held is None or held.lease is None else (held.agent_id, held.lease)
        try:
            done = await self.broker.change_session(key, version, op, token, encoded, items, fence)
        except REDIS_ERRORS as e:
            raise self._unreachable(changes[0], e) from e
        if done is False:
            assert held is not None
            logger.warning(
                "agent %s: this worker lost the task to another one; %s of session %s discarded",
                held.agent_id,
                ", ".join(type(change).__name__ for change in changes),
                key,
            )
        return done

    def _known(self, event: Event, entry_id: str | None) -> str:
        if entry_id is None:
            raise UnknownActivityError(
                f"agent id {event.agent_id} is not known: no task was enqueued and no activity "
                f"created with it in the last {AGENT_TTL // 3600} hours (namespace "
                f"{self.broker.keys.prefix!r}); pass the agent_id your task received, or start "
                "tracking with ax.activity.create(...)."
            )
        return entry_id

    def _unreachable(self, event: Event, e: Exception) -> RedisUnavailableError:
        return RedisUnavailableError(
            f"could not record {type(event).__name__} for agent {event.agent_id}: Redis at "
            f"{redact_url(self.broker.settings.redis_url)} is unreachable ({e})"
        )


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
        """The event's task name; "" only for an event recorded without one (see
        `agentexec.events.Event.task_name`)."""
        return self.event.task_name
