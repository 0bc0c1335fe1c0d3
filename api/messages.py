"""The messages of the live feeds: one SSE frame per event, and the reset frame.

A frame is `id:` (the stream entry id; on the feed of every event with several partitions,
the feed's cursor: `agentexec.api.cursors`), `event:` (the event type, e.g. `task.progress`) and
`data:` (one line of JSON). The JSON has the event's fields, the task's context and result
left out (a feed shows what tasks do, not their inputs and outputs), plus:
`id`, `task_name` (as recorded: every append names its event, see `agentexec.eventlog`),
`status` (lower-case, null for events that do not change it), `message`, `percentage` and
`attempt`, always present.
"""

from __future__ import annotations

import logging
import typing
from typing import Any

import msgspec
from sse_starlette import ServerSentEvent

from agentexec.eventlog import Recorded, Source
from agentexec.events import AnyEvent, SessionEvent, Status
from agentexec.positions import Position

from .cursors import Cursor, cursor_part

__all__ = ["RESET", "Delivery", "feed_schemas", "reset_frame", "retry_frame"]

logger = logging.getLogger(__name__)

RESET = "reset"
"""The `event:` of the frame that declares a gap in the history."""

_HIDDEN = ("context", "result", "result_type", "trace")
"""Payloads a feed does not carry: task contexts and results (and the result's class name),
and trace contexts (plumbing between agentexec's processes, whose baggage may hold the
application's data)."""
_HIDDEN_SESSION = ("items", "item")
"""Nor the items of a session's events (large, and read through `ax.AgentSession`); other
events' fields of those names (an `agent.delta`'s `item`, a name) stay."""
_encoder = msgspec.json.Encoder()


class Delivery(Recorded):
    """A recorded event on its way to the feeds of this process.

    The frame is encoded once, when the first feed asks for it.
    """

    __slots__ = ("_body", "_frame", "_part", "_plain", "partition")
    _body: bytes | None
    _plain: bytes | None
    _part: str | None
    _frame: tuple[str, bytes] | None
    partition: int
    """The partition of the log the event is in (0 with one partition)."""

    def __init__(
        self,
        position: Position,
        event: AnyEvent,
        data: bytes = b"",
        source: Source = Source.LOG,
        partition: int = 0,
    ) -> None:
        super().__init__(position, event, data, source)
        object.__setattr__(self, "_body", None)
        object.__setattr__(self, "_frame", None)
        object.__setattr__(self, "_plain", None)
        object.__setattr__(self, "_part", None)
        object.__setattr__(self, "partition", partition)

    @classmethod
    def of(cls, recorded: Recorded, partition: int = 0) -> Delivery:
        return cls(recorded.position, recorded.event, recorded.data, recorded.source, partition)

    @property
    def frame(self) -> bytes:
        """The frame with the event's stream id as its `id:`."""
        plain: bytes | None = self._plain
        if plain is None:
            plain = b"id: %s\r\n%s" % (str(self.position).encode(), self._encoded())
            object.__setattr__(self, "_plain", plain)
        return plain

    @property
    def part(self) -> str:
        """Its position as a cursor of several partitions writes it (`cursor_part`)."""
        part: str | None = self._part
        if part is None:
            part = cursor_part(self.position)
            object.__setattr__(self, "_part", part)
        return part

    def frame_with(self, event_id: Position | Cursor | str) -> bytes:
        """The frame with `event_id` as its `id:` (the global feed's cursor, with several
        partitions). The rest is encoded once, for every feed; the last frame is kept, for
        the next feed at the same id (live feeds that keep up have the same cursor)."""
        text = event_id if isinstance(event_id, str) else str(event_id)
        last = self._frame
        if last is not None and last[0] == text:
            return last[1]
        frame = b"id: %s\r\n%s" % (text.encode(), self._encoded())
        object.__setattr__(self, "_frame", (text, frame))
        return frame

    def _encoded(self) -> bytes:
        body: bytes | None = self._body
        if body is None:
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
            body = ServerSentEvent(data.decode(), event=self.type).encode()
            object.__setattr__(self, "_body", body)
        return body

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


