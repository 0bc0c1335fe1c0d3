"""The messages of the live feeds: one SSE frame per event, and the reset frame.

A frame is `id:` (the stream entry id), `event:` (the event type, e.g. `task.progress`) and
`data:` (one line of JSON). The JSON has the event's fields, the task's context and result
left out (a feed shows what tasks do, not their inputs and outputs), plus:
`id`, `task_name` (as recorded: every append names its event, see `agentexec.eventlog`),
`status` (lower-case, null for events that do not change it), `message`, `percentage` and
`attempt`, always present.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from sse_starlette import ServerSentEvent

from agentexec.eventlog import Recorded, Source
from agentexec.events import AnyEvent, SessionEvent
from agentexec.positions import Position

__all__ = ["RESET", "Delivery", "reset_frame", "retry_frame"]

logger = logging.getLogger(__name__)

RESET = "reset"
"""The `event:` of the frame that declares a gap in the history."""

_HIDDEN = ("context", "result")
"""Payloads a feed does not carry: task contexts and results."""
_HIDDEN_SESSION = ("items", "item")
"""Nor the items of a session's events (large, and read through `ax.AgentSession`); other
events' fields of those names (an `agent.delta`'s `item`, a name) stay."""
_encoder = msgspec.json.Encoder()


class Delivery(Recorded):
    """A recorded event on its way to the feeds of this process.

    The frame is encoded once, when the first feed asks for it.
    """

    __slots__ = ("_frame",)
    _frame: bytes | None

    def __init__(
        self,
        position: Position,
        event: AnyEvent,
        data: bytes = b"",
        source: Source = Source.LOG,
    ) -> None:
        super().__init__(position, event, data, source)
        object.__setattr__(self, "_frame", None)

    @classmethod
    def of(cls, recorded: Recorded) -> Delivery:
        return cls(recorded.position, recorded.event, recorded.data, recorded.source)

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
        hidden = _HIDDEN + _HIDDEN_SESSION if isinstance(event, SessionEvent) else _HIDDEN
        for name in hidden:
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
