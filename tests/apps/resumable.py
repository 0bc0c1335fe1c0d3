"""An agent task whose worker dies in the middle of its run, for the resume tests.

The scripted run has 4 turns: three `lookup` tool calls, then a reply. Every model call
appends `model <turn> <pid>` and every tool call `tool <n> <pid>` to files named by the
task's context, so a test sees across processes what ran where. With `die_after_turn`, the
first worker to reach the next turn (after the checkpoint of `die_after_turn` was saved) ends
its process at once (`os._exit`), as a crash would; `streamed` runs it with `run_streamed`.

With `session_id`, the run keeps its conversation in that `ax.AgentSession`; with
`die_in_session` too, the worker dies instead just after the session stored the items of turn
`die_after_turn + 1`, before that turn's checkpoint: the items the takeover must remove.
`inputs` names a file of each model call's turn and input, one JSON line each.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from agents import Agent, RunContextWrapper, RunHooks, function_tool
from pydantic import BaseModel

import agentexec as ax
from agentexec.testing import ScriptedCall, ScriptedModel, disable_tracing, reply, tool_call

disable_tracing()

TURNS = 4


class Run(BaseModel):
    calls: str
    """File of the model calls and tool calls, one line each."""
    marker: str
    """Created by the worker that dies (once across processes)."""
    die_after_turn: int = 0
    streamed: bool = False
    session_id: str = ""
    die_in_session: bool = False
    inputs: str = ""
    question: str = "What is the answer?"


def append_line(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def first_time(marker: str) -> bool:
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _script(path: str, inputs: str) -> ScriptedModel:
    def step(turn: int) -> Any:
        def play(call: ScriptedCall) -> Any:
            append_line(path, f"model {turn} {os.getpid()}")
            if inputs:
                append_line(inputs, json.dumps({"turn": turn, "input": call.input}, default=str))
            if turn < TURNS:
                return tool_call("lookup", n=turn)
            return reply("The answer, after three lookups, is 42.")

        return play

    return ScriptedModel([step(turn) for turn in range(1, TURNS + 1)], name="resumable")


class _DieAfter(RunHooks[Any]):
    """Ends the worker process when the model is about to be asked for turn `turn + 1`."""

    def __init__(self, turn: int, marker: str) -> None:
        self.turn = turn
        self.marker = marker

    async def on_llm_start(
        self, context: RunContextWrapper[Any], agent: Any, system_prompt: Any, input_items: Any
    ) -> None:
        done = sum(
            1
            for i in input_items
            if isinstance(i, dict) and i.get("type") == "function_call_output"
        )
        if self.turn and done == self.turn and first_time(self.marker):
            os._exit(17)


class _DyingSession(ax.AgentSession):
    """Ends the worker process just after it stored the output of tool call `n`."""

    def __init__(self, session_id: str, n: int, marker: str) -> None:
        super().__init__(session_id)
        self.n = n
        self.marker = marker

    async def add_items(self, items: Sequence[Any]) -> None:
        await super().add_items(items)
        plain = [i if isinstance(i, dict) else i.model_dump() for i in items]
        if any(
            i.get("type") == "function_call_output" and i.get("output") == f"fact {self.n}"
            for i in plain
        ) and first_time(self.marker):
            os._exit(17)


pool = ax.Pool(queue_name="resumable", num_workers=2, concurrency=2)


@pool.task("resumable_research")
async def resumable_research(agent_id: UUID, context: Run) -> str:
    runner = ax.OpenAIRunner(agent_id)

    @function_tool
    def lookup(n: int) -> str:
        """Look fact `n` up."""
        append_line(context.calls, f"tool {n} {os.getpid()}")
        return f"fact {n}"

    agent = Agent(
        name="Resumable Agent",
        instructions="Look three facts up, then answer.",
        tools=[lookup],
        model=_script(context.calls, context.inputs),
    )
    options: dict[str, Any] = {"max_turns": 10}
    if context.die_in_session:
        n = context.die_after_turn + 1
        options["session"] = _DyingSession(context.session_id, n, context.marker)
    else:
        options["hooks"] = _DieAfter(context.die_after_turn, context.marker)
        if context.session_id:
            options["session"] = ax.AgentSession(context.session_id)
    if context.streamed:
        streamed = await runner.run_streamed(agent, context.question, **options)
        return str(streamed.final_output)
    result = await runner.run(agent, context.question, **options)
    return str(result.final_output)
