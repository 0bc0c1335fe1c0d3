"""Seed 004's ("Agents Core") samples that run as tasks, as written in the seed up to names,
served by one pool on a scripted model (`tests/integration/test_seed_agents.py`).

The seed registers into one global registry, but its samples reuse names (two
`weather_assistant`s, several `execute_query` tools), so each group of samples registers into
a registry of its own, made current around the seed's code with `ax.use_agents`. Names changed
from the seed: `agents_core` -> `agentexec` (`ax`), `StreamingHelper` -> `AgentStream`,
`_run_agent` -> `run_agent`, `output_dataclass` -> `output_type`, Prefect's `@task` ->
`@pool.task`; tool `ctx` parameters are typed `RunContextWrapper[AgentContext]` (the seed's
untyped `ctx` is refused, see the test). What the seed leaves to the reader
(`your_weather_api`, `your_db_connection`, the agents of patterns 2 and 4) is defined here.

Workers get `AGENTEXEC_MODEL_OVERRIDE=tests.apps.seed004:SCRIPT`: every agent's model is the
scripted model below, which plays each agent's script, found from its instructions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from agents import RunContextWrapper, function_tool
from pydantic import BaseModel

import agentexec as ax
from agentexec import (
    AgentContext,
    AgentDefinition,
    AgentOrchestrator,
    AgentSession,
    AgentStream,
    register_agent,
    register_tool,
)
from agentexec.testing import ScriptedCall, ScriptedModel, Step, disable_tracing, reply, tool_call

disable_tracing()


# -- What the seed leaves to the reader ------------------------------------------------------


class FakeWeatherApi:
    async def get(self, city: str) -> dict[str, Any]:
        return {"city": city, "temperature": 72, "conditions": "sunny"}


class FakeDatabase:
    """`your_db_connection`: answers every query with two rows."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    async def execute(self, query: str) -> list[dict[str, Any]]:
        self.queries.append(query)
        return [{"region": "north", "sales": 120}, {"region": "south", "sales": 80}]

    async def get_user(self, user_id: str, filters: dict[str, Any]) -> dict[str, Any]:
        return {"id": user_id, "name": "Ada", "filters": filters}


your_weather_api = FakeWeatherApi()
your_db_connection = FakeDatabase()
your_schema_text = "sales(region text, sales int, quarter text)"


# -- Pattern 1: Simple Agent Workflow --------------------------------------------------------

pattern1 = ax.Agents(connect=lambda: your_db_connection)

with ax.use_agents(pattern1):
    # Define tool
    @register_tool(
        name="fetch_weather",
        description="Fetch weather data",
        category="api",
        parameters_description="city (str): City name",
        returns_description="Weather data dict",
    )
    @function_tool
    async def fetch_weather(ctx: RunContextWrapper[AgentContext], city: str) -> dict:  # type: ignore[type-arg]
        # Call external API
        weather_data = await your_weather_api.get(city)
        return weather_data

    # Define agent
    weather_agent = AgentDefinition(
        name="weather_assistant",
        description="Provides weather information",
        instructions="You help users get weather information. Use fetch_weather tool.",
        tools=["fetch_weather"],
        model="gpt-4o-mini",
    )
    register_agent(weather_agent)


# -- Quick Start: 2. Define Your First Agent, 3. Define Your First Tool ------------------------

quickstart = ax.Agents(connect=lambda: your_db_connection)

