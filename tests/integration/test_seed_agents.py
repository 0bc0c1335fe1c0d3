"""Seed 004 ("Agents Core", `../shared/seeds/004_*.txt`): each of its samples that has a
counterpart here, run offline on `agentexec.testing.ScriptedModel`, adapted only in names.
Samples that run as tasks (orchestrations, agent runs, the streaming helper) run on a real
pool (a worker process), Redis and the pool's projector; the tree of an orchestration's agent
runs is read from the read model. Their code is in `tests/apps/seed004.py`.

Names changed throughout: `agents_core` -> `agentexec`, `get_agent_registry()` /
`get_tool_registry()` -> `ax.agents` / `ax.tools`, `StreamingHelper` -> `AgentStream`,
`_run_agent` -> `run_agent`, `output_dataclass` -> `output_type`, a Prefect `@task` ->
`@pool.task`. A tool's `ctx` is typed `RunContextWrapper[AgentContext]`: the seed's untyped
`ctx` would be a parameter the model must fill, and is refused (tested below).

| seed sample (section) | test |
| --- | --- |
| Define a Tool | test_define_a_tool |
| Define a Tool, `ctx` as written (untyped) | test_a_tool_with_an_untyped_ctx_is_refused |
| Define an Agent + Run the Agent | test_define_an_agent_and_run_it |
| Core Components: AgentDefinition | test_agent_definition_as_data |
| Core Components: AgentSession; session/ (max_items=50) | test_agent_session |
| Core Components: AgentContext; models/context.py | test_agent_context |
| Extend for your use case; Integration step 3 | test_agent_context_extended_with_a_dataclass |
| Core Components: StreamingHelper | test_streaming_helper_events_reach_the_tasks_feed |
| (issue: pool.agent runs are streamed) | test_an_agent_task_streams_its_text |
| Multi-Agent Orchestration (`execute`) | test_multi_agent_orchestration_routes |
| registry/: Agent Registry | test_agent_definition_as_data |
| registry/: Dynamic Instructions; utils/ message_builder | test_dynamic_instructions |
| registry/: Tool Registry; tools/database_tools.py | test_tool_registry_with_categories |
| Integration step 5 (`your_tool`: the same tool pattern) | test_tool_registry_with_categories |
| orchestrator.py: `AgentOrchestrator().run(...)` | test_quick_start_run_your_first_workflow |
| orchestrator.py: Extend for your workflow; step 6 | test_extend_for_your_workflow |
| agents/my_agents.py | test_agents_module_registers_on_import |
| guardrails/ + `orchestrator.register_guardrail` | test_guardrails_return_ok_and_message |
| services/routing_helper.py | test_routing_helper |
| instructions/shared/ (loaded from a file) | test_instructions_from_a_file |
| Quick Start 2-4 (data_analyzer, execute_query, main) | test_quick_start_run_your_first_workflow |
| Pattern 1: Simple Agent Workflow | test_pattern_1_simple_agent_workflow |
| Pattern 2: Multi-Agent Sequential Workflow | test_pattern_2_sequential |
| Pattern 3: Agent + Workflow Integration | test_pattern_3_agent_analysis_task |
| Pattern 4: Dynamic Routing Based on Agent Output | test_pattern_4_dynamic_routing |

No counterpart (not tested): the Prefect flows and tasks of "Workflows Core" (pipelines are
agentexec's, `docs/pipelines.md`), the FastAPI endpoints of Integration step 7, install and
project-layout blocks. `requires_schema_injection=True` (Dynamic Instructions) is left out:
instructions given as a function always get the run's context.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, RunContextWrapper, Runner, function_tool
from agents.models.multi_provider import MultiProvider
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec import (
    AgentContext,
    AgentDefinition,
    AgentOrchestrator,
    AgentSession,
    events,
    register_agent,
    register_tool,
)
from agentexec.testing import ScriptedModel, disable_tracing, reply, tool_call
from tests.apps import seed004
from tests.integration.readmodel.conftest import sqlite_engine
from tests.support.logs import log_entries
from tests.support.pools import running_on
from tests.support.waiting import async_wait_for, scaled

disable_tracing()


@pytest.fixture
def app() -> Iterator[ax.Agents]:
    """A registry of the test's own, current for the seed's `register_*` calls."""
    with ax.use_agents(ax.Agents()) as agents:
        yield agents


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the SDK's own `Runner` resolve every model name to the model given (the seed's
    "Run the Agent" calls `Runner.run` itself, outside any agentexec runner)."""

    def use(model: ScriptedModel) -> ScriptedModel:
        monkeypatch.setattr(MultiProvider, "get_model", lambda self, name: model)
        return model

    return use


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = sqlite_engine(tmp_path / "seed004.db")
    yield engine
    engine.dispose()


