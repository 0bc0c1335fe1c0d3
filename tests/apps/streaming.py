"""A streamed agent task for the streaming tests: its model writes a sentence and calls a tool
that waits until the test has seen that sentence on the live feed (so the text reached the
feed while the run was still going), then writes a long answer in many small deltas.

The runner coalesces the deltas (at most one text event per `stream_chars` characters here, the
interval being long), and the task announces itself and its answer with `ax.AgentStream`, the
seed's StreamingHelper.
"""

from __future__ import annotations

import asyncio
import os
from uuid import UUID

from agents import Agent, RunContextWrapper, function_tool
from pydantic import BaseModel

import agentexec as ax
from agentexec.testing import ScriptedModel, disable_tracing, reply, tool_call

disable_tracing()

OPENING = "Let me look that up first."
ANSWER = " ".join(f"word{i}" for i in range(300)) + "."
STREAM_CHARS = 200


class Story(BaseModel):
    seen: str
    """A file the test creates once it saw the opening sentence on the feed."""


pool = ax.Pool(queue_name="streaming", num_workers=1, concurrency=2)


@pool.task("stream_story")
async def stream_story(agent_id: UUID, context: Story) -> str:
    runner = ax.OpenAIRunner(agent_id, stream_interval=30.0, stream_chars=STREAM_CHARS)
    stream = ax.AgentStream(agent_id)

    @function_tool
    async def wait_for_reader() -> str:
        """Wait until someone has read what was written so far."""
        for _ in range(600):  # 60 s at most
            if os.path.exists(context.seen):
                return "read"
            await asyncio.sleep(0.1)
        return "nobody read it"

    agent = Agent(
        name="Storyteller",
        instructions="Tell the story.",
        tools=[wait_for_reader],
        model=ScriptedModel(
            [(reply(OPENING), tool_call("wait_for_reader")), reply(ANSWER)], name="story"
        ),
    )
    stream.emit_agent_start("Storyteller", iteration=1)
    result = await runner.run_streamed(agent, "Tell me.")
    stream.emit_answer(str(result.final_output), sources=["the script"])
    return str(result.final_output)


# An agent run as a task (`pool.agent`): its runs are streamed like the handler's above.
# Workers get `AGENTEXEC_MODEL_OVERRIDE=tests.apps.streaming:STORY_MODEL`.


class StoryContext(ax.AgentContext):
    seen: str = ""
    """The file the test creates once it saw the opening sentence."""


stories = ax.Agents()


@stories.register_tool(name="wait_for_reader", description="Wait until someone has read it")
@function_tool
async def wait_for_reader(ctx: RunContextWrapper[StoryContext]) -> str:
    for _ in range(600):  # 60 s at most
        if os.path.exists(ctx.context.seen):
            return "read"
        await asyncio.sleep(0.1)
    return "nobody read it"


storyteller = stories.register_agent(
    ax.AgentDefinition(
        name="storyteller",
        instructions="Tell the story.",
        tools=["wait_for_reader"],
        context_type=StoryContext,
        model="gpt-4o-mini",
    )
)
pool.agent(storyteller)
STORY_MODEL = ScriptedModel([(reply(OPENING), tool_call("wait_for_reader")), reply(ANSWER)])