with ax.use_agents(quickstart):

    @register_tool(
        name="execute_query",
        description="Execute database query",
        category="database",
        parameters_description="query (str): SQL query",
        returns_description="Query results as list of dicts",
    )
    @function_tool
    async def execute_query(ctx: RunContextWrapper[AgentContext], query: str) -> dict:  # type: ignore[type-arg]
        db = ctx.context.database_connector
        results = await db.execute(query)
        return {"success": True, "data": results}

    # Not in the seed, which names it in data_analyzer's tools.
    @register_tool(name="generate_report", description="Write a report", category="reports")
    @function_tool
    async def generate_report(ctx: RunContextWrapper[AgentContext], title: str) -> str:
        return f"# {title}"

    data_analyzer = AgentDefinition(
        name="data_analyzer",
        description="Analyzes database data",
        instructions="""
You are a data analyst. Analyze the data and provide insights.

Use the available tools to:
1. Execute queries to fetch data
2. Analyze patterns
3. Generate reports
""",
        tools=["execute_query", "generate_report"],
        model="gpt-4o-mini",
    )

    register_agent(data_analyzer)


# -- Workflows: Multi-Agent Orchestration, Extend for your workflow, patterns 2 to 4 ---------

workflow = ax.Agents(connect=lambda: your_db_connection)


class Intent(BaseModel):
    category: str


class RouteIntent(BaseModel):
    intent: str


@dataclass
class MyAppContext(AgentContext):
    workspace_id: str = ""
    user_preferences: dict = field(default_factory=dict)  # type: ignore[type-arg]
    custom_metadata: dict = field(default_factory=dict)  # type: ignore[type-arg]


def validate_query(ctx: Any, query: str) -> tuple[bool, str]:
    """Validate SQL/Cypher query.

    Returns:
        (is_valid, error_message)
    """
    # Check for dangerous patterns
    if "DROP" in query.upper() or "DELETE" in query.upper():
        return False, "Destructive queries not allowed"

    # Check syntax (use your parser)
    if not is_valid_syntax(query):
        return False, "Invalid query syntax"

    return True, ""


def validate_user_input(ctx: Any, user_input: str) -> tuple[bool, str]:
    """Validate user input."""
    if len(user_input) > 10000:
        return False, "Input too long"

    if contains_malicious_content(user_input):
        return False, "Malicious content detected"

    return True, ""


def is_valid_syntax(query: str) -> bool:
    return query.count("(") == query.count(")")


def contains_malicious_content(text: str) -> bool:
    return "<script>" in text.lower()


def _agent(name: str, **options: Any) -> AgentDefinition:
    """An agent the seed names but does not define."""
    return register_agent(
        AgentDefinition(
            name=name,
            description=f"The {name}",
            instructions=f"You are the {name}.",
            model="gpt-4o-mini",
            **options,
        )
    )


with ax.use_agents(workflow):
    # tools/database_tools.py
    @register_tool(
        name="execute_query",
        description="Execute database query",
        category="database",
        parameters_description="query (str): Query to execute",
        returns_description="Query results",
    )
    @function_tool
    async def execute_workflow_query(ctx: RunContextWrapper[AgentContext], query: str) -> dict:  # type: ignore[type-arg]
        db = ctx.context.database_connector
        results = await db.execute(query)
        return {"success": True, "data": results}

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

    # Register in orchestrator
    orchestrator = AgentOrchestrator()
    orchestrator.register_guardrail("validate_query", validate_query)
    orchestrator.register_guardrail("validate_user_input", validate_user_input)

    _agent("intent_analyzer", output_type=Intent)
    _agent("weather_agent", guardrails=["validate_user_input"])
    _agent("general_agent")
    _agent("query_generator", tools=["execute_query"], guardrails=["validate_query"])
    _agent("data_analyst", tools=["execute_query", "fetch_user_data"])
    _agent("synthesizer")
    _agent("planner")
    _agent("executor")
    _agent("router", output_type=RouteIntent)
    _agent("query_specialist", guardrails=["validate_query"])
    _agent("analysis_specialist")
    _agent("report_generator")
    _agent("general_assistant")


# Seed: "Multi-Agent Orchestration".
class MyOrchestrator(AgentOrchestrator):
    async def execute(self, user_query: str, context_data: dict):  # type: ignore[no-untyped-def,type-arg]
        session = self.setup_session()
        context = self.setup_context(**context_data)

        # Step 1: Analyze intent
        intent = await self.run_agent("intent_analyzer", session, context)

        # Step 2: Route to specialist
        if intent.category == "weather":
            result = await self.run_agent("weather_agent", session, context)
        else:
            result = await self.run_agent("general_agent", session, context)

        return {"success": True, "result": result}


