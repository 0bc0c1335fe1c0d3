"""One task's OpenTelemetry trace across processes: the test process enqueues inside a span
(its SDK exports to memory), a real pool's worker processes run the task (their SDK, set up by
`AGENTEXEC_TRACING_SETUP`, writes spans to files), and a projector in the test process
projects its events. The spans must form one trace: request -> enqueue -> queue wait and the
handler's run -> the agent's turns and tool calls, with the projection under the spans that
recorded the events it applied; and a retried task's attempts, each after its own wait, in the
trace of its enqueue."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from sqlalchemy import create_engine

import agentexec as ax
from agentexec.projector import Projector
from tests.apps import traced
from tests.support.tracing import (
    SETUP,
    in_memory,
    remove_worker_spans,
    span_record,
    worker_spans,
)
from tests.support.waiting import scaled, wait_for


@pytest.fixture
def traced_pool(redis_conf: str) -> Iterator[ax.Pool]:
    ax.CONF.tracing_setup = SETUP  # handed to the worker processes with the pool's settings
    ax.CONF.retry_backoff = 0.05
    prefix = ax.CONF.key_prefix
    traced.pool.start()
    try:
        yield traced.pool
    finally:
        traced.pool.shutdown()
        remove_worker_spans(prefix)


def only(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [s for s in spans if s["name"] == name]
    assert len(found) == 1, f"{len(found)} spans named {name!r} in {[s['name'] for s in spans]}"
    return found[0]


async def test_a_task_has_one_trace_from_enqueue_through_agent_to_projection(
    traced_pool: ax.Pool, tmp_path: Path
) -> None:
    prefix = ax.CONF.key_prefix
    engine = create_engine(f"sqlite:///{tmp_path / 'traced.db'}")
    ax.Base.metadata.create_all(engine)
    try:
        with in_memory() as memory:
            with trace.get_tracer("app").start_as_current_span("POST /research"):
                task = await ax.enqueue("traced_research", traced.ResearchContext(company="Acme"))
            with trace.get_tracer("app").start_as_current_span("POST /flaky"):
                flaky = await ax.enqueue("traced_flaky", traced.Flaky())
            assert await ax.get_result(task, timeout=scaled(60)) == "Acme makes anvils."
            assert await ax.get_result(flaky, timeout=scaled(60)) == "second attempt"
            # The handler's span ends once the task's completion is recorded.
            wait_for(
                lambda: (
                    [s["name"] for s in worker_spans(prefix)].count("run traced_flaky") == 2
                    and "run traced_research" in {s["name"] for s in worker_spans(prefix)}
                ),
                timeout=30,
                what="the workers' spans of both tasks",
            )
            remote = worker_spans(prefix)
            await Projector(engine).catch_up()
            local = [span_record(s, "test") for s in memory.get_finished_spans()]
    finally:
        engine.dispose()

    request = only(local, "POST /research")
    enqueue = only(local, "enqueue traced_research")
    assert enqueue["kind"] == "PRODUCER" and enqueue["parent_id"] == request["span_id"]
    assert enqueue["attributes"]["agentexec.agent_id"] == str(task.agent_id)
    assert enqueue["attributes"]["messaging.destination.name"] == "traced"
    trace_id = request["trace_id"]

    # The worker process continued the enqueuer's trace.
    wait = only(remote, "queue wait traced_research")
    run = only(remote, "run traced_research")
    for span in (wait, run):
        assert span["trace_id"] == trace_id and span["parent_id"] == enqueue["span_id"]
    assert run["kind"] == "CONSUMER" and run["status"] == "UNSET"
    assert run["attributes"]["agentexec.agent_id"] == str(task.agent_id)
    assert wait["end"] <= run["start"] and wait["start"] >= enqueue["start"]

    # The agent's turns and tool calls, children of the handler's span.
    agent = [s for s in remote if s["name"].startswith(("turn ", "tool "))]
    assert sorted(s["name"] for s in agent) == [
        "tool lookup",
        "tool report_status",
        "turn 1 Tracer",
        "turn 2 Tracer",
        "turn 3 Tracer",
    ]
    for span in agent:
        assert span["trace_id"] == trace_id and span["parent_id"] == run["span_id"]
        assert run["start"] <= span["start"] <= span["end"] <= run["end"]
    lookup = only(agent, "tool lookup")
    assert lookup["attributes"]["gen_ai.tool.name"] == "lookup"
    assert lookup["attributes"]["agentexec.turn"] == 1
    assert only(agent, "turn 1 Tracer")["end"] <= lookup["start"]
    assert {s["name"] for s in remote if s["trace_id"] == trace_id} == {
        wait["name"],
        run["name"],
        *(s["name"] for s in agent),
    }

    # The projection of the task's events, under the spans that recorded them: the enqueue
    # (task.queued) and the handler (started, agent events, completed).
    projected = [s for s in local if s["name"] == "project traced_research"]
    assert {s["trace_id"] for s in projected} == {trace_id}
    by_parent = {s["parent_id"]: s["attributes"]["agentexec.event_types"] for s in projected}
    assert set(by_parent) == {enqueue["span_id"], run["span_id"]}
    assert list(by_parent[enqueue["span_id"]]) == ["task.queued"]
    assert {"task.started", "agent.turn", "agent.tool_call", "task.completed"} <= set(
        by_parent[run["span_id"]]
    )

    # The retried task: one trace, each attempt a run under the enqueue, after its own wait.
    enqueue_flaky = only(local, "enqueue traced_flaky")
    attempts = sorted(
        (s for s in remote if s["name"] == "run traced_flaky"),
        key=lambda s: s["attributes"]["agentexec.attempt"],
    )
    waits = sorted(
        (s for s in remote if s["name"] == "queue wait traced_flaky"), key=lambda s: s["start"]
    )
    assert [s["attributes"]["agentexec.attempt"] for s in attempts] == [1, 2]
    assert [s["status"] for s in attempts] == ["ERROR", "UNSET"]
    assert len(waits) == 2
    for span in (*attempts, *waits):
        assert span["trace_id"] == enqueue_flaky["trace_id"] != trace_id
        assert span["parent_id"] == enqueue_flaky["span_id"]
    assert waits[0]["end"] <= attempts[0]["start"] <= attempts[0]["end"]
    assert attempts[0]["start"] < waits[1]["start"] <= waits[1]["end"] <= attempts[1]["start"]
