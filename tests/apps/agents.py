"""The seed's `research_company` task (README, "Define Your Task"), as written, run by a real
pool with a scripted model instead of gpt-4o.

The model is configured at module level, so every spawned worker process that imports this
module to find the handler uses it too.
"""

from __future__ import annotations

from uuid import UUID

from agents import Agent
from pydantic import BaseModel

import agentexec as ax
from agentexec.testing import (
    ScriptedCall,
    ScriptedModel,
    disable_tracing,
    reply,
    tool_call,
    use_model,
)


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
use_model(SCRIPT)


class ResearchContext(BaseModel):
    company: str


pool = ax.Pool(num_workers=1, concurrency=4)


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
