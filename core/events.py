"""The event vocabulary: every fact about a task is one of these, appended to a Redis Stream.

Events are frozen msgspec Structs in a tagged union (`type` is the tag). They are stored as JSON
in the stream entry's `event` field, so `redis-cli XRANGE` stays readable. The stream entry id
is the event's identity and position; it is not part of the payload.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID

import msgspec

from . import tenants, tracing
from .errors import EventDecodeError
from .limits import recordable, storable

SCHEMA_VERSION = 1
NULL = msgspec.Raw(b"null")
EVENT_FIELD = b"event"


class _Spelling(str):
    """A status word that equals the same word in either case (`"complete" == "COMPLETE"`)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return str.lower(self) == str.lower(other)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return str.__hash__(str.lower(self))


class Status(enum.StrEnum):
    """The status of a task, spelled lower-case everywhere it is written out.

    `str(status)`, `status.value`, JSON, SSE and FastAPI's encoder of a plain dict all give the
    one wire form, `"complete"`. Comparisons accept either spelling: `status == "COMPLETE"`,
    `status in ("COMPLETE", "ERROR")` and `status.value == "complete"` are all true, and
    `Status("COMPLETE") is Status("complete")`. The read model stores the upper-case name.

    `Status.TERMINAL` (COMPLETE, ERROR, CANCELED) are final: a task in one of them never moves
    again, so a polling loop should stop on `status in Status.TERMINAL`. `Status.ACTIVE` is
    QUEUED and RUNNING.
    """

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    ERROR = "error"
    CANCELED = "canceled"

    TERMINAL: ClassVar[frozenset[Status]]
    ACTIVE: ClassVar[frozenset[Status]]

    def __new__(cls, value: str) -> Status:
        member = str.__new__(cls, value)
        member._value_ = _Spelling(value)
        return member

    @classmethod
    def _missing_(cls, value: object) -> Status | None:
        if isinstance(value, str):
            return cls.__members__.get(value.upper())
        return None

    __eq__ = _Spelling.__eq__
    __ne__ = _Spelling.__ne__
    __hash__ = _Spelling.__hash__

    @property
    def wire(self) -> str:
        """The wire spelling as a plain `str`: `queued`, `running`..."""
        return str.lower(self)


class _StatusSet(frozenset[Status]):
    """A set of statuses that also finds a status given as a string in either case."""

    def __contains__(self, item: object) -> bool:
        if isinstance(item, str) and not isinstance(item, Status):
            try:
                item = Status(item)
            except ValueError:
                return False
        return frozenset.__contains__(self, item)


TERMINAL = Status.TERMINAL = _StatusSet({Status.COMPLETE, Status.ERROR, Status.CANCELED})
ACTIVE = Status.ACTIVE = _StatusSet({Status.QUEUED, Status.RUNNING})


class Ending(enum.StrEnum):
    """How a task ended: the kind of its stored outcome (see `get_result`) and of a pipeline
    step's `pipeline.step_finished`. Each is spelled like the terminal status it leads to."""

    COMPLETE = "complete"
    ERROR = "error"
    CANCELED = "canceled"

    @property
    def status(self) -> Status:
        return Status(self.value)


class Priority(enum.StrEnum):
    """HIGH tasks run before LOW ones; within a priority, first in first out."""

    HIGH = "high"
    LOW = "low"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type"):
    """Fields every event carries. `message` and `percentage` are what an activity log shows."""

    agent_id: UUID
    task_name: str
    """The name the task was enqueued under. A writer that does not know it (a write from
    outside the task's handler, `ax.cancel`) leaves it "" and the append fills it in (see
    `agentexec.eventlog.EventLog`) from the agent marker its enqueue wrote. Only events
    recorded by older versions, or after the marker expired (`AGENT_TTL` after the task's
    latest event), lack it (see `agentexec.activity.state`)."""
    tenant: str | None = None
    """The tenant of the task the event is about (see `agentexec.tenants`): `encode` fills
    it in on the events a worker records while it serves a tenant's task, and the append of
    an event recorded elsewhere from the agent marker, like the task name. None for a task
    without one. Declared right after `task_name`, so that its JSON follows the name's (the
    scripts of `lua/lib/names.lua` read and write both together)."""
    ts: datetime = msgspec.field(default_factory=utcnow)
    attempt: int = 1
    v: int = SCHEMA_VERSION
    message: str = ""
    percentage: int | None = None
    metadata: dict[str, Any] | None = None
    trace: dict[str, str] | None = None
    """The OpenTelemetry trace context of the code that recorded the event (W3C
    `traceparent`, and `tracestate` or baggage when they fit in
    `agentexec.tracing.MAX_TRACE_CHARS`): `encode` fills it in when a span is active, so a
    worker continues the enqueuer's trace. None without tracing (see docs/tracing.md)."""

    status: ClassVar[Status | None] = None
    """The activity status this event moves its task to (None: no change)."""


