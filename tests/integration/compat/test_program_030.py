"""A program written for agentexec 0.3.0 (tests/apps/program030.py) runs unchanged against
this package: started with `agentexec run ... --workers 2 --create-tables`, fed from this
process as a 0.3.0 application feeds it, its activity read back from PostgreSQL."""

from __future__ import annotations

import subprocess
from uuid import UUID

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import agentexec as ax
from tests.apps import program030
from tests.apps.program030_models import Report, ResearchContext, Summary
from tests.support.waiting import scaled, wait_for

pytestmark = pytest.mark.postgres


def _detail(engine: Engine, agent_id: UUID) -> ax.activity.ActivityDetailSchema | None:
    with Session(engine) as session:
        return ax.activity.detail(session, agent_id)


def _ended(engine: Engine, agent_id: UUID) -> ax.activity.ActivityDetailSchema:
    def ended() -> ax.activity.ActivityDetailSchema | None:
        found = _detail(engine, agent_id)
        return found if found is not None and found.status in ax.Status.TERMINAL else None

    found = wait_for(ended, timeout=60, what=f"activity {agent_id} to end in the read model")
    assert found is not None
    return found


async def test_a_030_program_runs_unchanged(
    program: subprocess.Popen[str], database: Engine
) -> None:
    research = await ax.enqueue("compat030_research", ResearchContext(company="Acme"))
    summary = await ax.enqueue("compat030_summarize", ResearchContext(company="Acme"))
    flaky = await ax.enqueue("compat030_flaky", ResearchContext(company="Acme"))
    run = await program030.pipeline.enqueue(context=ResearchContext(company="Acme"))

    # Keyword-only handlers, sync and async, and their typed results.
    report = await ax.get_result(research, timeout=scaled(60))
    assert report == Report(company="Acme", findings=["founded", "growing"])
    assert await ax.get_result(summary, timeout=scaled(60)) == Summary(text="Acme in one line")
    # The pipeline's steps ran in their (non-contiguous) order.
    assert await ax.get_result(run, timeout=scaled(60)) == Summary(text="Acme: 1 finding(s)")
    with pytest.raises(ax.TaskFailedError) as failed:
        await ax.get_result(flaky, timeout=scaled(60))
    assert failed.value.attempts == 2
    assert "no data about Acme" in failed.value.error

    # The activity the handlers reported, in the tables --create-tables made.
    done = _ended(database, research.agent_id)
    assert done.status is ax.activity.Status.COMPLETE
    assert ("Researching Acme", 50) in [(log.message, log.percentage) for log in done.logs]
    assert _ended(database, flaky.agent_id).status is ax.activity.Status.ERROR
    steps = _ended(database, run.agent_id)
    # Steps without a description show their method's name.
    assert [log.message for log in steps.logs if log.message.startswith("Step 1/2:")] == [
        "Step 1/2: gather facts"
    ]

    # Activities tracked by hand, as a 0.3.0 application does for work outside the pool.
    agent_id = ax.activity.generate_agent_id()
    ax.activity.create("compat030_import", "Waiting", agent_id=agent_id, metadata={"org": "o1"})
    ax.activity.update(agent_id, "Importing", percentage=40, status="running")
    ax.activity.update(agent_id, "Imported", status=ax.activity.Status.COMPLETE)
    assert _ended(database, ax.activity.normalize_agent_id(str(agent_id))).status == "complete"
    with Session(database) as session:
        page = ax.activity.list(session, metadata={"org": "o1"})
        assert [item.agent_id for item in page.items] == [agent_id]
        assert ax.activity.count_active(session) == 0
