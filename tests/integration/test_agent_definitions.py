"""Agents declared as data, run as tasks by a real pool (worker process, Redis, the pool's
projector) on a scripted model: seed 004's weather assistant, guardrail, retry policy and
orchestrator, end to end."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec import events
from agentexec.connection import get_redis
from agentexec.streams import Keys
from tests.apps import agent_defs
from tests.apps.agent_defs import FlowRequest, SupportRequest
from tests.integration.readmodel.conftest import sqlite_engine
from tests.support.pools import running_on
from tests.support.waiting import async_wait_for, scaled


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = sqlite_engine(tmp_path / "agents.db")
    yield engine
    engine.dispose()


@pytest.fixture
def agent_pool(redis_conf: str, engine: Engine) -> Iterator[ax.Pool]:
    ax.CONF.model_override = "tests.apps.agent_defs:SCRIPT"
    ax.CONF.retry_backoff = 0.05
    with running_on(agent_defs.pool, engine) as pool:
        yield pool
    agent_defs.sessions_file().unlink(missing_ok=True)


async def _events(agent_id: Any) -> list[events.AnyEvent]:
    entries = await get_redis().xrange(Keys(ax.CONF.key_prefix).events)
    decoded = [events.decode_entry(fields) for _, fields in entries]
    return [e for e in decoded if e.agent_id == agent_id]


async def test_enqueue_agent_runs_the_definition_with_its_tool_and_records_it(
    agent_pool: ax.Pool,
) -> None:
    context = ax.AgentContext(filters={"user_id": "123"})
    task = await ax.enqueue_agent(
        "weather_assistant", input="What's the weather in Paris?", context=context
    )
    outcome = await ax.get_result(task, timeout=scaled(60))
    assert isinstance(outcome, ax.AgentOutcome)
    assert (outcome.output, outcome.agent) == ("It is sunny and 72F.", "weather_assistant")
    assert outcome.total_tokens > 0
    # The tool saw the context the enqueuer sent, and what it added came back.
    returned = ax.AgentContext.model_validate(outcome.context)
    assert returned.filters == {"user_id": "123"}
    assert returned.discovered == {"weather": [{"city": "Paris", "conditions": "sunny"}]}

    mine = await _events(task.agent_id)
    kinds = [type(e).__name__ for e in mine]
    assert kinds[:2] == ["TaskQueued", "TaskStarted"] and kinds[-1] == "TaskCompleted"
    assert [e.turn for e in mine if isinstance(e, events.AgentTurn)] == [1, 2]
    calls = [e for e in mine if isinstance(e, events.AgentToolCall)]
    assert [(c.tool, c.agent) for c in calls] == [("get_weather", "weather_assistant")]
    assert sum(isinstance(e, events.AgentUsage) for e in mine) == 2


async def test_a_tripped_guardrail_is_recorded_and_not_retried(agent_pool: ax.Pool) -> None:
    task = await ax.enqueue_agent("weather_assistant", input="DROP TABLE forecasts")
    with pytest.raises(ax.TaskFailedError, match="Destructive queries not allowed"):
        await ax.get_result(task, timeout=scaled(60))
    mine = await _events(task.agent_id)
    tripped = [e for e in mine if isinstance(e, events.AgentGuardrailTripped)]
    assert [(e.guardrail, e.stage, e.reason) for e in tripped] == [
        ("validate_user_input", "input", "Destructive queries not allowed")
    ]
    assert not [e for e in mine if isinstance(e, events.TaskRetried)]
    # The guardrail ran before the model: no turn was paid for.
    assert not [e for e in mine if isinstance(e, events.AgentUsage)]


async def test_transient_errors_are_retried_and_deterministic_ones_are_not(
    agent_pool: ax.Pool,
) -> None:
    flaky = await ax.enqueue_agent("flaky_assistant", input="go")
    looping = await ax.enqueue_agent("looping_assistant", input="go")
    assert (await ax.get_result(flaky, timeout=scaled(60))).output == "recovered"
    with pytest.raises(ax.TaskFailedError, match="Max turns"):
        await ax.get_result(looping, timeout=scaled(60))
    retried = [e for e in await _events(flaky.agent_id) if isinstance(e, events.TaskRetried)]
    assert len(retried) == 1 and "unreachable" in retried[0].error
    looped = await _events(looping.agent_id)
    assert not [e for e in looped if isinstance(e, events.TaskRetried)]
    assert [e.attempt for e in looped if isinstance(e, events.TaskStarted)] == [1]


@pytest.mark.parametrize(
    ("query", "intent", "specialist", "result"),
    [
        ("What's the weather in Paris?", "weather", "weather_assistant", "It is sunny and 72F."),
        ("Analyze sales for Q4", "analysis", "data_analyzer", "North leads."),
    ],
)
async def test_the_orchestrator_routes_and_runs_each_agent_as_a_child_task(
    agent_pool: ax.Pool, engine: Engine, query: str, intent: str, specialist: str, result: str
) -> None:
    flow = await ax.enqueue("support_flow", SupportRequest(query=query), queue_name="agent_defs")
    outcome = await ax.get_result(flow, timeout=scaled(90))
    assert outcome == {
        "success": True,
        "intent": intent,
        "result": result,
        "response": f"Summary for: {query}",
        "has_data": True,
    }

    async def tree() -> list[tuple[str, str]] | None:
        with Session(engine) as db:
            children = ax.activity.children(db, flow.agent_id)
            if children is None or min(children.total, len(children.items)) < 3:
                return None
            if any(c.status != "COMPLETE" for c in children.items):
                return None
            return [(c.agent_type, c.status.value) for c in children.items]

    children = await async_wait_for(tree, timeout=30, what="the three agent runs projected")
    assert children == [
        ("intent_analyzer", "COMPLETE"),
        (specialist, "COMPLETE"),
        ("synthesizer", "COMPLETE"),
    ]


async def _children(engine: Engine, parent: Any, count: int) -> list[str]:
    async def names() -> list[str] | None:
        with Session(engine) as db:
            children = ax.activity.children(db, parent)
            if children is None or min(children.total, len(children.items)) < count:
                return None
            if any(c.status != "COMPLETE" for c in children.items):
                return None
            return [c.agent_type for c in children.items]

    return await async_wait_for(names, timeout=30, what=f"{count} agent runs projected")


@pytest.mark.parametrize(
    ("request_", "output", "children"),
    [
        (
            FlowRequest(pattern="sequential", query="Analyze sales"),
            {"success": True, "response": "Summary for: Analyze sales"},
            ["intent_analyzer", "planner", "executor", "synthesizer"],
        ),
        (
            FlowRequest(pattern="dynamic", query="a report please"),
            {"success": True, "result": "report attached"},
            ["router", "report_generator"],
        ),
        (
            FlowRequest(pattern="dynamic", query="write a query"),
            {"success": True, "result": "SELECT region, sum(sales) FROM sales GROUP BY region"},
            ["router", "query_specialist"],
        ),
        (
            FlowRequest(pattern="helper", query="sales by region", filters={"year": 2024}),
            {
                "ran": ["data_analyzer", "synthesizer"],
                "response": "Summary for: sales by region",
            },
            ["data_analyzer", "synthesizer"],
        ),
    ],
    ids=["sequential", "routing-report", "routing-query", "routing-helper"],
)
async def test_the_seed_orchestration_patterns(
    agent_pool: ax.Pool,
    engine: Engine,
    request_: FlowRequest,
    output: dict[str, Any],
    children: list[str],
) -> None:
    flow = await ax.enqueue("seed_flow", request_, queue_name="agent_defs")
    assert await ax.get_result(flow, timeout=scaled(90)) == output
    assert await _children(engine, flow.agent_id, len(children)) == children


async def test_the_orchestrators_guardrail_refuses_a_destructive_query(
    agent_pool: ax.Pool,
) -> None:
    # Seed: `orchestrator.register_guardrail("validate_query", validate_query)`.
    flow = await ax.enqueue(
        "seed_flow",
        FlowRequest(pattern="dynamic", query="query: DELETE FROM sales"),
        queue_name="agent_defs",
    )
    with pytest.raises(ax.TaskFailedError, match=r"validate_query.*Destructive queries"):
        await ax.get_result(flow, timeout=scaled(90))


async def test_an_orchestration_outside_a_task_groups_its_runs_under_an_activity(
    agent_pool: ax.Pool, engine: Engine
) -> None:
    parent = await asyncio.to_thread(ax.activity.create, "support_session")
    orchestrator = agent_defs.MyOrchestrator(
        agent_defs.app, queue_name="agent_defs", timeout=scaled(60), parent_id=parent
    )
    output = await orchestrator.run("What's the weather in Paris?", {"schema": "sales"})
    assert (output["intent"], output["result"]) == ("weather", "It is sunny and 72F.")
    assert [o.agent for o in orchestrator.outcomes] == [
        "intent_analyzer",
        "weather_assistant",
        "synthesizer",
    ]
    assert await _children(engine, parent, 3) == [
        "intent_analyzer",
        "weather_assistant",
        "synthesizer",
    ]


class _KeepsSession(agent_defs.MyOrchestrator):
    """`MyOrchestrator`, keeping the session its run opened."""

    session: Any = None

    def setup_session(self, session_id: str | None = None) -> Any:
        self.session = super().setup_session(session_id)
        return self.session


async def test_runs_sharing_a_session_hold_the_user_message_once(
    agent_pool: ax.Pool, engine: Engine
) -> None:
    parent = await asyncio.to_thread(ax.activity.create, "support_session")
    orchestrator = _KeepsSession(
        agent_defs.app, queue_name="agent_defs", timeout=scaled(60), parent_id=parent
    )
    output = await orchestrator.run("What's the weather in Paris?", {"schema": "sales"})
    assert (output["intent"], output["result"]) == ("weather", "It is sunny and 72F.")
    items = await orchestrator.session.get_items()
    users = [i for i in items if i.get("role") == "user"]
    assert [u["content"] for u in users] == ["What's the weather in Paris?"]
    assert len([i for i in items if i.get("role") == "assistant"]) >= 3  # three runs answered
    # An explicit input is always sent: it adds its message to the conversation.
    await orchestrator.run_agent("synthesizer", orchestrator.session, None, input="And tomorrow?")
    items = await orchestrator.session.get_items()
    assert [i["content"] for i in items if i.get("role") == "user"] == [
        "What's the weather in Paris?",
        "And tomorrow?",
    ]