class TaskQueued(Event, frozen=True, kw_only=True, omit_defaults=True, tag="task.queued"):
    """A task was enqueued, or an activity created by hand (then `queue` is None)."""

    status = Status.QUEUED
    queue: str | None = None
    priority: Priority = Priority.LOW
    context: msgspec.Raw = NULL
    parent_id: UUID | None = None
    timeout: float | None = None
    """Seconds the handler may run, set at enqueue (overrides the task's own)."""
    not_before: datetime | None = None
    """For a delayed task: when it becomes due."""


class TaskStarted(Event, frozen=True, kw_only=True, omit_defaults=True, tag="task.started"):
    status = Status.RUNNING
    worker: str = ""


class TaskProgress(Event, frozen=True, kw_only=True, omit_defaults=True, tag="task.progress"):
    """Progress reported by the task or its agent."""

    status = Status.RUNNING


class TaskWaiting(Event, frozen=True, kw_only=True, omit_defaults=True, tag="task.waiting"):
    """A worker took the task but parked it: one of its locks (its `lock_key`, or its
    tenant's share, see `agentexec.locks`) is full. It runs when a holder ends; no worker
    holds it meanwhile. `message` says what it waits for."""

    status = Status.QUEUED
    lock: str
    """The lock it waits for: `key:<its lock key>` or `tenant:<its tenant>`."""


class TaskCompleted(Event, frozen=True, kw_only=True, omit_defaults=True, tag="task.completed"):
    status = Status.COMPLETE
    result: msgspec.Raw = NULL
    result_type: str | None = None
    """`module:QualName` of the Pydantic model the handler returned, if it returned one."""


class TaskFailed(Event, frozen=True, kw_only=True, omit_defaults=True, tag="task.failed"):
    """The task raised, or could not run at all."""

    status = Status.ERROR
    error: str


class TaskRetried(Event, frozen=True, kw_only=True, omit_defaults=True, tag="task.retried"):
    """Attempt `attempt` failed with `error`; the task runs again after `delay` seconds."""

    status = Status.QUEUED
    error: str
    delay: float


class TaskCancelRequested(
    Event, frozen=True, kw_only=True, omit_defaults=True, tag="task.cancel_requested"
):
    """`ax.cancel` was called; the worker holding the task (or, for a pipeline run, its
    current step) stops it and records TaskCanceled."""


class TaskCanceled(Event, frozen=True, kw_only=True, omit_defaults=True, tag="task.canceled"):
    status = Status.CANCELED


class AgentEvent(Event, frozen=True, kw_only=True, omit_defaults=True):
    """What an agent is doing, recorded by a runner. No status change: the task stays RUNNING.

    `agent` is the name of the agent that acted, `turn` the 1-based number of the model call
    in the run it belongs to (0 when not known).
    """

    agent: str = ""
    turn: int = 0


class AgentTurn(AgentEvent, frozen=True, kw_only=True, omit_defaults=True, tag="agent.turn"):
    """The agent is calling its model for turn `turn` (of at most `max_turns`)."""

    max_turns: int | None = None


class AgentToolCall(
    AgentEvent, frozen=True, kw_only=True, omit_defaults=True, tag="agent.tool_call"
):
    """The agent called tool `tool`. `arguments` is a redacted summary of the arguments, at
    most `AGENTEXEC_MAX_EVENT_SUMMARY_CHARS` long, never the raw payload."""

    tool: str
    call_id: str = ""
    arguments: str = ""


class AgentHandoff(AgentEvent, frozen=True, kw_only=True, omit_defaults=True, tag="agent.handoff"):
    """Agent `agent` handed the conversation to agent `to_agent`."""

    to_agent: str


class AgentUsage(AgentEvent, frozen=True, kw_only=True, omit_defaults=True, tag="agent.usage"):
    """Tokens used by one model response (turn `turn`); a run's total is the sum."""

    requests: int = 1
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


class AgentGuardrailTripped(
    AgentEvent, frozen=True, kw_only=True, omit_defaults=True, tag="agent.guardrail_tripped"
):
    """Guardrail `guardrail` of agent `agent` refused the run's input (`stage` "input") or the
    agent's final output ("output"); `reason` is what it said. The run stops."""

    guardrail: str = ""
    stage: str = ""
    reason: str = ""


