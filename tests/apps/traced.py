"""An agent task whose trace tests/integration/test_tracing.py follows across processes: the
agent (a scripted model, nothing leaves the machine) looks a company up with a tool, reports
its progress, and answers; and a task whose first attempt fails, retried."""

from __future__ import annotations

from uuid import UUID

from agents import Agent, function_tool
from pydantic import BaseModel

import agentexec as ax
from agentexec.tasks import running_task
from agentexec.testing import ScriptedModel, disable_tracing, reply, tool_call

SCRIPT = ScriptedModel(
    [
        tool_call("lookup", company="Acme"),
        tool_call("report_status", message="Writing the summary", percentage=90),
        reply("Acme makes anvils."),
    ]
)
disable_tracing()  # the Agents SDK's own traces; agentexec's OpenTelemetry spans are apart


class ResearchContext(BaseModel):
    company: str


@function_tool
def lookup(company: str) -> str:
    """Look a company up."""
    return f"{company}: anvils, founded 1949"


# Its own queue, apart from the other test apps' tasks.
pool = ax.Pool(queue_name="traced", num_workers=2, concurrency=2)


@pool.task("traced_research")
async def traced_research(agent_id: UUID, context: ResearchContext) -> str:
    runner = ax.OpenAIRunner(agent_id)
    agent = Agent(
        name="Tracer",
        instructions=f"Research {context.company}. {runner.prompts.report_status}",
        tools=[runner.tools.report_status, lookup],
        model=SCRIPT,
    )
    result = await runner.run(agent, input="Begin research")
    return str(result.final_output)


class Flaky(BaseModel):
    note: str = ""


@pool.task("traced_flaky")
async def traced_flaky(agent_id: UUID, context: Flaky) -> str:
    run = running_task()
    if run is not None and run.attempt == 1:
        raise RuntimeError("the first attempt fails")
    return "second attempt"
