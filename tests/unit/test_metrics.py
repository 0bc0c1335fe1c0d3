"""Task metrics on plain transitions: what each kind of attempt counts, and that importing
agentexec (to enqueue, or the worker's and projector's modules) does not load
prometheus_client."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

import agentexec as ax
from agentexec.activity.state import ActivityState, Transition, evolve
from agentexec.eventlog import Recorded
from agentexec.events import (
    Event,
    TaskCompleted,
    TaskProgress,
    TaskQueued,
    TaskRetried,
    TaskStarted,
)
from agentexec.metrics import LogCollector, QueueCollector, TaskMetrics
from agentexec.positions import Position
from agentexec.runtime import Runtime
from tests.support.metrics import free_port

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def transitions(*events: Event) -> list[Transition]:
    """The transitions of one task's events, as the projection records them."""
    found: list[Transition] = []
    state: ActivityState | None = None
    for seq, event in enumerate(events):
        after = evolve(state, Recorded(Position(1000, seq), event))
        if after is not None and after is not state:
            found.append((state, after))
        state = after
    return found


def seconds(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def test_a_retried_then_redelivered_task_counts_each_attempt() -> None:
    agent = uuid.uuid4()
    registry = CollectorRegistry()
    TaskMetrics(registry).observe(
        transitions(
            TaskQueued(agent_id=agent, task_name="t", queue="q", ts=T0),
            TaskStarted(agent_id=agent, task_name="t", ts=seconds(1)),
            TaskRetried(agent_id=agent, task_name="t", error="x", delay=2, ts=seconds(3)),
            TaskStarted(agent_id=agent, task_name="t", ts=seconds(6)),  # waited 1 s past due
            TaskStarted(agent_id=agent, task_name="t", ts=seconds(20)),  # its worker died
            TaskProgress(agent_id=agent, task_name="t", message="half", percentage=50),
            TaskCompleted(agent_id=agent, task_name="t", ts=seconds(24)),
        )
    )

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"task_name": "t", **labels})

    assert value("agentexec_tasks_total", status="queued") == 1
    assert value("agentexec_tasks_total", status="complete") == 1
    assert value("agentexec_tasks_total", status="running") is None
    for outcome in ("retried", "lost", "complete"):
        assert value("agentexec_task_attempts_total", outcome=outcome) == 1
    # Waits known: 1 s (first start), 1 s (after the backoff); the redelivery's is unknown.
    assert value("agentexec_task_queue_wait_seconds_count") == 2
    assert value("agentexec_task_queue_wait_seconds_sum") == 2
    # Runs: 2 s (retried) and 4 s (completed); the lost attempt has none.
    assert value("agentexec_task_run_seconds_count") == 2
    assert value("agentexec_task_run_seconds_sum") == 6
    assert value("agentexec_task_run_seconds_bucket", le="2.5") == 1


def test_importing_agentexec_to_enqueue_or_run_does_not_load_prometheus_client() -> None:
    code = (
        "import sys, agentexec, agentexec.queue, agentexec.broker, agentexec.monitor, "
        "agentexec.workers.pool, agentexec.projector.projector; "
        "print('prometheus_client' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]


def test_a_scrape_without_redis_answers_and_says_so() -> None:
    settings = ax.CONF.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    runtime = Runtime.from_settings(settings)
    registry = CollectorRegistry()
    registry.register(QueueCollector(runtime, ["default"]))
    registry.register(LogCollector(runtime))
    assert registry.get_sample_value("agentexec_queue_gauges_unavailable") == 1
    assert registry.get_sample_value("agentexec_log_gauges_unavailable") == 1
    assert registry.get_sample_value("agentexec_queue_waiting", {"queue": "default"}) is None