class AgentCheckpoint(
    AgentEvent, frozen=True, kw_only=True, omit_defaults=True, tag="agent.checkpoint"
):
    """Turn `turn` of run `run` (a fingerprint of the run's agent and input) completed: the
    conversation so far, `items` items long, was saved with this event (in the same
    lease-fenced append), so a worker that takes the task over resumes the run from here
    instead of asking the model and calling the tools again for turns 1 to `turn`
    (see docs/runner.md)."""

    run: str = ""
    items: int = 0


class AgentDelta(Event, frozen=True, kw_only=True, omit_defaults=True, tag="agent.delta"):
    """What a streamed run produced since the previous delta, coalesced (see
    `agentexec.runners.streaming`): `text` is output text to append to what the run's
    `agent` has said so far; `kind` says what it is: "text" (output text), "item" (a
    finished item such as a tool call, named in `item`), "start" (an agent starts, iteration
    `turn`), "answer" (a final answer, in `text`, with `sources`) or "error" (in `text`).
    Every field is optional, and a field at its default is left out of the JSON (a text
    delta has no `kind`). No status change, and no activity log row: a run's text is read
    from the log or the feed."""

    kind: str = "text"
    agent: str = ""
    turn: int = 0
    text: str = ""
    item: str = ""
    sources: list[Any] | None = None


class PipelineStepStarted(
    Event, frozen=True, kw_only=True, omit_defaults=True, tag="pipeline.step_started"
):
    """A worker began running step `step` of the pipeline run `agent_id` (the run's id), as the
    child task `step_agent_id`; the run shows RUNNING with the step's description. Appended
    again when a step is retried or redelivered (see `attempt`)."""

    status = Status.RUNNING
    step: int
    steps: int
    step_agent_id: UUID


class PipelineStepFinished(
    Event, frozen=True, kw_only=True, omit_defaults=True, tag="pipeline.step_finished"
):
    """Step `step` of run `agent_id` ended with `outcome`.

    Appended in the same transaction as the step's own terminal event and, when the step
    completed, was not the last and the run goes on, the `task.queued` of the next step
    (`next_agent_id`)."""

    status = Status.RUNNING
    step: int
    steps: int
    step_agent_id: UUID
    outcome: Ending
    next_agent_id: UUID | None = None


class TrackerEvent(Event, frozen=True, kw_only=True, omit_defaults=True):
    """A change of the fan-out tracker `tracker` of batch `batch_id`; `agent_id` is the
    tracker's own id (see `ax.Tracker.id`), `child_id` the task that made the change, if
    any. `pending` and `total` are the counts after the change. No activity status."""

    tracker: str
    batch_id: str
    child_id: UUID | None = None
    pending: int | None = None
    total: int | None = None


class TrackerIncremented(
    TrackerEvent, frozen=True, kw_only=True, omit_defaults=True, tag="tracker.incremented"
):
    """One more child is expected."""


class TrackerDecremented(
    TrackerEvent, frozen=True, kw_only=True, omit_defaults=True, tag="tracker.decremented"
):
    """A child finished (counted once per child: see `ax.Tracker.decr`)."""


class TrackerCompleted(
    TrackerEvent, frozen=True, kw_only=True, omit_defaults=True, tag="tracker.completed"
):
    """Every expected child finished; `fan_in_id` is the agent id of the fan-in task queued
    in the same transaction, if one was registered."""

    fan_in_id: UUID | None = None


class SessionEvent(Event, frozen=True, kw_only=True, omit_defaults=True):
    """A change of the conversation session `session_id` (see `ax.AgentSession`). A session is
    not a task: `agent_id` is the session's own id (`agentexec.sessions.session_agent_id`),
    `task_name` is "", and no activity row is made. `version` counts the session's changes
    (this one included); `by` is the agent id of the task whose handler made the change, if
    any. No activity status."""

    session_id: str
    version: int
    by: UUID | None = None


class SessionItemsAdded(
    SessionEvent, frozen=True, kw_only=True, omit_defaults=True, tag="session.items_added"
):
    """`items` (each one item's JSON) were appended, the first at position `index`."""

    index: int
    items: list[msgspec.Raw]


class SessionItemPopped(
    SessionEvent, frozen=True, kw_only=True, omit_defaults=True, tag="session.item_popped"
):
    """The item at position `index`, the latest, was removed; `item` is its JSON."""

    index: int
    item: msgspec.Raw


class SessionCleared(
    SessionEvent, frozen=True, kw_only=True, omit_defaults=True, tag="session.cleared"
):
    """Every item (`count` of them) was removed."""

    count: int


