"""The seed's research_company task end to end: enqueue -> real worker process -> OpenAIRunner
with a scripted model -> result, with the agent's self-reported progress in the event log.

Read-model assertions (the activity's latest message and percentage, its log rows) are added
once the projector lands; until then the event log is the source of truth checked here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

import agentexec as ax
from agentexec import events
from agentexec.connection import get_redis
from agentexec.streams import Keys
from tests.apps import agents


@pytest.fixture
def agent_pool(redis_conf: str) -> Iterator[ax.Pool]:
    agents.pool.start()
    try:
        yield agents.pool
    finally:
        agents.pool.shutdown()


async def test_research_company_runs_through_a_pool_and_reports_progress(
    agent_pool: ax.Pool,
) -> None:
    tasks = [
        await ax.enqueue("research_company", agents.ResearchContext(company=name))
        for name in ("Acme", "Globex")
    ]
    results = await asyncio.gather(*(ax.get_result(t, timeout=60) for t in tasks))
    assert results == [
        "Acme makes anvils and sells them to coyotes.",
        "Globex makes anvils and sells them to coyotes.",
    ]
    entries = await get_redis().xrange(Keys(ax.CONF.key_prefix).events)
    log = [events.decode_entry(fields) for _, fields in entries]
    for task in tasks:
        mine = [e for e in log if e.agent_id == task.agent_id]
        kinds = [type(e).__name__ for e in mine]
        assert kinds[:2] == ["TaskQueued", "TaskStarted"] and kinds[-1] == "TaskCompleted"
        progress = [(e.message, e.percentage) for e in mine if isinstance(e, events.TaskProgress)]
        assert progress == [
            ("Gathering company data", 30),
            ("Analyzing financials", 60),
            ("Writing the summary", 90),
        ]
        turns = [e.turn for e in mine if isinstance(e, events.AgentTurn)]
        assert turns == [1, 2, 3, 4]
        assert sum(1 for e in mine if isinstance(e, events.AgentUsage)) == 4
        # report_status shows as progress, not as a tool call.
        assert not [e for e in mine if isinstance(e, events.AgentToolCall)]