# Seed: "4. orchestrator.py", "Extend for your workflow" (`MyOrchestrator` there).
class MyWorkflowOrchestrator(AgentOrchestrator):
    async def run(self, user_query: str, context_data: dict):  # type: ignore[no-untyped-def,type-arg]
        session = AgentSession(session_id=str(uuid.uuid4()))
        context = MyAppContext(**context_data)

        # Your workflow logic
        # Step 1: Analyze intent
        intent = await self.run_agent("intent_analyzer", session, context)

        # Step 2: Route based on intent
        if intent.category == "query":
            result = await self.run_agent("query_generator", session, context)
        elif intent.category == "analysis":
            result = await self.run_agent("data_analyst", session, context)

        # Step 3: Synthesize response
        response = await self.run_agent("synthesizer", session, context)

        return {"success": True, "response": response, "result": result}


# Seed: "Pattern 2: Multi-Agent Sequential Workflow" (`MyOrchestrator` there).
class SequentialOrchestrator(AgentOrchestrator):
    async def run(self, user_query: str, context_data: dict):  # type: ignore[no-untyped-def,type-arg]
        session = AgentSession(session_id=str(uuid.uuid4()))
        context = AgentContext(**context_data)

        # Step 1: Analyze intent
        intent_result = await self.run_agent("intent_analyzer", session, context)

        # Step 2: Generate plan
        plan_result = await self.run_agent("planner", session, context)

        # Step 3: Execute plan
        execution_result = await self.run_agent("executor", session, context)

        # Step 4: Synthesize response
        final_result = await self.run_agent("synthesizer", session, context)

        self.steps_seen = [intent_result.category, plan_result, execution_result]
        return {"success": True, "response": final_result}


# Seed: "Pattern 4: Dynamic Routing Based on Agent Output".
class DynamicOrchestrator(AgentOrchestrator):
    async def run(self, user_query: str, context_data: dict):  # type: ignore[no-untyped-def,type-arg]
        session = AgentSession(session_id=str(uuid.uuid4()))
        context = AgentContext(**context_data)

        # Initial routing agent
        routing_result = await self.run_agent("router", session, context)

        # Route based on output
        if routing_result.intent == "query":
            result = await self.run_agent("query_specialist", session, context)
        elif routing_result.intent == "analysis":
            result = await self.run_agent("analysis_specialist", session, context)
        elif routing_result.intent == "report":
            result = await self.run_agent("report_generator", session, context)
        else:
            result = await self.run_agent("general_assistant", session, context)

        return {"success": True, "result": result}


# -- The pool: every agent a task, and the seed's workflows as tasks --------------------------

# The queue of tests/apps/agent_defs.py, whose agents have the same names: a task name known
# on two queues in one process is enqueued on the default queue when none is given, and the
# test process imports both apps. Each test has its own Redis namespace, so the two pools,
# never running at once, never share a task.
pool = ax.Pool(queue_name="agent_defs", num_workers=1, concurrency=8)
for registry in (pattern1, quickstart, workflow):
    for definition in registry.agents.list():
        pool.agent(definition, agents=registry)


class Query(BaseModel):
    query: str
    pattern: str = ""
    context_data: dict[str, Any] = {}


WORKFLOWS: dict[str, type[AgentOrchestrator]] = {
    "extend": MyWorkflowOrchestrator,
    "sequential": SequentialOrchestrator,
    "dynamic": DynamicOrchestrator,
}


@pool.task("pattern1_flow")
async def pattern1_flow(agent_id: UUID, context: Query) -> dict[str, Any]:
    with ax.use_agents(pattern1):
        # Run
        orchestrator = AgentOrchestrator()
        result = await orchestrator.run(
            user_query=context.query,
            context_data={"database_connector": None},  # Not needed for this example
        )
    return result


