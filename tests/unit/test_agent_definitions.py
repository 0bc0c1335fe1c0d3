"""Agents as data (`agentexec.declarative`): registries, building SDK agents, guardrails and
the shared context, run in process on a scripted model; seed 004's samples as written, up to
names."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from agents import Agent, RunConfig, RunContextWrapper, Runner, function_tool
from agents.exceptions import (
    InputGuardrailTripwireTriggered,
    MaxTurnsExceeded,
    OutputGuardrailTripwireTriggered,
)
from pydantic import BaseModel, Field

import agentexec as ax
from agentexec.declarative import AgentRun
from agentexec.testing import ScriptedModel, disable_tracing, handoff, reply, tool_call


@pytest.fixture(autouse=True)
def _no_tracing() -> None:
    disable_tracing()


@pytest.fixture
def app() -> Iterator[ax.Agents]:
    """A registry of this test's own, current for `ax.register_*`."""
    with ax.use_agents(ax.Agents()) as agents:
        yield agents


def _weather_tool(agents: ax.Agents) -> Any:
    @agents.register_tool(name="get_weather", description="Get weather for a city", category="api")
    @function_tool
    async def get_weather(ctx: RunContextWrapper[ax.AgentContext], city: str) -> dict[str, Any]:
        ctx.context.add_discovered_item("weather", city)
        return {"temperature": 72, "conditions": "sunny"}

    return get_weather


def test_registries_belong_to_their_application(app: ax.Agents) -> None:
    other = ax.Agents()
    _weather_tool(other)
    other.register_agent(ax.AgentDefinition(name="weather", tools=["get_weather"]))
    assert [t.name for t in other.tools.list()] == ["get_weather"]
    # The current registry (this test's) and the default one see none of it.
    assert ax.tools.list() == [] and ax.agents.list() == []
    assert "weather" not in ax.agents
    with ax.use_agents(other):
        assert [a.name for a in ax.agents.list()] == ["weather"]


def test_registries_list_by_category_in_registration_order(app: ax.Agents) -> None:
    _weather_tool(app)

    @ax.register_tool(name="execute_query", description="Execute database query", category="db")
    @function_tool
    async def execute_query(ctx: RunContextWrapper[Any], query: str) -> dict[str, Any]:
        return {"success": True}

    ax.register_agent(ax.AgentDefinition(name="a", tools=["get_weather"]))
    ax.register_agent(ax.AgentDefinition(name="b", tools=["execute_query", "get_weather"]))
    assert [t.name for t in ax.tools.list()] == ["get_weather", "execute_query"]
    assert [t.name for t in ax.tools.list(category="db")] == ["execute_query"]
    assert ax.tools.get("execute_query").description == "Execute database query"
    assert [a.name for a in ax.agents.list()] == ["a", "b"]


def test_unknown_names_fail_at_registration_naming_the_known_ones(app: ax.Agents) -> None:
    _weather_tool(app)
    with pytest.raises(ax.AgentDefinitionError, match=r"'get_wether'.*known: get_weather"):
        ax.register_agent(ax.AgentDefinition(name="a", tools=["get_wether"]))
    with pytest.raises(ax.AgentDefinitionError, match=r"guardrail.*'strict'.*known: none"):
        ax.register_agent(ax.AgentDefinition(name="a", guardrails=["strict"]))
    with pytest.raises(ax.AgentDefinitionError, match=r"handoff agent.*'writer'"):
        ax.register_agent(ax.AgentDefinition(name="a", handoffs=["writer"]))
    with pytest.raises(ax.AgentDefinitionError, match=r"no agent named 'nobody'; known"):
        ax.agents.get("nobody")
    assert ax.agents.list() == []
    with pytest.raises(ax.AgentDefinitionError, match="list of registered names"):
        ax.AgentDefinition(name="a", tools="get_weather")  # type: ignore[arg-type]


def test_a_name_is_registered_once(app: ax.Agents) -> None:
    ax.register_agent(ax.AgentDefinition(name="a", instructions="one"))
    with pytest.raises(ax.AgentDefinitionError, match="registered already"):
        ax.register_agent(ax.AgentDefinition(name="a", instructions="two"))