@pytest.fixture
def seed_pool(redis_conf: str, engine: Engine) -> Iterator[ax.Pool]:
    ax.CONF.model_override = "tests.apps.seed004:SCRIPT"
    with running_on(seed004.pool, engine) as pool:
        yield pool


async def _events(agent_id: Any) -> list[events.AnyEvent]:
    entries = await log_entries()
    decoded = [events.decode_entry(fields) for _, fields in entries]
    return [e for e in decoded if e.agent_id == agent_id]


async def _children(engine: Engine, parent: Any, count: int) -> list[str]:
    """The task names of `parent`'s children in the read model, once `count` are complete."""

    async def names() -> list[str] | None:
        with Session(engine) as db:
            children = ax.activity.children(db, parent)
            if children is None or min(children.total, len(children.items)) < count:
                return None
            if any(c.status != "COMPLETE" for c in children.items):
                return None
            return [c.agent_type for c in children.items]

    return await async_wait_for(names, timeout=60, what=f"{count} agent runs projected")


async def _flow(name: str, query: str, pattern: str = "", **data: Any) -> tuple[ax.Task, Any]:
    context = seed004.Query(query=query, pattern=pattern, context_data=data)
    task = await ax.enqueue(name, context)
    return task, await ax.get_result(task, timeout=scaled(120))


# -- In process: definitions, registries, context, session --------------------------------


def test_define_a_tool(app: ax.Agents) -> None:
    @register_tool(
        name="get_weather",
        description="Get weather for a city",
        category="api",
    )
    @function_tool
    async def get_weather(ctx: RunContextWrapper[AgentContext], city: str) -> dict:  # type: ignore[type-arg]
        # Your implementation
        return {"temperature": 72, "conditions": "sunny"}

    [entry] = ax.tools.list(category="api")
    assert (entry.name, entry.description, entry.tool) == (
        "get_weather",
        "Get weather for a city",
        get_weather,
    )
    assert list(get_weather.params_json_schema["properties"]) == ["city"]


