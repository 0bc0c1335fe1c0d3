"""`agentexec.tracing` in one process: the trace context an event carries (inject, extract,
its size bound, old events without it), the spans of a task's attempt and of an agent run
(with the SDK's in-memory exporter), no-op behaviour without an SDK, and the setup hook."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import msgspec
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import agentexec as ax
from agentexec import events, tracing
from agentexec.errors import ConfigurationError
from agentexec.eventlog import Recorded
from agentexec.positions import Position
from tests.support.tracing import in_memory

calls: list[str] = []


def record_call(process: str) -> None:
    calls.append(process)


def no_argument() -> None:
    raise AssertionError("never called")


def broken(process: str) -> None:
    raise RuntimeError("no collector configured")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with in_memory() as exporter:
        yield exporter


def queued(**fields: object) -> events.TaskQueued:
    return events.TaskQueued(agent_id=uuid.uuid4(), task_name="research", queue="q", **fields)


def test_an_event_recorded_without_a_trace_decodes_and_encodes_as_before() -> None:
    old = (
        b'{"type":"task.queued","agent_id":"6f1c2a2e-8f3b-4a4e-9a52-0c1d2e3f4a5b",'
        b'"task_name":"research","ts":"2026-01-01T00:00:00Z","queue":"q"}'
    )
    event = events.decode(old)
    assert event.trace is None
    assert events.encode(event) == old


def test_an_event_carries_the_context_of_the_span_that_recorded_it(
    spans: InMemorySpanExporter,
) -> None:
    with trace.get_tracer("test").start_as_current_span("request") as span:
        data = events.encode(queued())
    event = events.decode(data)
    assert event.trace is not None
    ids = span.get_span_context()
    assert event.trace["traceparent"].startswith(f"00-{ids.trace_id:032x}-{ids.span_id:016x}-")

    context = tracing.context_of(event.trace)
    assert context is not None
    extracted = trace.get_current_span(context).get_span_context()
    assert (extracted.trace_id, extracted.span_id, extracted.is_remote) == (
        ids.trace_id,
        ids.span_id,
        True,
    )


def test_feeds_do_not_show_the_trace_context() -> None:
    from agentexec.api.messages import Delivery, feed_schemas

    event = events.TaskProgress(
        agent_id=uuid.uuid4(), task_name="t", trace={"traceparent": f"00-{'1' * 32}-{'2' * 16}-01"}
    )
    assert b"trace" not in Delivery(Position.parse("1-0"), event).payload()
    assert "trace" not in feed_schemas()["FeedTaskProgress"]["properties"]


def test_a_given_trace_is_kept_and_none_is_added_outside_a_span(
    spans: InMemorySpanExporter,
) -> None:
    given = {"traceparent": f"00-{'1' * 32}-{'2' * 16}-01"}
    with trace.get_tracer("test").start_as_current_span("other"):
        assert events.decode(events.encode(queued(trace=given))).trace == given
    assert events.decode(events.encode(queued())).trace is None


def test_the_trace_context_is_bounded() -> None:
    parent = f"00-{'a' * 32}-{'b' * 16}-01"
    state = "vendor=" + "x" * 400
    carrier = {"traceparent": parent, "tracestate": state, "baggage": "k=" + "v" * 5000}
    assert tracing.bounded(carrier) == {"traceparent": parent, "tracestate": state}
    many = {"traceparent": parent, **{f"k{i}": "v" for i in range(20)}}
    kept = tracing.bounded(many)
    assert kept is not None and len(kept) == tracing.MAX_TRACE_KEYS and "traceparent" in kept
    assert tracing.bounded({"tracestate": state}) is None
    assert tracing.bounded({"traceparent": "0" * (tracing.MAX_TRACE_CHARS + 1)}) is None
    assert tracing.bounded({"traceparent": parent, "n": 3}) == {"traceparent": parent}

    # Bounded when encoded, and when read from an event some other producer wrote.
    event = events.decode(events.encode(queued(trace=carrier)))
    assert event.trace == {"traceparent": parent, "tracestate": state}
    written = msgspec.json.encode({**msgspec.to_builtins(queued()), "trace": carrier})
    oversized = events.decode(written)
    assert oversized.trace == carrier
    context = tracing.context_of(oversized.trace)
    assert context is not None
    assert trace.get_current_span(context).get_span_context().trace_id == int("a" * 32, 16)
    assert tracing.context_of({"traceparent": "not a trace"}) is None


def test_without_an_sdk_nothing_is_traced_or_carried() -> None:
    assert not hasattr(trace.get_tracer_provider(), "force_flush")  # no SDK provider set
    with tracing.enqueueing(queued()) as span:
        assert not span.is_recording()
        assert tracing.current_trace() is None
        assert events.decode(events.encode(queued())).trace is None
    with tracing.handling(queued(), "w1") as span:
        assert not span.is_recording()
        tracing.AgentSpans().turn_started("Agent", 1)
    tracing.flush()


def test_a_worker_without_an_sdk_passes_the_enqueuers_context_on() -> None:
    given = {"traceparent": f"00-{'1' * 32}-{'2' * 16}-01"}
    with tracing.handling(queued(trace=given), "w1") as span:
        assert not span.is_recording()
        started = events.TaskStarted(agent_id=uuid.uuid4(), task_name="research")
        assert events.decode(events.encode(started)).trace == given


def test_agentexec_runs_without_the_sdk_installed() -> None:
    code = (
        "import sys; sys.modules['opentelemetry.sdk'] = None\n"
        "import uuid, agentexec\n"
        "from agentexec import events, tracing\n"
        "e = events.TaskQueued(agent_id=uuid.uuid4(), task_name='t', queue='q')\n"
        "with tracing.enqueueing(e), tracing.handling(e, 'w'):\n"
        "    assert b'trace' not in events.encode(e)\n"
        "tracing.flush()\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


def test_an_attempt_continues_the_enqueuers_trace(spans: InMemorySpanExporter) -> None:
    event = queued()
    with tracing.enqueueing(event):
        data = events.encode(event)
    recorded = events.decode(data)
    assert isinstance(recorded, events.TaskQueued)
    recorded = msgspec.structs.replace(recorded, ts=recorded.ts - timedelta(seconds=2))
    with tracing.handling(recorded, "w1"):
        agent = tracing.AgentSpans()
        agent.turn_started("Researcher", 1)
        agent.turn_ended(input_tokens=10, output_tokens=3)
        agent.tool_started("Researcher", 1, "search", "call-1")
        agent.tool_ended("search", "call-1")
        agent.turn_started("Researcher", 2)  # never ends: the run raised
        started = events.decode(events.encode(events.TaskStarted(**_identity(event))))

    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert set(by_name) == {
        "enqueue research",
        "queue wait research",
        "run research",
        "turn 1 Researcher",
        "tool search",
        "turn 2 Researcher",
    }
    enqueue, wait, run = (
        by_name[n] for n in ("enqueue research", "queue wait research", "run research")
    )
    assert enqueue.kind is trace.SpanKind.PRODUCER and run.kind is trace.SpanKind.CONSUMER
    root = enqueue.get_span_context()
    for child in (wait, run):
        assert child.parent is not None and child.parent.span_id == root.span_id
        assert child.get_span_context().trace_id == root.trace_id
    assert wait.end_time is not None and wait.start_time is not None
    assert 1.9e9 < wait.end_time - wait.start_time < 60e9
    assert run.attributes is not None and run.attributes["agentexec.worker"] == "w1"
    for name in ("turn 1 Researcher", "tool search", "turn 2 Researcher"):
        parent = by_name[name].parent
        assert parent is not None and parent.span_id == run.get_span_context().span_id
    assert by_name["turn 1 Researcher"].attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.agent.name": "Researcher",
        "agentexec.turn": 1,
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 3,
    }
    assert by_name["turn 2 Researcher"].status.status_code is trace.StatusCode.ERROR
    # Events recorded during the attempt carry the handler span's context.
    assert started.trace is not None
    assert f"{run.get_span_context().span_id:016x}" in started.trace["traceparent"]


def test_a_failed_attempt_marks_its_span(spans: InMemorySpanExporter) -> None:
    with tracing.handling(queued(), "w1"):
        tracing.failed(ValueError("bad input"), "ValueError: bad input")
    (run,) = spans.get_finished_spans()
    assert run.status.status_code is trace.StatusCode.ERROR
    assert run.status.description == "ValueError: bad input"
    assert [e.name for e in run.events] == ["exception"]


def test_projection_spans_join_the_traces_of_their_events(spans: InMemorySpanExporter) -> None:
    tracer = trace.get_tracer("test")
    batch = []
    for task in ("one", "two"):
        with tracer.start_as_current_span(f"handler {task}"):
            for _ in range(2):
                event = events.TaskProgress(agent_id=uuid.uuid4(), task_name=task, message="x")
                batch.append(Recorded(f"{len(batch) + 1}-0", events.decode(events.encode(event))))
    untraced = events.TaskProgress(agent_id=uuid.uuid4(), task_name="three")
    batch.append(Recorded("9-0", untraced))
    started = time.time_ns()
    assert tracing.projected(batch, started, "projector-1") == 2
    finished = {s.name: s for s in spans.get_finished_spans()}
    for task in ("one", "two"):
        project, handler = finished[f"project {task}"], finished[f"handler {task}"]
        assert project.parent is not None
        assert project.parent.span_id == handler.get_span_context().span_id
        assert project.start_time == started
        assert project.attributes is not None
        assert project.attributes["messaging.batch.message_count"] == 2
        assert project.attributes["agentexec.event_types"] == ("task.progress",)
        assert project.attributes["agentexec.projector"] == "projector-1"


def test_the_setup_hook_is_called_once_per_process() -> None:
    calls.clear()
    tracing.setup(f"{__name__}:record_call", "projector")
    tracing.setup(f"{__name__}:record_call", "api")
    tracing.setup(None, "worker")
    assert calls == ["projector"]


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("tests.unit.nowhere:setup", "cannot be imported"),
        (f"{__name__}:missing", "cannot be imported"),
        (f"{__name__}:no_argument", "def setup(process: str) -> None"),
        (f"{__name__}:calls", "not a function of one argument"),
        (f"{__name__}:broken", "raised in the worker process: RuntimeError"),
    ],
)
def test_a_bad_setup_hook_is_refused_with_the_fix(path: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=r"AGENTEXEC_TRACING_SETUP") as raised:
        tracing.setup(path, "worker")
    assert says in str(raised.value) and path in str(raised.value)


def test_the_setting_takes_an_import_path() -> None:
    ax.CONF.tracing_setup = "myapp.telemetry:setup"
    with pytest.raises(ValueError, match=r"AGENTEXEC_TRACING_SETUP has value 'myapp\.telemetry'"):
        ax.CONF.tracing_setup = "myapp.telemetry"


def _identity(event: events.TaskQueued) -> dict[str, object]:
    return {"agent_id": event.agent_id, "task_name": event.task_name}
