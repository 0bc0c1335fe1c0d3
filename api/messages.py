"""The messages of the live feeds: one SSE frame per event, and the reset frame.

A frame is `id:` (the stream entry id), `event:` (the event type, e.g. `task.progress`) and
`data:` (one line of JSON). The JSON has the event's fields, the task's context and result
left out (a feed shows what tasks do, not their inputs and outputs), plus:
`id`, `task_name` (filled in for events recorded without one, such as `ax.activity.update`
called outside the task's handler),
`status` (lower-case, null for events that do not change it), `message`, `percentage` and
`attempt`, always present.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import Engine, select
from sse_starlette import ServerSentEvent

from agentexec.eventlog import Recorded, Source
from agentexec.events import AnyEvent
from agentexec.positions import Position

__all__ = ["RESET", "Delivery", "TaskNames", "reset_frame", "retry_frame"]

logger = logging.getLogger(__name__)

RESET = "reset"
"""The `event:` of the frame that declares a gap in the history."""

_HIDDEN = ("context", "result")
_encoder = msgspec.json.Encoder()


class Delivery(Recorded):
    """A recorded event on its way to the feeds of this process, carrying its task name
    (given as `task_name` when the event was recorded without one, see `TaskNames`).

    The frame is encoded once, when the first feed asks for it.
    """

    __slots__ = ("_frame",)
    _frame: bytes | None

    def __init__(
        self,
        position: Position,
        event: AnyEvent,
        task_name: str = "",
        data: bytes = b"",
        source: Source = Source.LOG,
    ) -> None:
        if task_name and event.task_name != task_name:
            event = msgspec.structs.replace(event, task_name=task_name)
        super().__init__(position, event, data, source)
        object.__setattr__(self, "_frame", None)

    @classmethod
    def of(cls, recorded: Recorded, task_name: str) -> Delivery:
        return cls(recorded.position, recorded.event, task_name, recorded.data, recorded.source)

    @property
    def frame(self) -> bytes:
        frame: bytes | None = self._frame
        if frame is None:
            try:
                data = self.payload()
            except Exception:
                # An event the feed cannot show must not end every feed that reaches it.
                logger.exception(
                    "feed: event %s cannot be encoded; sent without its fields", self.position
                )
                data = _encoder.encode(
                    {
                        "id": str(self.position),
                        "type": self.type,
                        "agent_id": self.event.agent_id,
                        "task_name": self.task_name,
                    }
                )
            frame = ServerSentEvent(data.decode(), event=self.type, id=str(self.position)).encode()
            object.__setattr__(self, "_frame", frame)
        return frame

    def payload(self) -> bytes:
        """The JSON of the frame's `data:` line."""
        event = self.event
        fields: dict[str, Any] = msgspec.to_builtins(event, builtin_types=(msgspec.Raw,))
        for name in _HIDDEN:
            fields.pop(name, None)
        status = type(event).status
        fields.update(
            id=str(self.position),
            type=self.type,
            task_name=event.task_name,
            status=status.wire if status is not None else None,
            message=event.message,
            percentage=event.percentage,
            attempt=event.attempt,
        )
        return _encoder.encode(fields)


def reset_frame(last: Position, resume: Position, reason: str) -> bytes:
    """The frame declaring that events after `last` up to `resume` are gone for good.

    Its `id:` is `resume`, so a client that reconnects after it is not told twice.
    """
    data = {
        "type": RESET,
        "last_event_id": str(last),
        "resume_from": str(resume),
        "message": reason,
    }
    return ServerSentEvent(_encoder.encode(data).decode(), event=RESET, id=str(resume)).encode()


def retry_frame(milliseconds: int) -> bytes:
    """Tells the browser how soon to reconnect after the connection drops."""
    return ServerSentEvent(retry=milliseconds).encode()


class TaskNames:
    """The task name of each agent id, learnt from the events that carry one.

    Events recorded by `ax.activity.update`, `complete` and `error` have no task name; a feed
    fills it in from what it learnt, or from the read model (`engine`) for agents it has not
    seen. At most `size` names are kept, least recently used dropped first.
    """

    RETRY_SECONDS = 5.0
    """How long an agent the read model did not know stays unknown before it is asked again."""

    def __init__(self, engine: Engine | None, size: int = 100_000) -> None:
        self.engine = engine
        self.size = size
        self._names: OrderedDict[UUID, str] = OrderedDict()
        self._unknown: dict[UUID, float] = {}

    def learn(self, agent_id: UUID, task_name: str) -> None:
        if not task_name:
            return
        names = self._names
        if agent_id in names:
            names.move_to_end(agent_id)
            return
        names[agent_id] = task_name
        if len(names) > self.size:
            names.popitem(last=False)

    def known(self, event: AnyEvent) -> str | None:
        """The event's task name, or the one learnt for its agent; None when unknown."""
        if event.task_name:
            self.learn(event.agent_id, event.task_name)
            return event.task_name
        return self._names.get(event.agent_id)

    async def resolve(self, event: AnyEvent) -> str:
        """The event's task name; "" when neither the feed nor the read model knows it."""
        name = self.known(event)
        if name is not None:
            return name
        agent_id = event.agent_id
        if self.engine is None or self._unknown.get(agent_id, 0.0) > time.monotonic():
            return ""
        name = await asyncio.to_thread(self._lookup, agent_id)
        if name:
            self.learn(agent_id, name)
            self._unknown.pop(agent_id, None)
            return name
        if len(self._unknown) > self.size:
            self._unknown.clear()
        self._unknown[agent_id] = time.monotonic() + self.RETRY_SECONDS
        return ""

    def _lookup(self, agent_id: UUID) -> str:
        from agentexec.activity.models import Activity

        assert self.engine is not None
        with self.engine.connect() as conn:
            name = conn.execute(
                select(Activity.agent_type).where(Activity.agent_id == agent_id)
            ).scalar()
        return str(name or "")
