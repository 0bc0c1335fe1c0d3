"""Pipelines through real worker processes: steps chained by events, the read model's runs and
steps, a crash in the middle step, failures, canceled runs, outputs that cannot go on to the
next step, and idempotent runs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec import events
from agentexec.activity.models import Activity
from agentexec.connection import get_redis
from agentexec.projector import Projector
from tests.apps import workflows
from tests.apps.workflows import Analysis, InputContext, control, pipeline, runs_file
from tests.integration.readmodel import conftest as readmodel
from tests.support.logs import keys_of, log_entries
from tests.support.waiting import async_wait_for, scaled

# The read-model suite's fixtures: each test taking `engine` runs on SQLite and PostgreSQL.
engine, postgres = readmodel.engine, readmodel.postgres


@contextlib.contextmanager
def started(pool: ax.Pool) -> Iterator[ax.Pool]:
    """Start `pool` now (its workers take the settings as they are), stop it afterwards."""
    pool.start()
    try:
        yield pool
    finally:
        pool.shutdown()


async def event_log() -> list[events.AnyEvent]:
    entries = await log_entries()
    return [events.decode_entry(f) for _, f in entries]


def step_runs(run_id: UUID) -> list[int]:
    path = runs_file(run_id)
    runs = [int(line) for line in path.read_text().split()] if path.exists() else []
    return runs


async def step_running(run_id: UUID, step: int) -> None:
    async def running() -> bool:
        return step in step_runs(run_id)

    await async_wait_for(running, timeout=30, what=f"step {step} of run {run_id} to start")


def steps_of(log: list[events.AnyEvent], run_id: UUID) -> list[events.TaskQueued]:
    return [e for e in log if isinstance(e, events.TaskQueued) and e.parent_id == run_id]


@pytest.fixture
def cleanup_runs() -> Iterator[list[UUID]]:
    runs: list[UUID] = []
    yield runs
    for run_id in runs:
        runs_file(run_id).unlink(missing_ok=True)
        runs_file(run_id).with_suffix(".crashed").unlink(missing_ok=True)


async def test_a_run_chains_its_steps_and_the_read_model_shows_run_and_steps(
    pipeline_pool: ax.Pool, engine: Engine, cleanup_runs: list[UUID]
) -> None:
    ok = await pipeline.enqueue(context=InputContext(company="Acme"))
    failing = await pipeline.enqueue(context=InputContext(company="fail-co"))
    cleanup_runs += [ok.agent_id, failing.agent_id]
    assert ok.task_name == "ResearchPipeline"

    # The tuple output of step 0 fans in to step 1's two parameters.
    assert await ax.get_result(ok, timeout=scaled(60)) == "Report: Acme brand in Acme market"
    with pytest.raises(ax.TaskFailedError, match=r"step 2 \(report\) error: ValueError: no rep"):
        await ax.get_result(failing, timeout=scaled(60))
    assert step_runs(ok.agent_id) == [0, 1, 2]
    assert step_runs(failing.agent_id) == [0, 1, 2]

    log = await event_log()
    of_run = [e for e in log if e.agent_id == ok.agent_id]
    assert [type(e).__name__ for e in of_run] == [
        "TaskQueued",
        *["PipelineStepStarted", "PipelineStepFinished"] * 3,
        "TaskCompleted",
    ]
    finished = [e for e in of_run if isinstance(e, events.PipelineStepFinished)]
    steps = [e for e in log if isinstance(e, events.TaskQueued) and e.parent_id == ok.agent_id]
    assert [s.task_name for s in steps] == [
        "ResearchPipeline.gather_data",
        "ResearchPipeline.analyze",
        "ResearchPipeline.report",
    ]
    # Each step after the first was queued by the transition that finished the one before.
    assert [f.next_agent_id for f in finished] == [steps[1].agent_id, steps[2].agent_id, None]
    assert [f.percentage for f in finished] == [33, 66, 100]

    projector = Projector(engine, lease_seconds=5)
    await projector.catch_up()
    with Session(engine) as db:
        run = db.scalars(select(Activity).where(Activity.agent_id == ok.agent_id)).one()
        children = db.scalars(
            select(Activity).where(Activity.parent_id == ok.agent_id).order_by(Activity.created_at)
        ).all()
        failed_run = db.scalars(select(Activity).where(Activity.agent_id == failing.agent_id)).one()
        assert (run.agent_type, run.status, run.parent_id) == ("ResearchPipeline", "COMPLETE", None)
        assert run.latest_percentage == 100
        assert [(c.agent_type, c.status, c.attempts) for c in children] == [
            ("ResearchPipeline.gather_data", "COMPLETE", 1),
            ("ResearchPipeline.analyze", "COMPLETE", 1),
            ("ResearchPipeline.report", "COMPLETE", 1),
        ]
        assert failed_run.status == "ERROR" and "no report for fail-co" in str(failed_run.error)
        detail = ax.activity.detail(db, agent_id=ok.agent_id)
        assert detail is not None
        assert "Step 3/3 (report) complete" in [log.message for log in detail.logs]


async def test_a_crash_in_the_middle_step_resumes_at_that_step(
    pipeline_pool: ax.Pool, cleanup_runs: list[UUID]
) -> None:
    ax.CONF.lease_seconds = 600  # the replacement worker resumes the step, no lease wait
    task = await pipeline.enqueue(context=InputContext(company="crash-co"))
    cleanup_runs.append(task.agent_id)
    assert (
        await ax.get_result(task, timeout=scaled(60)) == "Report: crash-co brand in crash-co market"
    )
    # Step 0 ran once; step 1 died and ran again from its stored input; step 2 once.
    assert step_runs(task.agent_id) == [0, 1, 1, 2]
    log = await event_log()
    started = [e for e in log if isinstance(e, events.PipelineStepStarted)]
    assert [e.step for e in started] == [0, 1, 1, 2]
    queued_steps = [e for e in log if isinstance(e, events.TaskQueued) and e.parent_id]
    assert len(queued_steps) == 3  # no step was queued twice


async def test_enqueue_is_idempotent_and_checks_the_context(redis_conf: str) -> None:
    first = await pipeline.enqueue(context=InputContext(company="A"), idempotency_key="k1")
    again = await pipeline.enqueue(context=InputContext(company="A"), idempotency_key="k1")
    assert again.agent_id == first.agent_id and again.event_id == first.event_id
    log = await event_log()
    assert len([e for e in log if isinstance(e, events.TaskQueued)]) == 2  # run + step 0
    queued = await get_redis().xlen(keys_of(first.agent_id).queue("pipelines", ax.Priority.LOW))
    assert queued == 1
    with pytest.raises(ax.ContextError, match=r"takes tests\.apps\.workflows\.InputContext"):
        await pipeline.enqueue(context=Analysis(company="A", text="t"))


def test_a_pipeline_exposes_its_steps_and_context_type() -> None:
    steps: Any = pipeline.steps
    assert [(s.index, s.description) for s in steps] == [
        (0, "parallel research"),
        (1, "analysis"),
        (2, "report"),
    ]
    assert pipeline.name == "ResearchPipeline" and pipeline.context_type is InputContext


async def test_cancel_of_a_run_stops_its_running_step_and_queues_no_more(
    pipeline_pool: ax.Pool, engine: Engine, cleanup_runs: list[UUID]
) -> None:
    run = await control.enqueue(context=InputContext(company="hold-co"))
    cleanup_runs.append(run.agent_id)
    await step_running(run.agent_id, 1)
    assert await ax.cancel(run.agent_id) is True
    with pytest.raises(ax.TaskFailedError, match=r"canceled at step 1 \(hold\)"):
        await ax.get_result(run, timeout=scaled(30))
    assert await ax.cancel(run.agent_id) is False  # already ended

    log = await event_log()
    steps = steps_of(log, run.agent_id)
    assert [s.task_name for s in steps] == ["ControlPipeline.prepare", "ControlPipeline.hold"]
    # The running step was canceled by the usual path: its worker stopped it.
    hold = [e for e in log if e.agent_id == steps[1].agent_id]
    assert isinstance(hold[-1], events.TaskCanceled)
    of_run = [e for e in log if e.agent_id == run.agent_id]
    assert any(isinstance(e, events.TaskCancelRequested) for e in of_run)
    assert isinstance(of_run[-1], events.TaskCanceled)
    assert step_runs(run.agent_id) == [0, 1]

    await Projector(engine, lease_seconds=5).catch_up()
    with Session(engine) as db:
        row = db.scalars(select(Activity).where(Activity.agent_id == run.agent_id)).one()
        children = db.scalars(
            select(Activity).where(Activity.parent_id == run.agent_id).order_by(Activity.created_at)
        ).all()
        assert row.status == "CANCELED" and row.finished_at is not None
        assert [(c.agent_type, c.status) for c in children] == [
            ("ControlPipeline.prepare", "COMPLETE"),
            ("ControlPipeline.hold", "CANCELED"),
        ]


async def test_a_run_canceled_before_its_step_starts_or_as_it_finishes_goes_no_further(
    redis_conf: str, cleanup_runs: list[UUID]
) -> None:
    early = await control.enqueue(context=InputContext(company="early-co"))
    cleanup_runs.append(early.agent_id)
    assert await ax.cancel(early.agent_id) is True  # no worker runs yet: step 0 is queued
    with started(workflows.pipeline_pool):
        with pytest.raises(ax.TaskFailedError, match=r"canceled at step 0 \(prepare\)"):
            await ax.get_result(early, timeout=scaled(30))
        # This step returns normally although its run was canceled while it ran: its outcome
        # stands, but the transaction that records it queues no next step.
        late = await control.enqueue(context=InputContext(company="stubborn-co"))
        cleanup_runs.append(late.agent_id)
        await step_running(late.agent_id, 1)
        assert await ax.cancel(late.agent_id) is True
        with pytest.raises(ax.TaskFailedError, match=r"canceled after step 1 \(hold\) completed"):
            await ax.get_result(late, timeout=scaled(30))

    log = await event_log()
    (first,) = steps_of(log, early.agent_id)
    assert [type(e).__name__ for e in log if e.agent_id == first.agent_id] == [
        "TaskQueued",
        "TaskCanceled",
    ]
    assert step_runs(early.agent_id) == []
    steps = steps_of(log, late.agent_id)
    assert len(steps) == 2 and step_runs(late.agent_id) == [0, 1]
    assert isinstance([e for e in log if e.agent_id == steps[1].agent_id][-1], events.TaskCompleted)
    finished = [
        e for e in log if isinstance(e, events.PipelineStepFinished) and e.agent_id == late.agent_id
    ]
    assert [(f.step, f.outcome, f.next_agent_id) for f in finished][-1] == (1, "complete", None)
    for run in (early, late):
        assert isinstance([e for e in log if e.agent_id == run.agent_id][-1], events.TaskCanceled)


def assert_ended_after_step_0(log: list[events.AnyEvent], run_id: UUID) -> None:
    """Step 0 completed once, no step 1 was queued, and the run ended ERROR."""
    (first,) = steps_of(log, run_id)
    of_step = [type(e).__name__ for e in log if e.agent_id == first.agent_id]
    assert of_step.count("TaskCompleted") == 1 and of_step[-1] == "TaskCompleted"
    of_run = [e for e in log if e.agent_id == run_id]
    assert isinstance(of_run[-2], events.PipelineStepFinished) and of_run[-2].outcome == "complete"
    assert isinstance(of_run[-1], events.TaskFailed)
    assert step_runs(run_id) == [0]


async def test_an_output_that_cannot_be_the_next_steps_input_ends_the_run_error(
    pipeline_pool: ax.Pool, cleanup_runs: list[UUID]
) -> None:
    bad = await control.enqueue(context=InputContext(company="bad-co"))
    boom = await control.enqueue(context=InputContext(company="boom-co"))
    cleanup_runs += [bad.agent_id, boom.agent_id]
    cannot = r"step 0 \(prepare\) complete, but the run cannot go on: "
    with pytest.raises(
        ax.TaskFailedError,
        match=rf"(?s){cannot}its output is not a valid input of step 1 \(hold\):.*text.*missing",
    ):
        await ax.get_result(bad, timeout=scaled(30))
    # The transition itself raised (a validator's bug): the run still ends, naming the cause.
    with pytest.raises(ax.TaskFailedError, match=rf"{cannot}RuntimeError: the validator has a bug"):
        await ax.get_result(boom, timeout=scaled(30))
    log = await event_log()
    assert_ended_after_step_0(log, bad.agent_id)
    assert_ended_after_step_0(log, boom.agent_id)


async def test_an_output_above_the_context_limit_ends_the_run_error(
    redis_conf: str, cleanup_runs: list[UUID]
) -> None:
    ax.CONF.max_context_bytes = 4096  # handed to the workers as they start
    small = await control.enqueue(context=InputContext(company="huge-100"))
    huge = await control.enqueue(context=InputContext(company="huge-10000"))
    cleanup_runs += [small.agent_id, huge.agent_id]
    with started(workflows.pipeline_pool):
        assert await ax.get_result(small, timeout=scaled(30)) == "published huge-100"
        with pytest.raises(
            ax.TaskFailedError,
            match=r"step 0 \(prepare\) complete, but the run cannot go on: its output makes the "
            r"context of step 1 \(hold\) 10,\d{3} bytes, above the 4,096-byte limit "
            r"\(AGENTEXEC_MAX_CONTEXT_BYTES\)",
        ):
            await ax.get_result(huge, timeout=scaled(30))
    assert_ended_after_step_0(await event_log(), huge.agent_id)