async def test_build_gives_an_sdk_agent_with_dynamic_instructions_and_context_tools(
    app: ax.Agents,
) -> None:
    # Seed: "Dynamic Instructions".
    def dynamic_instructions(context: ax.AgentContext, agent_def: ax.AgentDefinition) -> str:
        return f"""
You are a data analyst.

Database Schema:
{context.schema}

User Filters: {context.filters}

Analyze and generate queries.
"""

    _weather_tool(app)
    definition = ax.register_agent(
        ax.AgentDefinition(
            name="analyzer",
            description="...",
            instructions=dynamic_instructions,
            tools=["get_weather"],
            model="gpt-4o-mini",
        )
    )
    context = ax.AgentContext(schema="sales(region, amount)", filters={"year": 2024})
    agent = definition.build(context)
    assert isinstance(agent, Agent) and agent.name == "analyzer"
    assert [t.name for t in agent.tools] == ["get_weather"] and agent.model == "gpt-4o-mini"
    model = ScriptedModel([tool_call("get_weather", city="Paris"), reply("done")])
    result = await Runner.run(agent, "go", context=context, run_config=RunConfig(model=model))
    assert result.final_output == "done"
    prompt = model.calls[0].instructions or ""
    assert "sales(region, amount)" in prompt and "{'year': 2024}" in prompt
    assert context.discovered == {"weather": ["Paris"]} and context.has_data


async def test_guardrails_returning_ok_and_message_stop_a_run(app: ax.Agents) -> None:
    # Seed: "guardrails/ - Input Validation", registered by name.
    def validate_user_input(ctx: Any, user_input: str) -> tuple[bool, str]:
        if len(user_input) > 10000:
            return False, "Input too long"
        if "DROP" in user_input.upper():
            return False, "Destructive queries not allowed"
        return True, ""

    async def no_secrets(ctx: Any, output: Any) -> tuple[bool, str]:
        return ("password" not in str(output)), "The answer leaks a password"

    ax.register_guardrail("validate_user_input", validate_user_input)
    ax.register_guardrail("no_secrets", no_secrets, stage="output")
    definition = ax.register_agent(
        ax.AgentDefinition(name="a", guardrails=["validate_user_input", "no_secrets"])
    )
    model = ScriptedModel([reply("fine")])
    config = RunConfig(model=model)
    assert (await Runner.run(definition.build(), "hello", run_config=config)).final_output == "fine"
    with pytest.raises(InputGuardrailTripwireTriggered) as tripped:
        await Runner.run(definition.build(), "DROP TABLE x", run_config=config)
    assert tripped.value.guardrail_result.output.output_info == "Destructive queries not allowed"
    assert len(model.calls) == 1  # the refused input never reached the model
    leaky = ScriptedModel([reply("the password is hunter2")])
    with pytest.raises(OutputGuardrailTripwireTriggered):
        await Runner.run(definition.build(), "hi", run_config=RunConfig(model=leaky))


async def test_handoffs_name_registered_agents(app: ax.Agents) -> None:
    ax.register_agent(ax.AgentDefinition(name="writer", description="Writes the answer"))
    router = ax.register_agent(ax.AgentDefinition(name="router", handoffs=["writer"]))
    agent = router.build()
    assert [h.name for h in agent.handoffs] == ["writer"]  # type: ignore[union-attr]
    model = ScriptedModel([handoff("writer"), reply("written")])
    result = await Runner.run(agent, "go", run_config=RunConfig(model=model))
    assert (result.final_output, result.last_agent.name) == ("written", "writer")


async def test_the_seed_run_the_agent_sample(app: ax.Agents) -> None:
    # Seed: "Define a Tool", "Define an Agent", "Run the Agent" (registry getters renamed).
    @ax.register_tool(name="get_weather", description="Get weather for a city", category="api")
    @function_tool
    async def get_weather(ctx: RunContextWrapper[Any], city: str) -> dict[str, Any]:
        # Your implementation
        return {"temperature": 72, "conditions": "sunny"}

    weather_agent = ax.AgentDefinition(
        name="weather_assistant",
        description="Helps with weather queries",
        instructions="You help users get weather information. Use the get_weather tool.",
        tools=["get_weather"],
        model="gpt-4o-mini",
    )
    ax.register_agent(weather_agent)

    agent_def = ax.agents.get("weather_assistant")
    tools = ax.tools.get_tool_functions(agent_def.tools)
    agent = Agent(
        name=agent_def.name,
        instructions=agent_def.instructions,
        model=agent_def.model,
        tools=tools,
    )
    model = ScriptedModel([tool_call("get_weather", city="Paris"), reply("Sunny, 72F.")])
    result = await Runner.run(
        agent, "What's the weather in Paris?", run_config=RunConfig(model=model)
    )
    assert result.final_output == "Sunny, 72F."