def test_a_tool_with_an_untyped_ctx_is_refused(app: ax.Agents) -> None:
    with pytest.raises(ax.AgentDefinitionError) as refused:

        @register_tool(
            name="get_weather",
            description="Get weather for a city",
            category="api",
        )
        @function_tool
        async def get_weather(ctx, city: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
            # Your implementation
            return {"temperature": 72, "conditions": "sunny"}

    message = str(refused.value)
    assert "'get_weather'" in message and "'ctx' has no type" in message
    assert "ctx: RunContextWrapper[AgentContext]" in message
    assert ax.tools.list() == []


async def test_define_an_agent_and_run_it(
    app: ax.Agents, offline: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    @register_tool(name="get_weather", description="Get weather for a city", category="api")
    @function_tool
    async def get_weather(ctx: RunContextWrapper[AgentContext], city: str) -> dict:  # type: ignore[type-arg]
        # Your implementation
        return {"temperature": 72, "conditions": "sunny"}

    weather_agent = AgentDefinition(
        name="weather_assistant",
        description="Helps with weather queries",
        instructions="You help users get weather information. Use the get_weather tool.",
        tools=["get_weather"],
        model="gpt-4o-mini",
    )

    register_agent(weather_agent)

    model = offline(ScriptedModel([tool_call("get_weather", city="Paris"), reply("Sunny, 72F.")]))

    # Get from registries
    agent_def = ax.agents.get("weather_assistant")
    tools = ax.tools.get_tool_functions(agent_def.tools)

    # Create SDK agent
    agent = Agent(
        name=agent_def.name,
        instructions=agent_def.instructions,
        model=agent_def.model,
        tools=tools,
    )

    # Run
    result = await Runner.run(agent, "What's the weather in Paris?")
    print(result.final_output)

    assert capsys.readouterr().out == "Sunny, 72F.\n"
    outputs = [i for i in model.calls[1].input if i.get("type") == "function_call_output"]
    assert "sunny" in outputs[0]["output"]


async def test_agent_definition_as_data(app: ax.Agents, offline: Any) -> None:
    @dataclass
    class MyOutput:
        answer: str
        confidence: float

    register_tool(name="tool1")(lambda: "one")
    register_tool(name="tool2")(lambda: "two")
    ax.register_guardrail("guardrail1", lambda ctx, text: (len(text) < 100, "too long"))

    definition = AgentDefinition(
        name="my_agent",
        description="What this agent does",
        instructions="System prompt...",  # Or a function for dynamic prompts
        tools=["tool1", "tool2"],  # Tool names from registry
        guardrails=["guardrail1"],  # Optional input validators
        model="gpt-4o-mini",  # Or gpt-4o, gpt-4-turbo, etc.
        output_type=MyOutput,  # Optional structured output
    )

    register_agent(definition)

    # registry/: Agent Registry.
    register_tool(name="execute_query")(seed004.execute_query)
    register_tool(name="inspect_schema")(lambda: seed004.your_schema_text)
    ax.register_guardrail("validate_query", seed004.validate_query)
    my_agent = AgentDefinition(
        name="data_analyzer",
        description="Analyzes database schema and generates queries",
        instructions="You are a data analyst. Analyze schemas and write queries...",
        tools=["execute_query", "inspect_schema"],  # Tool names
        guardrails=["validate_query"],  # Guardrail names
        model="gpt-4o-mini",
        output_type=MyOutput,  # For structured output
    )

    register_agent(my_agent)
    assert [a.name for a in ax.agents.list()] == ["my_agent", "data_analyzer"]

    # The SDK asks for a dataclass output wrapped in a "response" object.
    offline(ScriptedModel([reply('{"response": {"answer": "42", "confidence": 0.9}}')]))
    result = await Runner.run(definition.build(AgentContext()), "What is the answer?")
    assert result.final_output == MyOutput(answer="42", confidence=0.9)
    with pytest.raises(ax.AgentDefinitionError, match=r"unknown tool name.*'tool3'.*tool1, tool2"):
        register_agent(AgentDefinition(name="other", tools=["tool1", "tool3"]))


async def test_agent_session(redis_conf: str) -> None:
    session = AgentSession(session_id="user-123")

    # Add messages
    await session.add_items(
        [
            {"role": "user", "content": "Hello!"},
            {"role": "assistant", "content": "Hi there!"},
        ]
    )

    # Get history for SDK
    history = await session.get_items()

    # Check if needs summarization
    summarized = False
    if session.needs_summarization():
        # Trigger your summarization logic
        summarized = True

    assert [h["content"] for h in history] == ["Hello!", "Hi there!"]
    assert not summarized  # no max_items: never

    # session/: the same with max_items=50, then 48 more items.
    session = AgentSession(session_id="unique-id", max_items=50)
    await session.add_items(
        [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"}]
    )
    history = await session.get_items()
    assert len(history) == 2 and not session.needs_summarization()
    await session.add_items([{"role": "user", "content": f"m{i}"} for i in range(48)])
    assert session.needs_summarization()
    # Any process sees the same conversation.
    assert len(await AgentSession("unique-id").get_items()) == 50


def test_agent_context() -> None:
    your_db = seed004.FakeDatabase()
    user_data = {"id": "123", "name": "Ada"}

    context = AgentContext(
        database_connector=your_db,  # Any database
        schema="Your schema...",
        filters={"user_id": "123"},
    )
    assert not context.has_data

    # Add data discovered during workflow
    context.add_discovered_item("users", user_data)

    # Check if data was collected
    results = None
    if context.has_data:
        results = context.query_results

    assert results == [] and context.discovered == {"users": [user_data]}
    # What crosses to a worker: everything but the process-local connector.
    assert "database_connector" not in context.model_dump()


def test_agent_context_extended_with_a_dataclass() -> None:
    @dataclass
    class YourAppContext(AgentContext):
        """Extended context for your application."""

        user_id: str = ""
        workspace_id: str = ""
        permissions: dict[str, bool] = field(default_factory=dict)
        custom_data: dict[str, Any] = field(default_factory=dict)

    context = YourAppContext(user_id="u1", filters={"year": 2024})
    context.add_discovered_item("users", {"id": "u1"})
    context.permissions["read"] = True
    assert YourAppContext().permissions == {}  # each its own dict
    assert context.has_data and context.filters == {"year": 2024}
    again = YourAppContext.model_validate(context.model_dump(mode="json"))
    assert again == context and isinstance(again, YourAppContext)


async def test_dynamic_instructions(app: ax.Agents, offline: Any) -> None:
    def format_schema_for_prompt(schema_data: dict) -> str:  # type: ignore[type-arg]
        """Format schema for agent instructions."""
        lines = ["Database Schema:", ""]

        for table, columns in schema_data.items():
            lines.append(f"**{table}**:")
            for col in columns:
                lines.append(f"  - {col['name']}: {col['type']}")
            lines.append("")

        return "\n".join(lines)

    register_tool(name="execute_query", description="Execute database query")(seed004.execute_query)

    def dynamic_instructions(context: AgentContext, agent_def: AgentDefinition) -> str:
        return f"""
You are a data analyst.

Database Schema:
{context.schema}

User Filters: {context.filters}

Analyze and generate queries.
"""

    my_agent = AgentDefinition(
        name="analyzer",
        description="...",
        instructions=dynamic_instructions,  # Function, not string!
        tools=["execute_query"],
    )
    register_agent(my_agent)

    schema = format_schema_for_prompt({"sales": [{"name": "region", "type": "text"}]})
    context = AgentContext(
        database_connector=seed004.FakeDatabase(), schema=schema, filters={"year": 2024}
    )
    model = offline(ScriptedModel([tool_call("execute_query", query="SELECT 1"), reply("done")]))
    result = await Runner.run(my_agent.build(context), "Q4 sales?", context=context)
    assert result.final_output == "done"
    assert "**sales**:\n  - region: text" in (model.calls[0].instructions or "")
    assert "User Filters: {'year': 2024}" in (model.calls[0].instructions or "")
    assert context.database_connector.queries == ["SELECT 1"]


async def test_tool_registry_with_categories(app: ax.Agents, offline: Any) -> None:
    @register_tool(
        name="execute_query",
        description="Execute database query",
        category="database",
        parameters_description="query (str): SQL/Cypher query to execute",
        returns_description="Dict with success status and results",
    )
    @function_tool
    async def execute_query(ctx: RunContextWrapper[AgentContext], query: str) -> dict:  # type: ignore[type-arg]
        # ctx.context = your AgentContext
        # ctx.session = your AgentSession
        db = ctx.context.database_connector
        result = await db.execute(query)
        return {"success": True, "data": result}

    @register_tool(
        name="fetch_user_data",
        description="Fetch user profile data",
        category="data",
        parameters_description="user_id (str): User ID",
        returns_description="User profile dict",
    )
    @function_tool
    async def fetch_user_data(ctx: RunContextWrapper[AgentContext], user_id: str) -> dict:  # type: ignore[type-arg]
        # Access context and session
        db = ctx.context.database_connector
        filters = ctx.context.filters

        user = await db.get_user(user_id, filters=filters)
        return user

    assert [t.name for t in ax.tools.list(category="database")] == ["execute_query"]
    assert [t.name for t in ax.tools.list(category="data")] == ["fetch_user_data"]
    entry = ax.tools.get("execute_query")
    assert entry.parameters_description == "query (str): SQL/Cypher query to execute"
    assert entry.returns_description == "Dict with success status and results"

    agent = register_agent(
        AgentDefinition(name="profiler", tools=["execute_query", "fetch_user_data"])
    )
    offline(
        ScriptedModel(
            [
                (
                    tool_call("execute_query", query="SELECT 1"),
                    tool_call("fetch_user_data", user_id="7"),
                ),
                reply("done"),
            ]
        )
    )
    db = seed004.FakeDatabase()
    context = AgentContext(database_connector=db, filters={"team": "a"})
    result = await Runner.run(agent.build(context), "Who?", context=context)
    assert result.final_output == "done" and db.queries == ["SELECT 1"]


def test_agents_module_registers_on_import(app: ax.Agents) -> None:
    for name in ("fetch_data", "statistical_analysis", "execute_query", "validate_query"):
        register_tool(name=name)(lambda: "done")

    # agents/my_agents.py
    analyzer_agent = AgentDefinition(
        name="analyzer",
        description="Analyzes data patterns",
        instructions="You analyze data and identify patterns...",
        tools=["fetch_data", "statistical_analysis"],
        model="gpt-4o",
    )
    register_agent(analyzer_agent)

    query_agent = AgentDefinition(
        name="query_generator",
        description="Generates database queries",
        instructions="You write optimized database queries...",
        tools=["execute_query", "validate_query"],
        model="gpt-4o-mini",
    )
    register_agent(query_agent)

    assert [a.name for a in ax.agents.list()] == ["analyzer", "query_generator"]
    assert ax.agents.get("query_generator").build().tools[1].name == "validate_query"


def test_routing_helper() -> None:
    # services/routing_helper.py
    class RoutingHelper:
        """Determines which agent to run based on context."""

        def get_next_agent(self, context: AgentContext, last_output: Any) -> str:
            """Route to next agent based on workflow state."""
            # Your routing logic
            if context.query_results:
                return "synthesizer"
            elif context.filters:
                return "query_generator"
            else:
                return "intent_analyzer"

    helper, context = RoutingHelper(), AgentContext()
    assert helper.get_next_agent(context, None) == "intent_analyzer"
    context.filters["year"] = 2024
    assert helper.get_next_agent(context, None) == "query_generator"
    context.query_results.append({"sales": 1})
    assert helper.get_next_agent(context, None) == "synthesizer"


def test_instructions_from_a_file(
    app: ax.Agents, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "instructions" / "shared").mkdir(parents=True)
    (tmp_path / "instructions/shared/query_generation.md").write_text(
        "# instructions/shared/query_generation.md\n\nYou are an expert database query generator.\n"
    )
    monkeypatch.chdir(tmp_path)
    register_tool(name="execute_query")(seed004.execute_query)

    # Load in agent definition
    with open("instructions/shared/query_generation.md") as f:
        instructions = f.read()

    query_agent = AgentDefinition(
        name="query_generator",
        instructions=instructions,
        tools=["execute_query"],
    )

    register_agent(query_agent)
    assert "expert database query generator" in str(query_agent.build().instructions)


# -- On a real pool: agent runs, orchestrations, guardrails, streaming ----------------------


async def test_streaming_helper_events_reach_the_tasks_feed(seed_pool: ax.Pool) -> None:
    task, kinds = await _flow("streaming_helper", "-")
    assert kinds == ["start", "answer", "error"]  # the callback got each event
    deltas = [e for e in await _events(task.agent_id) if isinstance(e, events.AgentDelta)]
    assert [(d.kind, d.agent, d.turn, d.text) for d in deltas] == [
        ("start", "analyzer", 1, ""),
        ("answer", "", 0, "The weather is sunny!"),
        ("error", "", 0, "Something went wrong"),
    ]


async def test_an_agent_task_streams_its_text(seed_pool: ax.Pool) -> None:
    task = await ax.enqueue_agent("weather_assistant", input="What's the weather in Paris?")
    outcome = await ax.get_result(task, timeout=scaled(60))
    assert outcome.output == "Sunny, 72F."
    mine = await _events(task.agent_id)
    deltas = [e for e in mine if isinstance(e, events.AgentDelta)]
    assert "".join(d.text for d in deltas if d.kind == "text") == "Sunny, 72F."
    assert [d.item for d in deltas if d.kind == "item"][:1] == ["tool_called"]
    assert [e.tool for e in mine if isinstance(e, events.AgentToolCall)] == ["fetch_weather"]


async def test_pattern_1_simple_agent_workflow(seed_pool: ax.Pool, engine: Engine) -> None:
    flow, result = await _flow("pattern1_flow", "What's the weather in Paris?")
    assert result == {
        "success": True,
        "result": "Sunny, 72F.",
        "outputs": {"weather_assistant": "Sunny, 72F."},
    }
    assert await _children(engine, flow.agent_id, 1) == ["weather_assistant"]


async def test_quick_start_run_your_first_workflow(
    seed_pool: ax.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    your_db_connection = seed004.your_db_connection
    your_schema_text = seed004.your_schema_text

    # your_project/main.py
    async def main() -> None:
        orchestrator = AgentOrchestrator()

        result = await orchestrator.run(
            user_query="Show me sales data for last quarter",
            context_data={"database_connector": your_db_connection, "schema": your_schema_text},
        )

        print(result)

    with ax.use_agents(seed004.quickstart):
        await main()
    printed = capsys.readouterr().out
    answer = "'North leads.'"
    assert (
        printed
        == f"{{'success': True, 'result': {answer}, 'outputs': {{'data_analyzer': {answer}}}}}\n"
    )


async def test_multi_agent_orchestration_routes(seed_pool: ax.Pool, engine: Engine) -> None:
    flow, result = await _flow("workflow_flow", "What's the weather in Paris?", "execute")
    assert result == {"success": True, "result": "Sunny in Paris."}
    assert await _children(engine, flow.agent_id, 2) == ["intent_analyzer", "weather_agent"]
    flow, result = await _flow("workflow_flow", "Tell me a joke", "execute")
    assert result == {"success": True, "result": "Happy to help."}
    assert await _children(engine, flow.agent_id, 2) == ["intent_analyzer", "general_agent"]


async def test_extend_for_your_workflow(seed_pool: ax.Pool, engine: Engine) -> None:
    flow, result = await _flow(
        "workflow_flow", "Analyze sales data for Q4", "extend", filters={"year": 2024}
    )
    assert result == {
        "success": True,
        "response": "Summary for: Analyze sales data for Q4",
        "result": "North leads.",
    }
    assert await _children(engine, flow.agent_id, 3) == [
        "intent_analyzer",
        "data_analyst",
        "synthesizer",
    ]


async def test_pattern_2_sequential(seed_pool: ax.Pool, engine: Engine) -> None:
    flow, result = await _flow("workflow_flow", "Analyze sales", "sequential")
    assert result == {"success": True, "response": "Summary for: Analyze sales"}
    assert await _children(engine, flow.agent_id, 4) == [
        "intent_analyzer",
        "planner",
        "executor",
        "synthesizer",
    ]


async def test_pattern_3_agent_analysis_task(seed_pool: ax.Pool, engine: Engine) -> None:
    flow, result = await _flow("run_agent_analysis_task", "-", region="north")
    assert result["result"] == "North leads."
    assert await _children(engine, flow.agent_id, 1) == ["data_analyzer"]


@pytest.mark.parametrize(
    ("query", "specialist", "output"),
    [
        ("a report please", "report_generator", "report attached"),
        ("write a query", "query_specialist", "SELECT region FROM sales"),
        ("hello", "general_assistant", "Happy to help."),
    ],
)
async def test_pattern_4_dynamic_routing(
    seed_pool: ax.Pool, engine: Engine, query: str, specialist: str, output: str
) -> None:
    flow, result = await _flow("workflow_flow", query, "dynamic")
    assert result == {"success": True, "result": output}
    assert await _children(engine, flow.agent_id, 2) == ["router", specialist]


async def test_guardrails_return_ok_and_message(seed_pool: ax.Pool) -> None:
    refused = await ax.enqueue_agent("query_specialist", input="query: DROP TABLE sales")
    with pytest.raises(ax.TaskFailedError, match="Destructive queries not allowed"):
        await ax.get_result(refused, timeout=scaled(60))
    bad = await ax.enqueue_agent("query_generator", input="query: SELECT (1")
    with pytest.raises(ax.TaskFailedError, match="Invalid query syntax"):
        await ax.get_result(bad, timeout=scaled(60))
    script = await ax.enqueue_agent("weather_agent", input="<script>alert(1)</script>")
    with pytest.raises(ax.TaskFailedError, match="Malicious content detected"):
        await ax.get_result(script, timeout=scaled(60))
    tripped = [
        e for e in await _events(refused.agent_id) if isinstance(e, events.AgentGuardrailTripped)
    ]
    assert [(e.guardrail, e.stage, e.reason) for e in tripped] == [
        ("validate_query", "input", "Destructive queries not allowed")
    ]
    ok = await ax.enqueue_agent("query_specialist", input="query: SELECT region FROM sales")
    assert (await ax.get_result(ok, timeout=scaled(60))).output == "SELECT region FROM sales"
    assert not [
        e for e in await _events(refused.agent_id) if isinstance(e, events.TaskRetried)
    ]  # a refusal is not retried
