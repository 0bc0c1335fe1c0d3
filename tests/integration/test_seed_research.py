"""Seed 000's `research_company` variant end to end: the seed's enqueue, a real pool (worker
process and the pool's own projector), an OpenAIRunner on a scripted model, the task's dict
result, and the agent's self-reported progress in the read model, read as the seed's
"Tracking Progress" section does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import agentexec as ax
from tests.apps import research
from tests.apps.research import ResearchContext
from tests.integration.readmodel import conftest as readmodel
from tests.support.pools import running_on
from tests.support.waiting import async_wait_for, scaled

# The read-model suite's fixtures: the test runs on SQLite and PostgreSQL.
engine, postgres = readmodel.engine, readmodel.postgres


@pytest.fixture
def research_pool(redis_conf: str, engine: Engine) -> Iterator[ax.Pool]:
    """The app's pool with the test's read model, its workers on the scripted model."""
    ax.CONF.model_override = "tests.apps.research:SCRIPT"
    with running_on(research.pool, engine) as pool:
        yield pool


async def start_research(company: str) -> str:
    """Queue a research task and return the agent ID (the seed's, as written)."""
    task = await ax.enqueue(
        "research_company",
        ResearchContext(company=company, focus_areas=["products", "financials"]),
    )
    return str(task.agent_id)


async def test_seed_research_company_returns_its_dict_and_reports_progress(
    research_pool: ax.Pool, engine: Engine
) -> None:
    agent_id = await start_research("Acme")
    result = await ax.get_result(agent_id, timeout=scaled(60))
    assert result == {
        "company": "Acme",
        "findings": "Acme sells anvils; focus: products, financials.",
    }

    async def get_task_status() -> dict[str, Any] | None:
        # The seed's status check; the pool's projector fills the read model.
        with Session(engine) as session:
            activity = ax.activity.detail(session, agent_id)
            if not activity or activity.status != "COMPLETE":
                return None
            return {
                "status": activity.status.value,
                "progress": activity.latest_percentage,
                "updated_at": activity.updated_at.isoformat(),
            }

    status = await async_wait_for(get_task_status, timeout=30, what="the task COMPLETE")
    assert (status["status"], status["progress"]) == ("COMPLETE", 100)
    with Session(engine) as session:
        activity = ax.activity.detail(session, agent_id)
        assert activity is not None and activity.agent_type == "research_company"
        logs = [(log.status.value, log.message, log.percentage) for log in activity.logs]
    progress = [entry for entry in logs if entry[2] is not None]
    assert progress == [
        ("RUNNING", "Collecting sources", 25),
        ("RUNNING", "Reading financials", 70),
        ("COMPLETE", "Task completed successfully.", 100),
    ]
    # The runner ran the agent with the seed's max_turns=15: three model turns.
    turns = [message for _, message, _ in logs if "turn" in message]
    assert turns == [f"Research Agent: turn {n} of 15" for n in (1, 2, 3)]
