"""Seed 000's `research_company` task ("Defining Tasks") as written: `ax.OpenAIRunner(agent_id=
agent_id)`, instructions built from the context's focus areas, `max_turns=15`, and a `dict`
result. Offline: workers get `AGENTEXEC_MODEL_OVERRIDE=tests.apps.research:SCRIPT`, so the
agent's "gpt-4o" is the scripted model below, and tracing is disabled.

The seed's pool takes `engine=` (and `database_url=`) for the read model; the test gives this
pool its database's engine before starting it, so that the pool's own projector builds the
read model as in the seed. Its queue is the one seed 000 gives its research pool ("Multiple
Worker Types", `tests.apps.queues`), so that both apps serve `research_company` from one queue
when a test process imports both.
"""

from __future__ import annotations

import re
from uuid import UUID

from agents import Agent
from pydantic import BaseModel, Field

import agentexec as ax
from agentexec.testing import ScriptedCall, ScriptedModel, disable_tracing, reply, tool_call


def _findings(call: ScriptedCall) -> object:
    """Findings that show what the agent was given: its input and its focus areas."""
    company = call.last_user_message.removeprefix("Research ")
    focus = re.search(r"Focus on: (.*)", call.instructions or "")
    return reply(f"{company} sells anvils; focus: {focus.group(1) if focus else '?'}.")


SCRIPT = ScriptedModel(
    [
        tool_call("report_status", message="Collecting sources", percentage=25),
        tool_call("report_status", message="Reading financials", percentage=70),
        _findings,
    ]
)
disable_tracing()


class ResearchContext(BaseModel):
    """Context for research tasks."""

    company: str = Field(..., description="Company name to research")
    focus_areas: list[str] = Field(default_factory=list)
    max_sources: int = Field(default=10, ge=1, le=100)


pool = ax.Pool(queue_name="research_queue", num_workers=1)


@pool.task("research_company")
async def research_company(agent_id: UUID, context: ResearchContext) -> dict:
    """Research a company and return findings."""

    runner = ax.OpenAIRunner(agent_id=agent_id)

    agent = Agent(
        name="Research Agent",
        instructions=f"""Research {context.company}.
        Focus on: {", ".join(context.focus_areas) or "general information"}
        {runner.prompts.report_status}""",
        tools=[runner.tools.report_status],
        model="gpt-4o",
    )

    result = await runner.run(agent, input=f"Research {context.company}", max_turns=15)

    return {"company": context.company, "findings": result.final_output}
