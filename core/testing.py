"""Run agent tasks in tests with no network and no API key.

`ScriptedModel` implements the Agents SDK's `Model` interface from a script of turns: final
replies, tool calls (with arguments) and handoffs. Give it to an agent (`Agent(model=...)`), to
a run (`RunConfig(model=...)`), or to every `OpenAIRunner` run of the process with `use_model`,
which leaves task code that names a real model (`model="gpt-4o"`) unchanged:

    from agentexec.testing import ScriptedModel, disable_tracing, reply, tool_call, use_model

    disable_tracing()
    use_model(ScriptedModel([
        tool_call("report_status", message="Reading filings", percentage=50),
        reply("Acme makes anvils."),
    ]))

For a pool's worker processes, name the model in a setting they receive:
`ax.CONF.model_override = "tests.scripts:RESEARCH"` (or `AGENTEXEC_MODEL_OVERRIDE`).

Each run reads the script from its first step, and its place in the script comes from what
the current run produced: the model marks the items it outputs with their step, and a call
plays the step after the latest one in its input, unless that latest output was a final
reply (a message with no tool call or handoff), which ended an earlier run: a conversation
replayed into a new run (an SDK session, `result.to_input_list()` plus a new message) starts
the script again. A run that continues a conversation stopped mid-run (the runner's wrap-up
after the turn limit) continues the script. So one `ScriptedModel` serves any number of runs,
one after another, at once, or on one session; to answer a conversation's second message
differently from its first, make the step a function of the call (`call.last_user_message`).
Importing this module imports the Agents SDK.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents import Model, ModelProvider, ModelResponse, ModelSettings, set_tracing_disabled
from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff as SDKHandoff
from agents.items import TResponseInputItem, TResponseOutputItem, TResponseStreamEvent
from agents.models.interface import ModelTracing
from agents.tool import Tool
from agents.usage import Usage
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
    ResponseUsage,
)

from .errors import ScriptError
from .runners.openai import override_model

__all__ = [
    "Handoff",
    "Reply",
    "ScriptError",
    "ScriptedCall",
    "ScriptedModel",
    "Step",
    "ToolCall",
    "disable_tracing",
    "handoff",
    "reply",
    "tool_call",
    "use_model",
]


@dataclass(frozen=True)
class Reply:
    """The model answers with `text` (the agent's final output, unless it has an
    `output_type`: then `text` must be that type's JSON)."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    """The model calls tool `tool` with `arguments`."""

    tool: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Handoff:
    """The model hands the conversation to the agent named `agent` (its name, or its handoff
    tool name such as `transfer_to_writer`)."""

    agent: str
    arguments: dict[str, Any] = field(default_factory=dict)


Output = Reply | ToolCall | Handoff


@dataclass(frozen=True)
class ScriptedCall:
    """One call of the model, as the agent made it."""

    step: int
    """Index of the script step that answered it (0 for a run's first turn)."""
    instructions: str | None
    input: list[Any]
    tools: tuple[str, ...]
    handoffs: tuple[str, ...]
    """Names of the agents it could hand off to."""
    streamed: bool

    @property
    def last_user_message(self) -> str:
        """The text of the most recent user message in the input ("" when there is none)."""
        for item in reversed(self.input):
            if isinstance(item, dict) and item.get("role") == "user":
                content = item.get("content")
                if isinstance(content, str):
                    return content
                return " ".join(
                    str(part.get("text", "")) for part in content or () if isinstance(part, dict)
                )
        return ""


Step = Output | tuple[Output, ...] | Callable[[ScriptedCall], "Output | tuple[Output, ...]"]
"""One model turn: an output, several outputs at once (parallel tool calls), or a function of
the call returning them."""


def reply(text: str) -> Reply:
    """A turn in which the model answers with `text`."""
    return Reply(text)


def tool_call(tool: str, /, **arguments: Any) -> ToolCall:
    """A turn in which the model calls `tool` with keyword `arguments`."""
    return ToolCall(tool, arguments)


def handoff(agent: str, /, **arguments: Any) -> Handoff:
    """A turn in which the model hands off to the agent named `agent`."""
    return Handoff(agent, arguments)


_ID = re.compile(r"^axs_(\d+)_\d+_(\w+)$")


class ScriptedModel(Model):
    """A model that plays `script`, one step per turn of each run; see the module docstring.

    Token usage is estimated (about four characters a token) so that usage is never zero.
    `calls` records every call. Raises `ScriptError` when a run goes past the end of the
    script, or when a step names a tool or agent the calling agent does not offer.
    """

    def __init__(self, script: Iterable[Step], *, name: str = "scripted") -> None:
        self.script: list[Step] = list(script)
        self.name = name
        self.calls: list[ScriptedCall] = []

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[SDKHandoff[Any, Any]],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: Any = None,
        **kwargs: Any,
    ) -> ModelResponse:
        outputs, usage = self._play(system_instructions, input, tools, handoffs, streamed=False)
        return ModelResponse(
            output=outputs,
            usage=Usage(
                requests=1,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                total_tokens=usage.total_tokens,
            ),
            response_id=None,
        )

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[SDKHandoff[Any, Any]],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: Any = None,
        **kwargs: Any,
    ) -> AsyncIterator[TResponseStreamEvent]:
        outputs, usage = self._play(system_instructions, input, tools, handoffs, streamed=True)
        response_id = f"axs_resp_{uuid.uuid4().hex[:12]}"
        seq = iter(range(1_000_000))
        yield ResponseCreatedEvent(
            type="response.created",
            response=self._response(response_id, [], None),
            sequence_number=next(seq),
        )
        for index, item in enumerate(outputs):
            yield ResponseOutputItemAddedEvent(
                type="response.output_item.added",
                item=item,
                output_index=index,
                sequence_number=next(seq),
            )
            if isinstance(item, ResponseOutputMessage):
                for part in item.content:
                    if isinstance(part, ResponseOutputText):
                        for chunk in re.findall(r"\S+\s*|\s+", part.text):
                            yield ResponseTextDeltaEvent(
                                type="response.output_text.delta",
                                item_id=item.id,
                                output_index=index,
                                content_index=0,
                                delta=chunk,
                                logprobs=[],
                                sequence_number=next(seq),
                            )
            yield ResponseOutputItemDoneEvent(
                type="response.output_item.done",
                item=item,
                output_index=index,
                sequence_number=next(seq),
            )
        yield ResponseCompletedEvent(
            type="response.completed",
            response=self._response(response_id, outputs, usage),
            sequence_number=next(seq),
        )

    def _play(
        self,
        instructions: str | None,
        input: str | list[TResponseInputItem],
        tools: Sequence[Tool],
        handoffs: Sequence[SDKHandoff[Any, Any]],
        *,
        streamed: bool,
    ) -> tuple[list[TResponseOutputItem], ResponseUsage]:
        items: list[Any] = [{"role": "user", "content": input}] if isinstance(input, str) else input
        step = _position(items)
        call = ScriptedCall(
            step=step,
            instructions=instructions,
            input=list(items),
            tools=tuple(getattr(t, "name", type(t).__name__) for t in tools),
            handoffs=tuple(h.agent_name for h in handoffs),
            streamed=streamed,
        )
        self.calls.append(call)
        if step >= len(self.script):
            raise ScriptError(
                f"{self.name}: a run asked for turn {step + 1}, but the script has "
                f"{len(self.script)} step(s); add steps, ending with reply(...)."
            )
        played = self.script[step]
        if callable(played) and not isinstance(played, Reply | ToolCall | Handoff):
            played = played(call)
        outputs = played if isinstance(played, tuple) else (played,)
        token = uuid.uuid4().hex[:8]
        made = [
            self._output(out, f"axs_{step}_{i}_{token}", call, handoffs)
            for i, out in enumerate(outputs)
        ]
        prompt_chars = len(instructions or "") + len(json.dumps(items, default=str))
        output_chars = sum(len(m.model_dump_json()) for m in made)
        input_tokens, output_tokens = math.ceil(prompt_chars / 4), math.ceil(output_chars / 4)
        usage = ResponseUsage.model_validate(
            {
                "input_tokens": input_tokens,
                # Both spellings of the details across openai versions; extra keys are kept.
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            }
        )
        return list(made), usage

    def _output(
        self,
        out: Output,
        item_id: str,
        call: ScriptedCall,
        handoffs: Sequence[SDKHandoff[Any, Any]],
    ) -> ResponseOutputMessage | ResponseFunctionToolCall:
        if isinstance(out, Reply):
            return ResponseOutputMessage(
                id=item_id,
                type="message",
                role="assistant",
                status="completed",
                content=[ResponseOutputText(type="output_text", text=out.text, annotations=[])],
            )
        if isinstance(out, ToolCall):
            if out.tool not in call.tools:
                raise ScriptError(
                    f"{self.name}: step {call.step + 1} calls tool {out.tool!r}, which the agent "
                    f"does not have (its tools: {', '.join(call.tools) or 'none'})."
                )
            name, arguments = out.tool, out.arguments
        elif isinstance(out, Handoff):
            target = next((h for h in handoffs if out.agent in (h.agent_name, h.tool_name)), None)
            if target is None:
                offered = ", ".join(call.handoffs) or "none"
                raise ScriptError(
                    f"{self.name}: step {call.step + 1} hands off to {out.agent!r}, which the "
                    f"agent cannot hand off to (its handoffs: {offered})."
                )
            name, arguments = target.tool_name, out.arguments
        else:
            raise ScriptError(
                f"{self.name}: step {call.step + 1} is {out!r}; use reply(...), tool_call(...) "
                "or handoff(...)."
            )
        return ResponseFunctionToolCall(
            id=item_id,
            call_id=f"call_{item_id}",
            type="function_call",
            name=name,
            arguments=json.dumps(arguments),
            status="completed",
        )

    def _response(
        self, response_id: str, outputs: list[TResponseOutputItem], usage: ResponseUsage | None
    ) -> Response:
        return Response(
            id=response_id,
            object="response",
            created_at=time.time(),
            model=self.name,
            output=outputs,
            parallel_tool_calls=True,
            tool_choice="auto",
            tools=[],
            usage=usage,
        )


