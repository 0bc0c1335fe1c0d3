"""The seed's `research_company` task (README, "Define Your Task"), as written, run by a real
pool with a scripted model instead of gpt-4o.

Tests run it with `agentexec worker tests.apps.agents:pool` and
`AGENTEXEC_MODEL_OVERRIDE=tests.apps.agents:SCRIPT`: the pool hands its settings to its worker
processes, whose runners then import and use `SCRIPT` for "gpt-4o".
"""

from __future__ import annotations

from uuid import UUID

from agents import Agent
from pydantic import BaseModel

import agentexec as ax
from agentexec.testing import ScriptedCall, ScriptedModel, disable_tracing, reply, tool_call


def _findings(call: ScriptedCall) -> object:
    company = (call.instructions or "").split(".")[0].removeprefix("Research ")
    return reply(f"{company} makes anvils and sells them to coyotes.")


SCRIPT = ScriptedModel(
    [
        tool_call("report_status", message="Gathering company data", percentage=30),
        tool_call("report_status", message="Analyzing financials", percentage=60),
        tool_call("report_status", message="Writing the summary", percentage=90),
        _findings,
    ]
)
disable_tracing()


class ResearchContext(BaseModel):
    company: str


# Its own queue, apart from the other test apps' tasks.
pool = ax.Pool(queue_name="agent_tasks", num_workers=1, concurrency=4)


@pool.task("research_company")
async def research_company(agent_id: UUID, context: ResearchContext) -> str:
    runner = ax.OpenAIRunner(agent_id)

    agent = Agent(
        name="Research Agent",
        instructions=f"Research {context.company}. {runner.prompts.report_status}",
        tools=[runner.tools.report_status],  # Agent can report its own progress
        model="gpt-4o",
    )

    result = await runner.run(agent, input="Begin research")
    return result.final_output
