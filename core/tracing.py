"""OpenTelemetry traces of tasks, through the OpenTelemetry API only (see docs/tracing.md).

Nothing here configures an SDK: without one every span is a no-op and no event carries a
trace context. The application configures the SDK itself, or names a function that does with
`AGENTEXEC_TRACING_SETUP`, which every agentexec process calls when it starts (`setup`).

The trace context of the code that records an event travels in the event (its `trace`
field, filled in by `agentexec.events.encode` from `current_trace`), so that a worker in
another process continues the enqueuer's trace and the projector adds its spans to it.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import trace
from opentelemetry.context import Context, get_current
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from .config import import_setting
from .errors import ConfigurationError

if TYPE_CHECKING:
    from .events import TaskQueued

__all__ = [
    "MAX_TRACE_CHARS",
    "AgentSpans",
    "bounded",
    "context_of",
    "current_trace",
    "enqueueing",
    "failed",
    "flush",
    "handling",
    "projected",
    "setup",
]

logger = logging.getLogger(__name__)

MAX_TRACE_CHARS = 1024
"""Most characters (keys and values together) an event's trace context may carry: W3C
`traceparent` takes 55 and `tracestate` at most 512, so a context within the standard's own
limits always fits; baggage beyond the rest is dropped."""
MAX_TRACE_KEYS = 8
PRIMARY = "traceparent"
SYSTEM = "agentexec"

_tracer_of: tuple[trace.TracerProvider, trace.Tracer] | None = None


def _tracer() -> trace.Tracer:
    """The agentexec tracer of the current global tracer provider (a no-op one until an SDK
    is configured); looked up again when the provider changes."""
    global _tracer_of
    provider = trace.get_tracer_provider()
    if _tracer_of is None or _tracer_of[0] is not provider:
        _tracer_of = (provider, provider.get_tracer(SYSTEM))
    return _tracer_of[1]


def bounded(carrier: Mapping[Any, Any]) -> dict[str, str] | None:
    """`carrier` cut to what an event may carry: string entries only, at most
    `MAX_TRACE_KEYS` of them and `MAX_TRACE_CHARS` characters in all, `traceparent` first and
    then the shortest ones (a longer entry is dropped whole, never cut). None when nothing
    fits, or when the carrier has no `traceparent` fitting (a context without it is useless)."""
    entries = [(k, v) for k, v in carrier.items() if isinstance(k, str) and isinstance(v, str)]
    entries.sort(key=lambda kv: (kv[0] != PRIMARY, len(kv[0]) + len(kv[1]), kv[0]))
    kept: dict[str, str] = {}
    size = 0
    for key, value in entries:
        if len(kept) == MAX_TRACE_KEYS:
            break
        size += len(key) + len(value)
        if size > MAX_TRACE_CHARS:
            break
        kept[key] = value
    return kept if PRIMARY in kept else None


def current_trace() -> dict[str, str] | None:
    """The trace context of the calling code, as an event carries it (see `bounded`); None
    when no span is active there, as always without an SDK."""
    # An empty context (no span, no baggage) is the common case: every event of an
    # application without tracing is encoded through here.
    if not get_current() or not trace.get_current_span().get_span_context().is_valid:
        return None
    from opentelemetry import propagate  # loads the configured propagators: only when used

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return bounded(carrier)


def context_of(carrier: Mapping[Any, Any] | None) -> Context | None:
    """The context an event's trace `carrier` holds (bounded as when it was written: an
    oversized carrier from elsewhere is cut first), or None when it holds no valid span."""
    if not carrier:
        return None
    kept = bounded(carrier)
    if kept is None:
        return None
    from opentelemetry import propagate

    context = propagate.extract(kept)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


@contextlib.contextmanager
def enqueueing(event: TaskQueued) -> Iterator[Span]:
    """The producer span of queuing `event`'s task, current while it is appended: the event
    is encoded inside it and so carries its context. It starts when the event was made (its
    `ts`), where the task's queue wait starts too."""
    attributes = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "send",
        "messaging.destination.name": event.queue or "",
        "agentexec.task_name": event.task_name,
        "agentexec.agent_id": str(event.agent_id),
    }
    with _tracer().start_as_current_span(
        f"enqueue {event.task_name}",
        kind=SpanKind.PRODUCER,
        attributes=attributes,
        start_time=_ns(event.ts),
    ) as span:
        yield span


_open_spans: ContextVar[set[Span] | None] = ContextVar("agentexec_open_spans", default=None)


@contextlib.contextmanager
def handling(event: TaskQueued, worker: str) -> Iterator[Span]:
    """The consumer span of one attempt of `event`'s task, current while the worker starts,
    runs and ends it: a child of the enqueuer's span (the event's trace context) when there
    is one, preceded by a `queue wait` span from the enqueue (or retry) until now.

    Spans of the run (`AgentSpans`) still open when it ends are ended with it, as failed."""
    tracer = _tracer()
    parent = context_of(event.trace)
    now = time.time_ns()
    waited = max(0, now - _ns(event.ts))
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "process",
        "messaging.destination.name": event.queue or "",
        "agentexec.task_name": event.task_name,
        "agentexec.agent_id": str(event.agent_id),
        "agentexec.attempt": event.attempt,
        "agentexec.worker": worker,
        "agentexec.queue_wait_seconds": waited / 1e9,
    }
    if parent is not None:
        wait = tracer.start_span(
            f"queue wait {event.task_name}",
            context=parent,
            start_time=now - waited,
            attributes={"agentexec.agent_id": str(event.agent_id)},
        )
        wait.end(end_time=now)
    spans: set[Span] = set()
    token = _open_spans.set(spans)
    try:
        with tracer.start_as_current_span(
            f"run {event.task_name}",
            context=parent,
            kind=SpanKind.CONSUMER,
            start_time=now,
            attributes=attributes,
        ) as span:
            yield span
    finally:
        _open_spans.reset(token)
        for left in list(spans):
            left.set_status(Status(StatusCode.ERROR, "the run ended before this span did"))
            left.end()