class MyAppContext(ax.AgentContext):
    """Seed: "Extend for your use case" (a Pydantic model here, not a dataclass)."""

    workspace_id: str = ""
    user_preferences: dict[str, Any] = Field(default_factory=dict)
    custom_metadata: dict[str, Any] = Field(default_factory=dict)


def test_the_context_crosses_a_process_boundary_as_its_own_type() -> None:
    # Seed: "AgentContext" (database_connector stays in the process that has it).
    context = MyAppContext(
        database_connector=object(),
        schema="Your schema...",
        filters={"user_id": "123"},
        workspace_id="w1",
    )
    context.add_discovered_item("users", {"id": 1})
    assert context.has_data and not ax.AgentContext().has_data
    run = AgentRun(
        context=context.model_dump(mode="json"),
        context_type=f"{__name__}:MyAppContext",
    )
    rebuilt = AgentRun.model_validate_json(run.model_dump_json()).load_context(
        ax.AgentContext, "test"
    )
    assert isinstance(rebuilt, MyAppContext) and rebuilt.database_connector is None
    assert rebuilt.model_dump() == context.model_dump()  # all but the connector


def test_agent_tasks_retry_only_transient_errors() -> None:
    transient = ax.transient_errors()
    request = httpx.Request("POST", "https://api.openai.com")
    response = httpx.Response(429, request=request)
    assert isinstance(openai.RateLimitError("slow down", response=response, body=None), transient)
    assert isinstance(openai.APITimeoutError(request), transient)
    assert isinstance(ax.RedisUnavailableError("down"), transient)
    for deterministic in (
        MaxTurnsExceeded("10"),
        ValueError("bad"),
        ax.GuardrailTrippedError("no"),
    ):
        assert not isinstance(deterministic, transient)
    pool = ax.Pool(queue_name="agent_retries")
    agents = _module_app()
    pool.agent(agents.agents.get("plain"))
    pool.agent(agents.agents.get("plain"), name="plain_any", retry_on=(Exception,), max_retries=1)
    assert pool.definitions["plain"].retry_on == transient
    assert pool.definitions["plain_any"].retry_on == (Exception,)
    assert pool.definitions["plain_any"].max_retries == 1


MODULE_APP = ax.Agents()


def _module_app() -> ax.Agents:
    if "plain" not in MODULE_APP.agents:
        MODULE_APP.register_agent(ax.AgentDefinition(name="plain"))
    return MODULE_APP


def test_a_registry_workers_cannot_find_is_refused_when_the_task_is_declared() -> None:
    local = ax.Agents()
    local.register_agent(ax.AgentDefinition(name="hidden"))
    with pytest.raises(ax.ConfigurationError, match="not a module-level name"):
        ax.Pool(queue_name="agent_hidden").agent(local.agents.get("hidden"))


