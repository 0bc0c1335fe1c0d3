"""OpenTelemetry SDK set-ups for tests: an in-memory exporter in the test process, and a file
exporter in worker processes (configured by `setup`, named by `AGENTEXEC_TRACING_SETUP`),
whose spans the test reads back (`worker_spans`) in the same shape as its own (`span_record`).

Worker processes learn where to write from their settings: the spans of namespace `prefix`
go to `spans_dir(prefix)`, one file per process.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

SETUP = "tests.support.tracing:setup"


def spans_dir(prefix: str) -> Path:
    return Path(tempfile.gettempdir()) / "agentexec-test-spans" / prefix


def span_record(span: ReadableSpan, process: str) -> dict[str, Any]:
    """What a test asserts about a span, as plain JSON values."""
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": None if span.parent is None else f"{span.parent.span_id:016x}",
        "attributes": dict(span.attributes or {}),
        "start": span.start_time,
        "end": span.end_time,
        "status": span.status.status_code.name,
        "process": process,
    }


class FileSpanExporter(SpanExporter):
    """Appends each span as one JSON line to `path`."""

    def __init__(self, path: Path, process: str) -> None:
        self.path = path
        self.process = process

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(
            json.dumps(span_record(s, self.process), default=list) + "\n" for s in spans
        )
        with self.path.open("a") as out:
            out.write(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def setup(process: str) -> None:
    """The `AGENTEXEC_TRACING_SETUP` of the tracing tests: a worker process writes its spans
    to a file under `spans_dir` of its namespace; the test process (the pool, its projector)
    keeps the in-memory provider `in_memory` installed."""
    if process != "worker":
        return
    from agentexec.config import CONF  # the pool's settings, copied in by the worker

    directory = spans_dir(CONF.key_prefix)
    directory.mkdir(parents=True, exist_ok=True)
    provider = TracerProvider(resource=Resource.create({"service.name": "agentexec-worker"}))
    exporter = FileSpanExporter(directory / f"{os.getpid()}.jsonl", process)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def worker_spans(prefix: str) -> list[dict[str, Any]]:
    """Every span the worker processes of namespace `prefix` have written so far."""
    records = []
    for path in sorted(spans_dir(prefix).glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.endswith("}"):  # a line being written is not read yet
                records.append(json.loads(line))
    return records


def remove_worker_spans(prefix: str) -> None:
    directory = spans_dir(prefix)
    for path in directory.glob("*.jsonl"):
        path.unlink()
    if directory.exists():
        directory.rmdir()


def _install(provider: TracerProvider | None) -> None:
    # The API sets its global provider once per process; its own test utilities reset these
    # two globals the same way so that each test gets a provider of its own, and none after.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    if provider is not None:
        trace.set_tracer_provider(provider)


@contextmanager
def in_memory() -> Iterator[InMemorySpanExporter]:
    """An SDK tracer provider exporting to memory, installed globally in this process until
    the block ends (then no provider is set again: tracing is a no-op)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "agentexec-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _install(provider)
    try:
        yield exporter
    finally:
        _install(None)
        provider.shutdown()