def failed(error: BaseException, description: str) -> None:
    """Mark the current span (the handler's) as failed with `error`."""
    span = trace.get_current_span()
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, description))


class _Recorded(Protocol):
    @property
    def event(self) -> Any: ...


def projected(batch: Iterable[_Recorded], started_ns: int, projector: str) -> int:
    """Spans of a committed projection batch (from `started_ns` to now), one per trace
    context its events carry, each a child of that context (the span that recorded those
    events) so that the task's trace shows its projection. Returns how many were made."""
    groups: dict[str, list[Any]] = {}
    for recorded in batch:
        carrier = recorded.event.trace
        if carrier and isinstance(carrier.get(PRIMARY), str):
            groups.setdefault(carrier[PRIMARY], []).append(recorded.event)
    if not groups:
        return 0
    tracer = _tracer()
    now = time.time_ns()
    made = 0
    for grouped in groups.values():
        parent = context_of(grouped[-1].trace)
        if parent is None:
            continue
        kinds = sorted({type(e).__struct_config__.tag for e in grouped})
        span = tracer.start_span(
            f"project {grouped[-1].task_name or 'events'}",
            context=parent,
            kind=SpanKind.CONSUMER,
            start_time=started_ns,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.operation.type": "process",
                "messaging.batch.message_count": len(grouped),
                "agentexec.agent_id": str(grouped[-1].agent_id),
                "agentexec.projector": projector,
                "agentexec.event_types": kinds,
            },
        )
        span.end(end_time=now)
        made += 1
    return made


class AgentSpans:
    """Spans of one agent run's model turns and tool calls, children of the span current
    where each starts (the task's handler span in a worker). A turn spans the model call; a
    tool call its execution. Spans left open when the handler span ends are ended by it."""

    def __init__(self) -> None:
        self._turn: Span | None = None
        self._tools: dict[tuple[str, str], list[Span]] = {}

    def turn_started(self, agent: str, turn: int) -> None:
        self._end_turn()
        self._turn = self._start(
            f"turn {turn} {agent}",
            {"gen_ai.operation.name": "chat", "gen_ai.agent.name": agent, "agentexec.turn": turn},
        )

    def turn_ended(self, input_tokens: int, output_tokens: int) -> None:
        if self._turn is not None:
            self._turn.set_attribute("gen_ai.usage.input_tokens", input_tokens)
            self._turn.set_attribute("gen_ai.usage.output_tokens", output_tokens)
        self._end_turn()

    def tool_started(self, agent: str, turn: int, tool: str, call_id: str) -> None:
        span = self._start(
            f"tool {tool}",
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.agent.name": agent,
                "gen_ai.tool.name": tool,
                "gen_ai.tool.call.id": call_id,
                "agentexec.turn": turn,
            },
        )
        self._tools.setdefault((tool, call_id), []).append(span)

    def tool_ended(self, tool: str, call_id: str) -> None:
        started = self._tools.get((tool, call_id))
        if started:
            self._finish(started.pop(0))
            if not started:
                del self._tools[(tool, call_id)]

    def _start(self, name: str, attributes: dict[str, Any]) -> Span:
        span = _tracer().start_span(name, attributes=attributes)
        spans = _open_spans.get()
        if spans is not None and span.is_recording():
            spans.add(span)
        return span

    def _end_turn(self) -> None:
        if self._turn is not None:
            self._finish(self._turn)
            self._turn = None

    @staticmethod
    def _finish(span: Span) -> None:
        spans = _open_spans.get()
        if spans is not None:
            spans.discard(span)
        span.end()


_set_up: set[str] = set()


def setup(path: str | None, process: str) -> None:
    """Call the function `path` (`AGENTEXEC_TRACING_SETUP`, "package.module:function") names
    with `process` ("worker", "pool", "projector" or "api"), once per process and path, so
    that it configures the OpenTelemetry SDK there. Nothing when `path` is None.

    Raises `ConfigurationError` when it cannot be imported, is not a function of one
    argument, or raises."""
    if not path or path in _set_up:
        return
    function = import_setting("tracing_setup", path, "a function")
    if not _takes_one_argument(function):
        raise ConfigurationError(
            f"AGENTEXEC_TRACING_SETUP has value {path!r}, which is not a function of one "
            "argument; define it as `def setup(process: str) -> None` (process is 'worker', "
            "'pool', 'projector' or 'api')."
        )
    try:
        function(process)
    except Exception as e:
        raise ConfigurationError(
            f"AGENTEXEC_TRACING_SETUP {path!r} raised in the {process} process: {e!r}; fix the "
            "function or unset the setting."
        ) from e
    _set_up.add(path)
    logger.info("tracing: %s configured the %s process", path, process)


def _takes_one_argument(function: object) -> bool:
    if not callable(function):
        return False
    try:
        inspect.signature(function).bind("worker")
    except TypeError:
        return False
    except ValueError:  # no signature to read (some builtins): let the call tell
        return True
    return True


def flush(timeout_millis: int = 5000) -> None:
    """Export the spans the SDK still buffers (a worker process ends with `os._exit`, which
    skips the SDK's own exit hook). Nothing without an SDK."""
    force_flush: Callable[..., object] | None = getattr(
        trace.get_tracer_provider(), "force_flush", None
    )
    if force_flush is not None:
        try:
            force_flush(timeout_millis)
        except Exception:  # a process's exit: an exporter's failure is only logged
            logger.exception("tracing: flushing spans failed")
