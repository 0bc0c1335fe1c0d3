"""Seed 004's agents, tools, guardrails and orchestrator ("Agents Core"), declared as data in
one application registry and served as tasks by a real pool, on a scripted model.

Workers get `AGENTEXEC_MODEL_OVERRIDE=tests.apps.agent_defs:SCRIPT`: every agent's model is
the scripted model below, which plays each agent's own script (picked by the agent's name at
the start of its instructions).
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

from agents import RunContextWrapper, SQLiteSession, function_tool
from pydantic import BaseModel, Field

import agentexec as ax
from agentexec.runtime import current
from agentexec.tasks import running_task
from agentexec.testing import ScriptedCall, ScriptedModel, Step, disable_tracing, reply, tool_call

disable_tracing()


def sessions_file() -> Path:
    """The SQLite file of the SDK sessions: one per Redis the tests run against, so that a
    parallel test process (its own Redis) never deletes it under these runs."""
    digest = hashlib.sha256(current().settings.redis_url.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"agentexec-test-agent-sessions-{digest}.db"


app = ax.Agents(session_factory=lambda session_id: SQLiteSession(session_id, str(sessions_file())))


# -- Tools (seed: "Define a Tool", "tools/ - Tool Implementations") -------------------------


@app.register_tool(name="get_weather", description="Get weather for a city", category="api")
@function_tool
async def get_weather(ctx: RunContextWrapper[ax.AgentContext], city: str) -> dict[str, Any]:
    ctx.context.add_discovered_item("weather", {"city": city, "conditions": "sunny"})
    return {"temperature": 72, "conditions": "sunny"}


@app.register_tool(
    name="execute_query",
    description="Execute database query",
    category="database",
    parameters_description="query (str): SQL/Cypher query to execute",
    returns_description="Dict with success status and results",
)
@function_tool
async def execute_query(ctx: RunContextWrapper[ax.AgentContext], query: str) -> dict[str, Any]:
    rows = [{"region": "north", "sales": 120}, {"region": "south", "sales": 80}]
    ctx.context.query_results.extend(rows)
    return {"success": True, "data": rows}


# -- Guardrails (seed: "guardrails/ - Input Validation") ------------------------------------


def validate_user_input(ctx: Any, user_input: str) -> tuple[bool, str]:
    if len(user_input) > 10000:
        return False, "Input too long"
    if "DROP" in user_input.upper() or "DELETE" in user_input.upper():
        return False, "Destructive queries not allowed"
    return True, ""


app.register_guardrail("validate_user_input", validate_user_input)


# -- Agents (seed: "Define an Agent", "Dynamic Instructions", patterns 2 and 4) ------------


class Intent(BaseModel):
    category: str


def analyst_instructions(context: ax.AgentContext, agent_def: ax.AgentDefinition) -> str:
    return f"""You are the {agent_def.name}.

Database Schema:
{context.schema}

User Filters: {context.filters}

