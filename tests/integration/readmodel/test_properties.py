"""Property: however a log is delivered (split into any batches, redelivered, with the
checkpoint moved back), the read model ends up the same as applying it once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import StaticPool

from agentexec import events
from agentexec.activity.models import Base
from agentexec.eventlog import Recorded as Applied
from agentexec.events import (
    Event,
    TaskCanceled,
    TaskCompleted,
    TaskFailed,
    TaskProgress,
    TaskQueued,
    TaskRetried,
    TaskStarted,
)
from agentexec.projector import checkpoints
from agentexec.projector.projector import commit

from .workload import snapshot

AGENTS = [uuid.UUID(int=i + 1, version=4) for i in range(3)]
BASE = datetime(2024, 1, 15, 10, tzinfo=UTC)
STREAM = "prop:events"


def make(kind: str, agent: uuid.UUID, pct: int, i: int) -> Event:
    common = {"agent_id": agent, "ts": BASE + timedelta(seconds=i), "message": f"{kind} {i}"}
    if kind == "queued":
        return TaskQueued(task_name="t", queue="q", **common)
    if kind == "started":
        return TaskStarted(task_name="t", **common)
    if kind == "progress":
        return TaskProgress(task_name="", percentage=pct, **common)
    if kind == "completed":
        return TaskCompleted(task_name="t", percentage=100, **common)
    if kind == "failed":
        return TaskFailed(task_name="t", error=f"e{i}", **common)
    if kind == "retried":  # timing: attempts, retries, waits and runs must be exact too
        return TaskRetried(task_name="t", error=f"r{i}", delay=0.5, **common)
    return TaskCanceled(task_name="t", **common)


logs = st.lists(
    st.tuples(
        st.sampled_from(
            ["queued", "started", "progress", "retried", "completed", "failed", "canceled"]
        ),
        st.integers(0, len(AGENTS) - 1),
        st.integers(0, 100),
    ),
    min_size=1,
    max_size=25,
).map(
    lambda items: [
        Applied(f"1000-{i}", (e := make(kind, AGENTS[a], pct, i)), events.encode(e))
        for i, (kind, a, pct) in enumerate(items)
    ]
)

# A delivery: a window of the log (its start capped so as to leave no gap), and whether the
# checkpoint was first moved back to the window's start (as a careless operator might), so
# that applied events come again.
deliveries = st.lists(st.tuples(st.integers(0, 30), st.integers(1, 30), st.booleans()), max_size=8)


def fresh_engine() -> Engine:
    engine = create_engine("sqlite://", poolclass=StaticPool)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        checkpoints.load(conn, STREAM, "test")
    return engine


def deliver(engine: Engine, batch: list[Applied], position: str) -> str:
    if not batch:
        return position
    commit(engine, STREAM, "test", position, batch, batch[-1].event_id)
    return checkpoints.later(batch[-1].event_id, position)


def moved_back(engine: Engine, position: str) -> None:
    with engine.begin() as conn:
        checkpoints.reset(conn, STREAM, position, "operator")


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    made: list[Engine] = []
    yield made
    for engine in made:
        engine.dispose()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(log=logs, plan=deliveries)
def test_any_delivery_gives_the_same_tables(
    engines: list[Engine], log: list[Applied], plan: list[tuple[int, int, bool]]
) -> None:
    once = fresh_engine()
    engines.append(once)
    deliver(once, log, checkpoints.ORIGIN)

    engine = fresh_engine()
    engines.append(engine)
    position = checkpoints.ORIGIN
    for start, length, rewind in plan:
        # Redis delivers from the checkpoint on, or again from earlier: never with a gap.
        done = sum(1 for a in log if not checkpoints.after(a.event_id, position))
        start = min(start, done)
        window = log[start : start + length]
        if rewind and window:
            position = f"{window[0].position[0]}-{window[0].position[1] - 1}"
            moved_back(engine, position)
        position = deliver(engine, window, position)
    deliver(engine, log, position)  # whatever is left, and everything again

    assert snapshot(engine) == snapshot(once)