def reset_frame(last: Position | Cursor, resume: Position | Cursor, reason: str) -> bytes:
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


def _hidden(cls: type) -> tuple[str, ...]:
    return _HIDDEN + _HIDDEN_SESSION if issubclass(cls, SessionEvent) else _HIDDEN


_ALWAYS = (
    "id",
    "type",
    "agent_id",
    "task_name",
    "ts",
    "status",
    "message",
    "percentage",
    "attempt",
)
"""Fields every frame's JSON has (`Delivery.payload`)."""


def feed_schemas(ref_template: str = "#/components/schemas/{name}") -> dict[str, Any]:
    """JSON Schemas of the feeds' `data:` JSON, as OpenAPI components: `Feed<Event>` per
    event type (`FeedTaskProgress`...), `FeedReset`, and `FeedEvent`, any of them told apart
    by `type`. Derived from the event types themselves, so they cannot drift from what a
    feed sends; the TypeScript types of api/client are generated from them."""
    events: tuple[type[msgspec.Struct], ...] = typing.get_args(AnyEvent)
    shown = {
        cls: [f for f in msgspec.structs.fields(cls) if f.name not in _hidden(cls)]
        for cls in events
    }
    types = list({f.type for fields in shown.values() for f in fields})
    field_schemas, components = msgspec.json.schema_components(types, ref_template=ref_template)
    schema_of = dict(zip(types, map(_open_objects, field_schemas), strict=True))
    statuses = [status.wire for status in Status]
    mapping: dict[str, str] = {}
    for cls, fields in shown.items():
        tag = str(cls.__struct_config__.tag)
        properties: dict[str, Any] = {f.name: schema_of[f.type] for f in fields}
        properties.update(
            id={
                "type": "string",
                "description": "The stream entry id in the event's partition: the SSE `id:`, "
                "except on /api/events with several partitions, whose `id:` is a cursor",
            },
            type={"type": "string", "enum": [tag]},
            status={"anyOf": [{"type": "string", "enum": statuses}, {"type": "null"}]},
            message={"type": "string"},
            percentage={"anyOf": [{"type": "integer"}, {"type": "null"}]},
            attempt={"type": "integer"},
        )
        required = [f.name for f in fields if f.required] + list(_ALWAYS)
        name = f"Feed{cls.__name__}"
        components[name] = {
            "title": name,
            "description": f"The data of a `{tag}` frame.",
            "type": "object",
            "properties": properties,
            "required": sorted(set(required), key=list(properties).index),
        }
        mapping[tag] = ref_template.format(name=name)
    components["FeedReset"] = {
        "title": "FeedReset",
        "description": "The data of a `reset` frame: events after `last_event_id` up to "
        "`resume_from` are gone for good (trimmed); the feed goes on from `resume_from`. "
        "Both are ids of the feed (cursors on /api/events with several partitions).",
        "type": "object",
        "properties": {
            "type": {"type": "string", "enum": [RESET]},
            "last_event_id": {"type": "string"},
            "resume_from": {"type": "string"},
            "message": {"type": "string"},
        },
        "required": ["type", "last_event_id", "resume_from", "message"],
    }
    mapping[RESET] = ref_template.format(name="FeedReset")
    components["FeedEvent"] = {
        "title": "FeedEvent",
        "description": "The data of any frame of a feed; its `type` is the frame's `event:`.",
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "type", "mapping": mapping},
    }
    return components


def _open_objects(schema: Any) -> Any:
    """`schema` with every object of unknown keys (a `dict[str, Any]`) saying so: a bare
    `{"type": "object"}` reads as `Record<string, never>` to TypeScript generators."""
    if isinstance(schema, list):
        return [_open_objects(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: _open_objects(value) for key, value in schema.items()}
    if schema.get("type") == "object" and "properties" not in schema:
        schema.setdefault("additionalProperties", {})
    return schema