AnyEvent = (
    TaskQueued
    | TaskStarted
    | TaskProgress
    | TaskWaiting
    | TaskCompleted
    | TaskFailed
    | TaskRetried
    | TaskCancelRequested
    | TaskCanceled
    | AgentTurn
    | AgentToolCall
    | AgentHandoff
    | AgentUsage
    | AgentGuardrailTripped
    | AgentCheckpoint
    | AgentDelta
    | PipelineStepStarted
    | PipelineStepFinished
    | TrackerIncremented
    | TrackerDecremented
    | TrackerCompleted
    | SessionItemsAdded
    | SessionItemPopped
    | SessionCleared
)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)


def encode(event: Event) -> bytes:
    """The event's JSON, as every event is recorded: its `message` and `error` texts made
    `recordable` (bounded, storable, credentials redacted), and any other text that no
    database can store (a NUL, a lone surrogate) escaped, so that any event can be encoded.
    An event without a `tenant` gets the one of the task it is about (`agentexec.tenants`).
    An event without a `trace` gets the calling code's trace context, if a span is active
    there (`agentexec.tracing.current_trace`); a given one is bounded like it."""
    changes = {**_recordable_texts(event), **_trace(event), **_tenant(event)}
    if changes:  # one copy of the event for all of them: this is every append's path
        event = msgspec.structs.replace(event, **changes)
    try:
        data = _encoder.encode(event)
    except UnicodeEncodeError:
        return _encoder.encode(_storable(event))
    # msgspec spells NUL `\u0000`; a match may also be an escaped backslash or inside a Raw
    # payload, which `_storable` leaves alone: the rare false alarm costs a second encode.
    if b"\\u0000" in data:
        return _encoder.encode(_storable(event))
    return data


def _tenant(event: Event) -> dict[str, Any]:
    """The `tenant` change `encode` makes: a valid one kept, else the task's."""
    if event.tenant is not None:
        return {} if tenants.valid(event.tenant) else {"tenant": None}
    if isinstance(event, TaskQueued):
        # A task's own tenant, inherited or not, is in its metadata (see `tenants.resolve`).
        tenant = tenants.tenant_of(event.metadata)
        return {} if tenant is None else {"tenant": tenant}
    served = tenants.served()
    if served is None:
        return {}
    if event.agent_id in (served.agent_id, served.parent_id) or isinstance(event, TrackerEvent):
        return {"tenant": served.tenant}
    return {}


def _trace(event: Event) -> dict[str, Any]:
    """The `trace` change `encode` makes: the caller's trace context, or the given one
    bounded."""
    if event.trace is None:
        carrier = tracing.current_trace()
        return {} if carrier is None else {"trace": carrier}
    carrier = tracing.bounded(event.trace)
    return {} if carrier == event.trace else {"trace": carrier}


def _recordable_texts(event: Event) -> dict[str, Any]:
    """The `message` and `error` changes `encode` makes: the texts `recordable`."""
    changes: dict[str, Any] = {}
    if event.message:
        message = recordable(event.message)
        if message is not event.message:
            changes["message"] = message
    error = getattr(event, "error", None)
    if isinstance(error, str) and error:
        shown = recordable(error)
        if shown is not error:
            changes["error"] = shown
    return changes


def _storable(value: Any) -> Any:
    """`value` with every string in it (in fields, lists and dict keys and values) `storable`."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, msgspec.Struct):
        changes = {}
        for name in value.__struct_fields__:
            field = getattr(value, name)
            clean = _storable(field)
            if clean is not field:
                changes[name] = clean
        return msgspec.structs.replace(value, **changes) if changes else value
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    return value


def decode(data: bytes) -> AnyEvent:
    """Decode one event's JSON; raises `EventDecodeError` naming what is wrong."""
    try:
        event: AnyEvent = _decoder.decode(data)
        return event
    except msgspec.DecodeError as e:
        raise EventDecodeError(f"not a valid agentexec event ({e}): {data[:200]!r}") from e


def entry(event: Event) -> dict[Any, Any]:
    """The fields of the stream entry that carries `event`."""
    return {EVENT_FIELD: encode(event)}


def decode_entry(fields: dict[bytes, bytes]) -> AnyEvent:
    """Decode a stream entry's fields (as returned by XREAD/XRANGE)."""
    data = fields.get(EVENT_FIELD)
    if data is None:
        raise EventDecodeError(f"stream entry has no {EVENT_FIELD!r} field: {list(fields)[:5]!r}")
    return decode(data)