def _position(items: list[Any]) -> int:
    """The script step for a call given `items`: one past the step of the latest output of
    the model among them, or 0 when there is none or it was a final reply (the run that
    produced it ended; this is a new run over the same conversation)."""
    latest: tuple[int, str] | None = None
    for item in items:
        if isinstance(item, dict) and (m := _ID.match(str(item.get("id") or ""))):
            latest = (int(m.group(1)), m.group(2))
    if latest is None:
        return 0
    step, token = latest
    of_that_call = [
        item
        for item in items
        if isinstance(item, dict)
        and (m := _ID.match(str(item.get("id") or "")))
        and m.group(2) == token
    ]
    if all(item.get("type", "message") == "message" for item in of_that_call):
        return 0
    return step + 1


def use_model(model: Model | ModelProvider | None) -> contextlib.AbstractContextManager[None]:
    """Make every `OpenAIRunner` run in this process use `model` for the models its agents
    name (`model="gpt-4o"`, or none); agents given a `Model` instance keep theirs. `model` is
    a `Model`, or a `ModelProvider` resolving names; None stops the override.

    Takes effect at once, so it can be called at module level (for example in the module of
    a pool, so that spawned workers use it too, and so does the process importing it); used
    as a context manager, it restores the previous model on exit."""
    previous = override_model(model)

    @contextlib.contextmanager
    def restore() -> Iterator[None]:
        try:
            yield
        finally:
            override_model(previous)

    return restore()


def disable_tracing() -> None:
    """Turn off the Agents SDK's tracing for this process (no export, no API key needed)."""
    set_tracing_disabled(True)