def test_an_enqueuer_imports_no_agents_sdk() -> None:
    code = (
        "import sys, agentexec as ax\n"
        "names = [ax.enqueue_agent, ax.AgentDefinition, ax.AgentContext, ax.register_agent,\n"
        "         ax.AgentOrchestrator, ax.agents.list(), ax.transient_errors]\n"
        "print('agents' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class _NotAContext(BaseModel):
    x: int = 0


def test_definitions_are_checked_when_declared() -> None:
    with pytest.raises(ax.AgentDefinitionError, match="instructions"):
        ax.AgentDefinition(name="a", instructions=3)  # type: ignore[arg-type]
    with pytest.raises(ax.AgentDefinitionError, match="context_type"):
        ax.AgentDefinition(name="a", context_type=_NotAContext)  # type: ignore[arg-type]
    with pytest.raises(ax.AgentDefinitionError, match="max_turns"):
        ax.AgentDefinition(name="a", max_turns=0)


def test_agent_tasks_pickle_to_workers_by_reference_to_their_registry() -> None:
    import pickle

    from agentexec.declarative.registry import current_agents

    pool = ax.Pool(queue_name="agent_pickles")
    pool.agent(_module_app().agents.get("plain"))
    handler = pickle.loads(pickle.dumps(pool.definitions["plain"])).handler
    assert handler.__self__.agents is MODULE_APP and handler.__self__.name == "plain"
    default = current_agents()
    assert pickle.loads(pickle.dumps(default)) is default
    assert __name__ in MODULE_APP.modules  # a worker imports this module to refill it


class _Opaque(ax.AgentContext):
    handle: Any = None


async def test_enqueue_agent_refuses_what_cannot_cross_to_a_worker() -> None:
    with pytest.raises(ax.ContextError, match="cannot be serialised"):
        await ax.enqueue_agent("a", context=_Opaque(handle=object()))
    with pytest.raises(ValueError, match="max_turns=0"):
        await ax.enqueue_agent("a", max_turns=0)
    with pytest.raises(ax.ContextError, match=r"pass an ax\.AgentContext"):
        await ax.enqueue_agent("a", context={"x": 1})  # type: ignore[arg-type]


async def test_register_tool_takes_plain_functions_and_hosted_tools(app: ax.Agents) -> None:
    from agents import WebSearchTool

    @ax.register_tool(name="add", category="math")
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    ax.register_tool(category="api")(WebSearchTool())
    assert [(t.name, t.category) for t in ax.tools.list()] == [
        ("add", "math"),
        ("web_search", "api"),
    ]
    with pytest.raises(ax.AgentDefinitionError, match="is not a tool"):
        ax.register_tool(name="x")(42)
    definition = ax.register_agent(ax.AgentDefinition(name="calc", tools=["add"]))
    model = ScriptedModel([tool_call("add", a=2, b=3), reply("5")])
    result = await Runner.run(definition.build(), "2+3?", run_config=RunConfig(model=model))
    outputs = [i for i in model.calls[1].input if i.get("type") == "function_call_output"]
    assert (result.final_output, outputs[0]["output"]) == ("5", "5")


def test_a_tool_needing_the_context_must_type_it(app: ax.Agents) -> None:
    def plain(ctx, city: str) -> str:  # type: ignore[no-untyped-def]
        return city

    with pytest.raises(ax.AgentDefinitionError, match=r"'ctx' has no type .*RunContextWrapper"):
        ax.register_tool(name="plain")(plain)

    def typed(ctx: RunContextWrapper[Any], city: str) -> str:
        return city

    ax.register_tool(name="typed")(typed)
    assert list(ax.tools.get("typed").tool.params_json_schema["properties"]) == ["city"]


async def test_the_base_orchestrator_needs_steps_unless_one_agent_is_registered(
    app: ax.Agents,
) -> None:
    ax.register_agent(ax.AgentDefinition(name="a"))
    ax.register_agent(ax.AgentDefinition(name="b"))
    with pytest.raises(ax.ConfigurationError, match=r"holds 2 agents \(a, b\); pass"):
        await ax.AgentOrchestrator().run("hello", {})
    with pytest.raises(ax.ConfigurationError, match="steps="):
        ax.AgentOrchestrator(steps="a")  # type: ignore[arg-type]


async def test_the_workflows_user_query_fills_the_context() -> None:
    class Mine(ax.AgentOrchestrator):
        async def execute(self, user_query: str, context_data: dict[str, Any]) -> Any:
            return self.setup_context(**context_data)

    orchestrator = Mine(ax.Agents())
    context = await orchestrator.execute("Q4 sales?", {"schema": "s"})
    assert (orchestrator.user_query, context.user_query) == ("Q4 sales?", "Q4 sales?")


def test_agent_stream_outside_a_task_needs_an_id() -> None:
    with pytest.raises(ax.ConfigurationError, match="no agent_id given and no task"):
        ax.AgentStream(event_callback=print)


def test_stream_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentexec.config import Settings

    monkeypatch.setenv("AGENTEXEC_STREAM_INTERVAL", "off")
    monkeypatch.setenv("AGENTEXEC_STREAM_CHARS", "500")
    settings = Settings()
    assert (settings.stream_interval, settings.stream_chars) == (None, 500)
    monkeypatch.setenv("AGENTEXEC_STREAM_INTERVAL", "-1")
    with pytest.raises(ValueError, match="stream_interval"):
        Settings()
    # The runner's defaults are the settings; explicit values win.
    ax.CONF.stream_interval = None
    ax.CONF.stream_chars = 300
    runner = ax.OpenAIRunner(uuid.uuid4())
    assert (runner.stream_interval, runner.stream_chars) == (None, 300)
    runner = ax.OpenAIRunner(uuid.uuid4(), stream_interval=1.0, stream_chars=10)
    assert (runner.stream_interval, runner.stream_chars) == (1.0, 10)