@pool.task("workflow_flow")
async def workflow_flow(agent_id: UUID, context: Query) -> Any:
    with ax.use_agents(workflow):
        if context.pattern == "execute":
            return await MyOrchestrator().execute(context.query, context.context_data)
        return await WORKFLOWS[context.pattern]().run(context.query, context.context_data)


# Seed: "Pattern 3: Agent + Workflow Integration" (a Prefect task there).
@pool.task("run_agent_analysis_task")
async def run_agent_analysis_task(agent_id: UUID, context: Query) -> Any:
    """Run AI agent for analysis."""
    data = context.context_data
    with ax.use_agents(quickstart):
        orchestrator = AgentOrchestrator()
        result = await orchestrator.run(
            user_query=f"Analyze this data: {data}",
            context_data={"database_connector": your_db_connection, "data": data},
        )
    return result


SSE_EVENTS: list[dict[str, Any]] = []


def your_sse_callback(event: dict[str, Any]) -> None:
    SSE_EVENTS.append(event)


# Seed: "StreamingHelper", in a task (the events go to that task's feed).
@pool.task("streaming_helper")
async def streaming_helper(agent_id: UUID, context: Query) -> list[str]:
    streaming = AgentStream(event_callback=your_sse_callback)

    streaming.emit_agent_start("analyzer", iteration=1)
    streaming.emit_answer("The weather is sunny!", sources=[])
    streaming.emit_error("Something went wrong")
    return [e["kind"] for e in SSE_EVENTS]


# -- The scripted model: each agent's turns, found from its instructions --------------------


def _intent(call: ScriptedCall) -> Any:
    text = call.last_user_message.lower()
    category = next(
        (c for c in ("weather", "query", "analysis", "report") if c[:5] in text), "other"
    )
    return reply(Intent(category=category).model_dump_json())


def _route(call: ScriptedCall) -> Any:
    text = call.last_user_message.lower()
    intent = next((c for c in ("query", "analysis", "report") if c[:5] in text), "other")
    return reply(RouteIntent(intent=intent).model_dump_json())


SCRIPTS: dict[str, list[Step]] = {
    "Use fetch_weather tool": [tool_call("fetch_weather", city="Paris"), reply("Sunny, 72F.")],
    "You are a data analyst": [tool_call("execute_query", query="SELECT 1"), reply("North leads.")],
    "You are the intent_analyzer": [_intent],
    "You are the router": [_route],
    "You are the weather_agent": [reply("Sunny in Paris.")],
    "You are the general_agent": [reply("Happy to help.")],
    "You are the general_assistant": [reply("Happy to help.")],
    "You are the query_generator": [
        tool_call("execute_query", query="SELECT region, sum(sales) FROM sales GROUP BY region"),
        reply("SELECT region, sum(sales) FROM sales GROUP BY region"),
    ],
    "You are the data_analyst": [
        tool_call("execute_query", query="SELECT * FROM sales"),
        reply("North leads."),
    ],
    "You are the synthesizer": [lambda call: reply(f"Summary for: {call.last_user_message}")],
    "You are the planner": [reply("1. look up 2. summarise")],
    "You are the executor": [reply("looked up")],
    "You are the query_specialist": [reply("SELECT region FROM sales")],
    "You are the analysis_specialist": [reply("analysed")],
    "You are the report_generator": [reply("report attached")],
}


def _turn(index: int) -> Step:
    def play(call: ScriptedCall) -> Any:
        instructions = call.instructions or ""
        key = next((k for k in SCRIPTS if k in instructions), None)
        if key is None:
            raise AssertionError(f"no script for an agent instructed {instructions[:60]!r}")
        step = SCRIPTS[key][index]
        return step(call) if callable(step) else step

    return play


SCRIPT = ScriptedModel([_turn(i) for i in range(2)])