Analyze and generate queries.
"""


def _agent(name: str, instructions: str = "", **options: Any) -> ax.AgentDefinition:
    return app.register_agent(
        ax.AgentDefinition(
            name=name,
            description=f"The {name}",
            instructions=instructions or f"You are the {name}.",
            model="gpt-4o-mini",
            **options,
        )
    )


weather_assistant = _agent(
    "weather_assistant",
    "You are the weather_assistant. You help users get weather information. Use the "
    "get_weather tool.",
    tools=["get_weather"],
    guardrails=["validate_user_input"],
)
intent_analyzer = _agent("intent_analyzer", output_type=Intent)
data_analyzer = _agent("data_analyzer", analyst_instructions, tools=["execute_query"])
general_assistant = _agent("general_assistant")
synthesizer = _agent("synthesizer")
flaky = _agent("flaky_assistant")
looping = _agent("looping_assistant", tools=["get_weather"], max_turns=1)


# Seed: "guardrails/ - Input Validation", "Register in orchestrator".
def validate_query(ctx: Any, query: str) -> tuple[bool, str]:
    """Validate SQL/Cypher query.

    Returns:
        (is_valid, error_message)
    """
    # Check for dangerous patterns
    if "DROP" in query.upper() or "DELETE" in query.upper():
        return False, "Destructive queries not allowed"
    return True, ""


ax.AgentOrchestrator(app).register_guardrail("validate_query", validate_query)


class RouteIntent(BaseModel):
    intent: str


# Seed: pattern 2's and pattern 4's agents.
for _name in ("planner", "executor", "analysis_specialist", "report_generator"):
    _agent(_name)
router = _agent("router", output_type=RouteIntent)
query_specialist = _agent("query_specialist", guardrails=["validate_query"])


# -- The scripted model: each agent's turns ------------------------------------------------


def _weather_answer(call: ScriptedCall) -> Any:
    return reply("It is sunny and 72F.")


def _intent(call: ScriptedCall) -> Any:
    category = "weather" if "weather" in call.last_user_message.lower() else "analysis"
    return reply(Intent(category=category).model_dump_json())


def _flaky(call: ScriptedCall) -> Any:
    run = running_task()
    if run is not None and run.attempt == 1:
        raise ConnectionError("the model provider is unreachable")
    return reply("recovered")


SCRIPTS: dict[str, list[Step]] = {
    "weather_assistant": [tool_call("get_weather", city="Paris"), _weather_answer],
    "intent_analyzer": [_intent],
    "data_analyzer": [tool_call("execute_query", query="SELECT 1"), reply("North leads.")],
    "general_assistant": [reply("Happy to help.")],
    "synthesizer": [lambda call: reply(f"Summary for: {call.last_user_message}")],
    "flaky_assistant": [_flaky],
    "planner": [reply("1. look up 2. summarise")],
    "executor": [reply("looked up")],
    "analysis_specialist": [reply("analysed")],
    "report_generator": [reply("report attached")],
    "query_specialist": [reply("SELECT region, sum(sales) FROM sales GROUP BY region")],
    "router": [
        lambda call: reply(
            RouteIntent(
                intent=next(
                    (w for w in ("query", "analysis", "report") if w in call.last_user_message),
                    "other",
                )
            ).model_dump_json()
        )
    ],
    "looping_assistant": [
        tool_call("get_weather", city="Oslo"),
        tool_call("get_weather", city="Rome"),
    ],
}


def _turn(index: int) -> Step:
    def play(call: ScriptedCall) -> Any:
        found = re.search(r"You are the (\w+)", call.instructions or "")
        script = SCRIPTS[found.group(1) if found else ""]
        step = script[index]
        return step(call) if callable(step) else step

    return play


SCRIPT = ScriptedModel([_turn(i) for i in range(2)])


# -- The orchestrator (seed: "Extend for your workflow", patterns 2 and 4) -----------------


class SupportRequest(BaseModel):
    query: str
    filters: dict[str, Any] = Field(default_factory=dict)


class MyOrchestrator(ax.AgentOrchestrator):
    async def run(self, user_query: str, context_data: dict[str, Any]) -> dict[str, Any]:
        session = self.setup_session()
        context = self.setup_context(**context_data, user_query=user_query)

        # Step 1: Analyze intent
        intent = await self.run_agent("intent_analyzer", session, context)

        # Step 2: Route based on intent
        if intent.category == "weather":
            result = await self.run_agent("weather_assistant", session, context)
        elif intent.category == "analysis":
            result = await self.run_agent("data_analyzer", session, context)
        else:
            result = await self.run_agent("general_assistant", session, context)

        # Step 3: Synthesize response
        response = await self.run_agent("synthesizer", session, context)

        return {
            "success": True,
            "intent": intent.category,
            "result": result,
            "response": response,
            "has_data": context.has_data,
        }


class SequentialOrchestrator(ax.AgentOrchestrator):
    """Seed: "Pattern 2: Multi-Agent Sequential Workflow"."""

    async def run(self, user_query: str, context_data: dict[str, Any]) -> dict[str, Any]:
        session = self.setup_session(str(uuid.uuid4()))
        context = ax.AgentContext(**context_data, user_query=user_query)

        # Step 1: Analyze intent
        intent_result = await self.run_agent("intent_analyzer", session, context)

        # Step 2: Generate plan
        plan_result = await self.run_agent("planner", session, context)

        # Step 3: Execute plan
        execution_result = await self.run_agent("executor", session, context)

        # Step 4: Synthesize response
        final_result = await self.run_agent("synthesizer", session, context)

        assert (intent_result.category, plan_result, execution_result) == (
            "analysis",
            "1. look up 2. summarise",
            "looked up",
        )
        return {"success": True, "response": final_result}


class DynamicOrchestrator(ax.AgentOrchestrator):
    """Seed: "Pattern 4: Dynamic Routing Based on Agent Output"."""

    async def run(self, user_query: str, context_data: dict[str, Any]) -> dict[str, Any]:
        session = self.setup_session(str(uuid.uuid4()))
        context = ax.AgentContext(**context_data, user_query=user_query)

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


class RoutingHelper:
    """Seed: "services/ - Helper Services" (routing_helper.py)."""

    def get_next_agent(self, context: ax.AgentContext, last_output: Any) -> str:
        """Route to next agent based on workflow state."""
        if context.query_results:
            return "synthesizer"
        elif context.filters:
            return "data_analyzer"
        else:
            return "intent_analyzer"


class HelperOrchestrator(ax.AgentOrchestrator):
    """Runs agents in the order `RoutingHelper` picks, until the synthesizer answered."""

    async def run(self, user_query: str, context_data: dict[str, Any]) -> dict[str, Any]:
        context = self.setup_context(**context_data, user_query=user_query)
        helper, ran, output = RoutingHelper(), [], None
        while "synthesizer" not in ran:
            name = helper.get_next_agent(context, output)
            output = await self.run_agent(name, None, context)
            ran.append(name)
        return {"ran": ran, "response": output}


ORCHESTRATORS: dict[str, type[ax.AgentOrchestrator]] = {
    "sequential": SequentialOrchestrator,
    "dynamic": DynamicOrchestrator,
    "helper": HelperOrchestrator,
}


class FlowRequest(BaseModel):
    pattern: str
    query: str
    filters: dict[str, Any] = Field(default_factory=dict)


pool = ax.Pool(queue_name="agent_defs", num_workers=1, concurrency=6)
for definition in app.agents.list():
    pool.agent(definition)


@pool.task("support_flow")
async def support_flow(agent_id: UUID, context: SupportRequest) -> dict[str, Any]:
    orchestrator = MyOrchestrator(app, queue_name="agent_defs", timeout=120)
    return await orchestrator.run(context.query, {"filters": context.filters, "schema": "sales"})


@pool.task("seed_flow")
async def seed_flow(agent_id: UUID, context: FlowRequest) -> dict[str, Any]:
    orchestrator = ORCHESTRATORS[context.pattern](app, queue_name="agent_defs", timeout=120)
    return await orchestrator.run(context.query, {"filters": context.filters})
