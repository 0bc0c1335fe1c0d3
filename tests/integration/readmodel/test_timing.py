"""Timing on every activity, against a real pool and projector on SQLite and PostgreSQL:
each value is checked against the timestamps of the task's own events, and a rebuild from
the archive gives the same columns."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec import events
from agentexec.projector import Projector
from agentexec.projector.rebuild import rebuild
from tests.apps.basic import Echo, Flaky, Record
from tests.support.logs import log_entries
from tests.support.waiting import scaled

from .workload import snapshot


async def log_of(agent_id: object) -> list[events.AnyEvent]:
    entries = await log_entries()
    return [e for e in (events.decode_entry(f) for _, f in entries) if e.agent_id == agent_id]


def wait(since: datetime, until: datetime) -> float:
    return (until - since).total_seconds()


def of(log: list[events.AnyEvent], kind: type[Any]) -> list[Any]:
    return [e for e in log if isinstance(e, kind)]


async def test_a_retried_task_is_timed_from_its_events(
    fast_retries: None, running_pool: ax.Pool, projector: Projector, engine: Engine, tmp_path: Path
) -> None:
    task = await ax.enqueue("flaky", Flaky(path=str(tmp_path / "n"), failures=2))
    assert await ax.get_result(task, timeout=scaled(30)) == 3
    # One event per batch: each attempt is continued from the row the batch before stored;
    # the rebuild below applies them all in one batch, and must give the same row.
    projector.batch_size = 1
    await projector.catch_up()
    log = await log_of(task.agent_id)
    (queued,) = of(log, events.TaskQueued)
    starts = of(log, events.TaskStarted)
    retried = of(log, events.TaskRetried)
    (completed,) = of(log, events.TaskCompleted)
    with Session(engine) as s:
        detail = ax.activity.detail(s, task.agent_id)
    assert detail is not None

    dues = [queued.ts] + [r.ts + timedelta(seconds=r.delay) for r in retried]
    ends = [r.ts for r in retried] + [completed.ts]
    assert [a.attempt for a in detail.attempt_history] == [1, 2, 3]
    assert [a.worker for a in detail.attempt_history] == [s.worker for s in starts]
    assert [a.started_at for a in detail.attempt_history] == [s.ts for s in starts]
    assert [a.finished_at for a in detail.attempt_history] == ends
    for attempt, due, start, end in zip(detail.attempt_history, dues, starts, ends, strict=True):
        assert attempt.due_at == pytest.approx(due, abs=timedelta(microseconds=1))
        assert attempt.queue_wait_seconds == pytest.approx(max(0, wait(due, start.ts)), abs=1e-5)
        assert attempt.run_seconds == pytest.approx(wait(start.ts, end), abs=1e-6)
    assert [a.outcome for a in detail.attempt_history] == ["retried", "retried", "complete"]
    assert [a.error for a in detail.attempt_history] == [
        "ConnectionError: run 1 failed",
        "ConnectionError: run 2 failed",
        None,
    ]

    assert (detail.attempts, detail.retries, detail.error) == (3, 2, None)
    assert (detail.queued_at, detail.started_at, detail.finished_at) == (
        queued.ts,
        starts[-1].ts,
        completed.ts,
    )
    assert detail.worker == starts[-1].worker
    assert detail.queue_wait_seconds == pytest.approx(
        sum(a.queue_wait_seconds or 0 for a in detail.attempt_history), abs=1e-5
    )
    assert detail.run_seconds == pytest.approx(
        sum(wait(s.ts, e) for s, e in zip(starts, ends, strict=True)), abs=1e-5
    )

    with Session(engine) as s:
        (item,) = ax.activity.list(s).items
    shown = ("queued_at", "started_at", "finished_at", "attempts", "retries", "worker")
    shown += ("queue_wait_seconds", "run_seconds", "error", "parent_id")
    assert {k: getattr(item, k) for k in shown} == {k: getattr(detail, k) for k in shown}

    before = snapshot(engine)
    await rebuild(engine)
    assert snapshot(engine) == before


async def test_a_task_that_fails_for_good_keeps_its_final_error(
    fast_retries: None, running_pool: ax.Pool, projector: Projector, engine: Engine, tmp_path: Path
) -> None:
    task = await ax.enqueue("flaky", Flaky(path=str(tmp_path / "n"), failures=5))
    with pytest.raises(ax.TaskFailedError):
        await ax.get_result(task, timeout=scaled(30))
    await projector.catch_up()
    log = await log_of(task.agent_id)
    (failed,) = of(log, events.TaskFailed)
    with Session(engine) as s:
        detail = ax.activity.detail(s, task.agent_id)
    assert detail is not None
    assert (detail.status, detail.attempts, detail.retries) == ("error", 3, 2)
    assert detail.error == failed.error == "ConnectionError: run 3 failed"
    assert [a.outcome for a in detail.attempt_history] == ["retried", "retried", "error"]
    assert detail.finished_at == detail.attempt_history[-1].finished_at == failed.ts

    before = snapshot(engine)
    await rebuild(engine)
    assert snapshot(engine) == before


async def test_an_attempt_whose_worker_died_is_lost(
    running_pool: ax.Pool, projector: Projector, engine: Engine, tmp_path: Path
) -> None:
    task = await ax.enqueue("die", Record(path=str(tmp_path / "marker"), label="x"))
    assert "survived" in await ax.get_result(task, timeout=scaled(60))
    await projector.catch_up()
    log = await log_of(task.agent_id)
    first, second = of(log, events.TaskStarted)
    with Session(engine) as s:
        detail = ax.activity.detail(s, task.agent_id)
    assert detail is not None
    lost, ran = detail.attempt_history
    assert (lost.outcome, lost.finished_at, lost.run_seconds) == ("lost", None, None)
    assert lost.started_at == first.ts and lost.worker == first.worker
    assert (ran.outcome, ran.due_at, ran.queue_wait_seconds) == ("complete", None, None)
    assert (ran.started_at, ran.worker) == (second.ts, second.worker)
    assert (detail.attempts, detail.retries) == (2, 0)
    assert detail.run_seconds == ran.run_seconds
    assert detail.queue_wait_seconds == lost.queue_wait_seconds


async def test_a_quick_task_and_an_activity_created_by_hand(
    running_pool: ax.Pool, projector: Projector, engine: Engine
) -> None:
    task = await ax.enqueue("echo", Echo(text="hi"))
    await ax.get_result(task, timeout=scaled(30))
    manual = ax.activity.create("by-hand")
    await projector.catch_up()
    with Session(engine) as s:
        detail = ax.activity.detail(s, task.agent_id)
        created = ax.activity.detail(s, manual)
    assert detail is not None and created is not None
    assert detail.queue_wait_seconds is not None and detail.queue_wait_seconds >= 0
    assert detail.run_seconds is not None and detail.run_seconds >= 0
    (started,) = of(await log_of(task.agent_id), events.TaskStarted)
    assert detail.worker == started.worker and started.worker
    assert (created.attempts, created.attempt_history, created.queue_wait_seconds) == (0, [], None)
    assert created.queued_at == created.created_at


async def test_a_delayed_task_waits_from_when_it_was_due(
    running_pool: ax.Pool, projector: Projector, engine: Engine
) -> None:
    """`enqueue(..., delay=)`: the delay is not queue wait; the wait runs from the due time."""
    task = await ax.enqueue("echo", Echo(text="later"), delay=1.0)
    await ax.get_result(task, timeout=scaled(30))
    await projector.catch_up()
    log = await log_of(task.agent_id)
    (queued,) = of(log, events.TaskQueued)
    (started,) = of(log, events.TaskStarted)
    assert queued.not_before is not None
    assert wait(queued.ts, queued.not_before) == pytest.approx(1.0, abs=0.01)
    with Session(engine) as s:
        detail = ax.activity.detail(s, task.agent_id)
    assert detail is not None
    (attempt,) = detail.attempt_history
    assert attempt.due_at == pytest.approx(queued.not_before, abs=timedelta(microseconds=1))
    expected = max(0.0, wait(queued.not_before, started.ts))
    assert attempt.queue_wait_seconds == pytest.approx(expected, abs=1e-5)
    assert detail.queue_wait_seconds == attempt.queue_wait_seconds
    assert detail.queue_wait_seconds < wait(queued.ts, started.ts)  # the delay is not waiting
    assert detail.queued_at == queued.ts
