"""A chat task whose conversation lives in an `ax.AgentSession`, run by the Agents SDK's own
`Runner.run(agent, input, session=...)` with a scripted model.

Each reply repeats what the user said so far in the conversation the model was given, so a
test sees whether a run on one worker process got the turns another process recorded.
"""

from __future__ import annotations

import os
from typing import Any
from uuid import UUID

from agents import Agent, Runner
from pydantic import BaseModel

import agentexec as ax
from agentexec.testing import ScriptedCall, ScriptedModel, disable_tracing, reply


def _recall(call: ScriptedCall) -> Any:
    said = [
        str(item.get("content"))
        for item in call.input
        if isinstance(item, dict) and item.get("role") == "user"
    ]
    return reply("You said: " + " / ".join(said))


# The same step at every position: a run with a session may be asked for a later step than its
# first (the ScriptedModel counts the steps of earlier runs in the replayed history), and this
# script answers alike either way.
SCRIPT = ScriptedModel([_recall] * 10)
disable_tracing()


class Chat(BaseModel):
    session_id: str
    message: str


pool = ax.Pool(queue_name="session_chat", num_workers=1, concurrency=2)


@pool.task("chat")
async def chat(agent_id: UUID, context: Chat) -> dict[str, Any]:
    agent = Agent(name="Chat", instructions="Remember what the user said.", model=SCRIPT)
    session = ax.AgentSession(context.session_id, max_items=4)
    result = await Runner.run(agent, input=context.message, session=session)
    return {
        "reply": result.final_output,
        "pid": os.getpid(),
        "needs_summarization": session.needs_summarization(),
    }
