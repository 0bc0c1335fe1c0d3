"""`OpenAIRunner`: runs an OpenAI Agents SDK agent for a task and records what it does.

The only module of the `agentexec` package that imports the Agents SDK (`pip install
agentexec[openai]`); importing `agentexec` alone does not.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from agents import (
    Agent,
    FunctionTool,
    Model,
    ModelProvider,
    ModelResponse,
    ModelSettings,
    RunConfig,
    RunContextWrapper,
    RunErrorDetails,
    RunHooks,
    Runner,
    RunResult,
    RunResultStreaming,
    TResponseInputItem,
    function_tool,
)
from agents.exceptions import MaxTurnsExceeded
from agents.run import DEFAULT_MAX_TURNS
from agents.stream_events import StreamEvent
from agents.tool import Tool

from agentexec.config import import_setting
from agentexec.errors import ConfigurationError, RedisUnavailableError
from agentexec.events import TaskProgress
from agentexec.tasks import event_identity, own_task
from agentexec.tracing import AgentSpans

from .base import BaseAgentRunner
from .checkpoints import RESUMABLE_WITHOUT, decode_run, encode_run, find_agent, mismatch, run_name
from .redaction import Redactor
from .streaming import FROM_SETTINGS, Deltas, FromSettings, check_delta_limits

logger = logging.getLogger(__name__)

DEFAULT_REPORT_STATUS_PROMPT = (
    "Report your progress with the report_status tool: call it when you begin, after each "
    "major step and just before your final answer, with a short message saying what you are "
    "doing and your estimate of how complete the task is, as a whole number from 0 to 100."
)
DEFAULT_WRAP_UP_PROMPT = (
    "You have reached the limit on turns for this task. Do not call any more tools. Answer now "
    "with a summary of what you have found so far and of what remains undone."
)
DEFAULT_INPUT = "Begin."
"""The input of a run given none (`runner.run(agent, max_turns=15)`)."""
DEFAULT_WRAP_UP_TURNS = 3

Input = str | list[TResponseInputItem]

_model_override: Model | ModelProvider | None = None


def override_model(model: Model | ModelProvider | None) -> Model | ModelProvider | None:
    """Make every `OpenAIRunner` run in this process resolve the models its agents name
    (`model="gpt-4o"`, or none) with `model`: a `Model` used for every name, or a
    `ModelProvider`. Agents given a `Model` instance keep it; None stops the override.
    Returns the previous override. Meant for tests: see `agentexec.testing.use_model`."""
    global _model_override
    previous, _model_override = _model_override, model
    return previous


class _EveryName(ModelProvider):
    """Resolves every model name to one model."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def get_model(self, model_name: str | None) -> Model:
        return self.model


@dataclass(frozen=True)
class Prompts:
    """Instruction texts of a runner, to put into an agent's instructions."""

    report_status: str
    """Tells the agent to report progress with `runner.tools.report_status`."""
    wrap_up: str
    """Given to an agent that reached its turn limit, when recovery is on."""


@dataclass(frozen=True)
class Tools:
    """Function tools bound to the runner's agent id, to put into an agent's tools."""

    report_status: FunctionTool
    """`report_status(message: str, percentage: int)`: records a `task.progress` event."""


class OpenAIRunner(BaseAgentRunner):
    """Runs OpenAI Agents SDK agents for the task `agent_id`, recording each model turn, tool
    call, handoff and token usage as agent events, and the agent's own progress reports
    (`tools.report_status`) as `task.progress` events.

    With `max_turns_recovery`, an agent that reaches its turn limit is given `wrap_up_prompt`
    and up to `wrap_up_turns` more turns, without tools, to answer with a summary; the run then
    returns normally. `redact` receives `(tool_name, arguments)` of every tool call and returns
    what may be recorded (default: `redact_secrets`).

    A streamed run (`run_streamed`) also records what the model writes, as it writes it, as
    `agent.delta` events: its text coalesced to at most one event per `stream_interval`
    seconds (or `stream_chars` characters), and its items (tool calls, handoffs) as they
    finish. `stream_interval=None` records none. Both default to the settings
    `AGENTEXEC_STREAM_INTERVAL` (0.25 s, `off` for none) and `AGENTEXEC_STREAM_CHARS` (2000).

    Raises `ConfigurationError` at once for an agent id that is not a UUID, an empty prompt,
    `wrap_up_turns` below 1, or a negative `stream_interval` or `stream_chars` below 1.
    """

    def __init__(
        self,
        agent_id: UUID | str,
        max_turns_recovery: bool = False,
        wrap_up_prompt: str = DEFAULT_WRAP_UP_PROMPT,
        report_status_prompt: str = DEFAULT_REPORT_STATUS_PROMPT,
        *,
        wrap_up_turns: int = DEFAULT_WRAP_UP_TURNS,
        redact: Redactor | None = None,
        stream_interval: float | FromSettings | None = FROM_SETTINGS,
        stream_chars: int | FromSettings = FROM_SETTINGS,
    ) -> None:
        super().__init__(agent_id, redact=redact)
        settings = self.recorder.runtime.settings
        if stream_interval is FROM_SETTINGS:
            stream_interval = settings.stream_interval
        if stream_chars is FROM_SETTINGS:
            stream_chars = settings.stream_chars
        check_delta_limits(stream_interval, stream_chars)
        self.stream_interval = stream_interval
        self.stream_chars = stream_chars
        for name, value in (
            ("wrap_up_prompt", wrap_up_prompt),
            ("report_status_prompt", report_status_prompt),
        ):
            if not isinstance(value, str) or not value.strip():
                raise ConfigurationError(
                    f"OpenAIRunner({name}={value!r}): use a non-empty instruction text, or leave "
                    "it out for the default."
                )
        if isinstance(wrap_up_turns, bool) or not isinstance(wrap_up_turns, int):
            wrap_up_turns = 0
        if wrap_up_turns < 1:
            raise ConfigurationError(
                f"OpenAIRunner(wrap_up_turns={wrap_up_turns!r}): use a whole number >= 1 "
                f"(default {DEFAULT_WRAP_UP_TURNS})."
            )
        self.max_turns_recovery = bool(max_turns_recovery)
        self.wrap_up_turns = wrap_up_turns
        self.prompts = Prompts(report_status=report_status_prompt, wrap_up=wrap_up_prompt)
        self.tools = Tools(report_status=self._report_status_tool())
        self._runs: dict[str, int] = {}

    async def run(
        self,
        agent: Agent[Any],
        input: Input = DEFAULT_INPUT,
        *,
        max_turns: int = DEFAULT_MAX_TURNS,
        hooks: RunHooks[Any] | None = None,
        run_config: RunConfig | None = None,
        **kwargs: Any,
    ) -> RunResult:
        """Run `agent` to its final output (`Runner.run`) and return the SDK's `RunResult`.

        Further keyword arguments (`context`, `session`...) go to `Runner.run`; `hooks` are
        called as well as the runner's own. Raises `MaxTurnsExceeded` after `max_turns` model
        turns, unless recovery is on and the agent answers the wrap-up prompt.

        In a task's handler, the conversation is saved after each completed turn; when the
        task is run again after its worker died (or after a retry), the run resumes after the
        last saved turn with the turns it has left (see docs/runner.md).
        """
        recording = _RecordingHooks(self, max_turns, hooks)
        config = _configure(run_config, self.recorder.runtime.settings.model_override)
        start, items, left = await self._resume(agent, input, max_turns, kwargs, recording)
        try:
            return await Runner.run(
                start, items, max_turns=left, hooks=recording, run_config=config, **kwargs
            )
        except MaxTurnsExceeded as e:
            if not self.max_turns_recovery or e.run_data is None:
                raise
            wrap_up = await self._wrap_up(e.run_data, max_turns, kwargs)
        recording.max_turns = max_turns + self.wrap_up_turns
        recording.run = ""
        try:
            return await Runner.run(
                wrap_up.agent,
                wrap_up.input,
                max_turns=self.wrap_up_turns,
                hooks=recording,
                run_config=config,
                **wrap_up.kwargs,
            )
        except MaxTurnsExceeded as e:
            raise self._not_wrapped_up(max_turns, e) from e

    def run_streamed(
        self,
        agent: Agent[Any],
        input: Input = DEFAULT_INPUT,
        *,
        max_turns: int = DEFAULT_MAX_TURNS,
        hooks: RunHooks[Any] | None = None,
        run_config: RunConfig | None = None,
        **kwargs: Any,
    ) -> StreamedRun:
        """Run `agent` in streaming mode (`Runner.run_streamed`).

        `async for event in runner.run_streamed(...)` yields the SDK's stream events as they
        happen; `await runner.run_streamed(...)` waits for the end and returns the finished
        `RunResultStreaming`. The run starts when first iterated or awaited. Recovery and
        recording work as in `run`; on recovery the wrap-up run's events follow in the same
        iteration.
        """
        return StreamedRun(self, agent, input, max_turns, hooks, run_config, kwargs)

    async def _resume(
        self,
        agent: Agent[Any],
        input: Input,
        max_turns: int,
        kwargs: dict[str, Any],
        hooks: _RecordingHooks,
    ) -> tuple[Agent[Any], Input, int]:
        """The agent, input and turn budget a run starts with: its own, or, when an earlier
        attempt of the task saved a checkpoint of this run, the ones after its last completed
        turn. Names the run for its checkpoints (none for a run whose conversation is kept on
        the server: see `checkpoints.RESUMABLE_WITHOUT`).

        With a session, the session is the conversation: a run taken over removes the items
        the earlier attempt added after its checkpoint and continues with no new input, so
        the SDK replays the session as it was after the saved turn. A session run that finds
        no checkpoint saves one at turn 0 (the session's length before the run), so that a
        worker dying in turn 1 does not leave its input in the session twice."""
        if any(kwargs.get(option) for option in RESUMABLE_WITHOUT):
            return agent, input, max_turns
        session = kwargs.get("session")
        if session is not None and own_task(self.agent_id) is None:
            return agent, input, max_turns  # nowhere to save: spare the per-turn session count
        hooks.run = run_name(agent.name, input, self._runs)
        hooks.session = session
        data = await self.recorder.saved_checkpoint(hooks.run)
        saved = decode_run(data) if data else None
        current = find_agent(agent, saved.agent) if saved is not None else None
        length = await _session_length(session) if session is not None else None
        unfit = mismatch(saved, current, max_turns, length)
        if saved is None or current is None or unfit:
            if unfit:
                logger.warning(
                    "agent %s: checkpoint of %s does not fit this run (%s); the run starts over",
                    self.agent_id,
                    saved.agent if saved is not None else "?",
                    unfit,
                )
            if length is not None:
                start = encode_run(agent.name, 0, [], session=length)
                if start is not None:
                    await self.recorder.checkpoint(agent.name, hooks.run, 0, start)
            return agent, input, max_turns
        popped = 0
        if session is not None and length is not None and saved.session is not None:
            popped = await _rewind(session, length, saved.session)
        hooks.turn = hooks.saved = saved.turn
        if saved.turn == 0:
            message = f"Starting {agent.name} again: the earlier attempt did not complete turn 1"
            if popped:
                message += f"; the {popped} session item(s) it added were removed"
        else:
            message = (
                f"Resuming {current.name} after turn {saved.turn}, saved by an earlier "
                f"attempt; turns 1 to {saved.turn} are not run again"
            )
            if popped:
                message += f"; {popped} session item(s) it added after that were removed"
        message += "."
        await self.recorder.append(
            TaskProgress(agent_id=self.agent_id, **event_identity(self.agent_id), message=message)
        )
        logger.info("agent %s: %s", self.agent_id, message)
        if saved.turn == 0:
            return agent, input, max_turns
        # An empty input adds nothing to the session, which the SDK replays as the input.
        resumed: Input = [] if session is not None else saved.items
        return current, resumed, max_turns - saved.turn

    def _report_status_tool(self) -> FunctionTool:
        recorder = self.recorder

        async def report_status(message: str, percentage: int) -> str:
            """Report your progress on the task to the people watching it.

            Args:
                message: What you are doing now, in one short sentence.
                percentage: How complete the whole task is, a whole number from 0 to 100.
            """
            try:
                await recorder.progress(message, percentage)
            except ValueError as e:
                return f"Not recorded: {e} Call report_status again with corrected values."
            except RedisUnavailableError as e:
                logger.warning("agent %s: progress not recorded: %s", recorder.agent_id, e)
                return "Not recorded: progress cannot be saved right now. Carry on with the task."
            return "Recorded."

        return function_tool(report_status)

    async def _wrap_up(
        self, run_data: RunErrorDetails, max_turns: int, kwargs: dict[str, Any]
    ) -> _WrapUp:
        """The agent, input and options that continue a run which reached its turn limit."""
        await self.recorder.append(
            TaskProgress(
                agent_id=self.agent_id,
                **event_identity(self.agent_id),
                message=f"Reached the limit of {max_turns} turns; asking the agent to wrap up.",
            )
        )
        prompt: TResponseInputItem = {"role": "user", "content": self.prompts.wrap_up}
        kwargs = dict(kwargs)
        if kwargs.get("session") is not None:
            # The session holds the conversation so far and replays it.
            items = [prompt]
        else:
            # The conversation is replayed from here, not continued on the server.
            for key in ("previous_response_id", "auto_previous_response_id", "conversation_id"):
                kwargs.pop(key, None)
            history: list[TResponseInputItem] = (
                [{"role": "user", "content": run_data.input}]
                if isinstance(run_data.input, str)
                else list(run_data.input)
            )
            items = [*history, *(item.to_input_item() for item in run_data.new_items), prompt]
        agent = run_data.last_agent
        if agent.tools or agent.handoffs:
            agent = agent.clone(
                model_settings=agent.model_settings.resolve(ModelSettings(tool_choice="none"))
            )
        logger.info(
            "agent %s: %s reached %d turns; wrapping up", self.agent_id, agent.name, max_turns
        )
        return _WrapUp(agent=agent, input=items, kwargs=kwargs)

    def _not_wrapped_up(self, max_turns: int, error: MaxTurnsExceeded) -> MaxTurnsExceeded:
        exc = MaxTurnsExceeded(
            f"Max turns ({max_turns}) exceeded, and the agent did not answer the wrap-up prompt "
            f"within {self.wrap_up_turns} more turn(s)"
        )
        exc.run_data = error.run_data
        return exc


@dataclass(frozen=True)
class _WrapUp:
    agent: Agent[Any]
    input: list[TResponseInputItem]
    kwargs: dict[str, Any]


class StreamedRun:
    """A streamed run of `OpenAIRunner.run_streamed`: iterate it for the SDK's stream events,
    await it for the finished `RunResultStreaming`. Iterated once; awaiting after (or instead
    of) iterating returns the result."""

    def __init__(
        self,
        runner: OpenAIRunner,
        agent: Agent[Any],
        input: Input,
        max_turns: int,
        hooks: RunHooks[Any] | None,
        run_config: RunConfig | None,
        kwargs: dict[str, Any],
    ) -> None:
        self._runner = runner
        self._agent = agent
        self._input = input
        self._max_turns = max_turns
        self._hooks = _RecordingHooks(runner, max_turns, hooks)
        override = runner.recorder.runtime.settings.model_override
        self._config = _configure(run_config, override)
        self._kwargs = kwargs
        self._deltas = (
            None
            if runner.stream_interval is None
            else Deltas(runner.recorder, runner.stream_interval, runner.stream_chars)
        )
        self._events = self._stream()
        self.result: RunResultStreaming | None = None
        """The SDK's streaming result of the run in progress (the wrap-up run after recovery);
        None until the run starts."""

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._events

    def __await__(self) -> Generator[Any, None, RunResultStreaming]:
        return self._finish().__await__()

    async def _finish(self) -> RunResultStreaming:
        async for _ in self._events:
            pass
        if self.result is None:
            raise RuntimeError("this streamed run was closed before it started")
        return self.result

    async def _stream(self) -> AsyncIterator[StreamEvent]:
        runner = self._runner
        agent, items, left = await runner._resume(
            self._agent, self._input, self._max_turns, self._kwargs, self._hooks
        )
        try:
            async for event in self._pass(agent, items, left, self._kwargs):
                yield event
            return
        except MaxTurnsExceeded as e:
            if not runner.max_turns_recovery or e.run_data is None:
                raise
            wrap_up = await runner._wrap_up(e.run_data, self._max_turns, self._kwargs)
        finally:
            if self._deltas is not None:
                await self._deltas.flush()
        self._hooks.max_turns = self._max_turns + runner.wrap_up_turns
        self._hooks.run = ""
        try:
            async for event in self._pass(
                wrap_up.agent, wrap_up.input, runner.wrap_up_turns, wrap_up.kwargs
            ):
                yield event
        except MaxTurnsExceeded as e:
            raise runner._not_wrapped_up(self._max_turns, e) from e
        finally:
            if self._deltas is not None:
                await self._deltas.flush()

    async def _pass(
        self, agent: Agent[Any], input: Any, max_turns: int, kwargs: dict[str, Any]
    ) -> AsyncIterator[StreamEvent]:
        """Start one streamed run of the SDK (the run, or its wrap-up) and stream its events,
        recording them as deltas."""
        self.result = Runner.run_streamed(
            agent, input, max_turns=max_turns, hooks=self._hooks, run_config=self._config, **kwargs
        )
        async for event in self.result.stream_events():
            if self._deltas is not None:
                await self._deltas.see(event, self._hooks.turn)
            yield event


class _RecordingHooks(RunHooks[Any]):
    """Records each model turn, tool call, handoff and token usage of a run, then calls the
    user's hooks, if any."""

    def __init__(self, runner: OpenAIRunner, max_turns: int, inner: RunHooks[Any] | None) -> None:
        self.recorder = runner.recorder
        self.own_tool = runner.tools.report_status
        self.max_turns = max_turns
        self.inner = inner
        self.turn = 0
        self.run = ""
        """The run's name for its checkpoints; "" saves none."""
        self.saved = 0
        """The latest turn saved (or resumed from)."""
        self.session: Any = None
        """The run's SDK session, whose length each checkpoint saves; None without one."""
        self.spans = AgentSpans()

    async def on_llm_start(
        self,
        context: RunContextWrapper[Any],
        agent: Agent[Any],
        system_prompt: str | None,
        input_items: list[TResponseInputItem],
    ) -> None:
        if self.run and self.turn > self.saved:
            # The model is asked for the next turn: the turns so far are complete (their tool
            # calls ran, and the SDK stored their items in the session, if any), and
            # `input_items` is the whole conversation it is given.
            if self.session is None:
                conversation = encode_run(agent.name, self.turn, list(input_items))
            else:
                length = await _session_length(self.session)
                conversation = encode_run(agent.name, self.turn, [], session=length)
            if conversation is not None and await self.recorder.checkpoint(
                agent.name, self.run, self.turn, conversation
            ):
                self.saved = self.turn
        self.turn += 1
        self.spans.turn_started(agent.name, self.turn)
        await self.recorder.turn(agent.name, self.turn, self.max_turns)
        if self.inner is not None:
            await self.inner.on_llm_start(context, agent, system_prompt, input_items)

    async def on_llm_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], response: ModelResponse
    ) -> None:
        usage = response.usage
        self.spans.turn_ended(usage.input_tokens, usage.output_tokens)
        await self.recorder.usage(
            agent.name,
            self.turn,
            requests=usage.requests,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            total_tokens=usage.total_tokens,
        )
        # Hosted tools (web search, file search, code interpreter...) run on the model's side:
        # no local hook sees them, the response does.
        for item in response.output:
            kind = getattr(item, "type", "")
            if kind in _HOSTED_TOOL_CALLS:
                tool = getattr(item, "name", None) if kind == "mcp_call" else None
                await self.recorder.tool_call(
                    agent.name,
                    self.turn,
                    tool or kind.removesuffix("_call"),
                    _hosted_arguments(item),
                    getattr(item, "id", "") or "",
                )
        if self.inner is not None:
            await self.inner.on_llm_end(context, agent, response)

    async def on_agent_start(self, context: Any, agent: Any) -> None:
        if self.inner is not None:
            await self.inner.on_agent_start(context, agent)

    async def on_agent_end(self, context: Any, agent: Any, output: Any) -> None:
        if self.inner is not None:
            await self.inner.on_agent_end(context, agent, output)

    async def on_handoff(
        self, context: RunContextWrapper[Any], from_agent: Any, to_agent: Any
    ) -> None:
        await self.recorder.handoff(from_agent.name, to_agent.name, self.turn)
        if self.inner is not None:
            await self.inner.on_handoff(context, from_agent, to_agent)

    async def on_tool_start(self, context: RunContextWrapper[Any], agent: Any, tool: Tool) -> None:
        name = getattr(tool, "name", type(tool).__name__)
        self.spans.tool_started(agent.name, self.turn, name, getattr(context, "tool_call_id", ""))
        # The runner's own report_status becomes a progress event; no tool-call event for it.
        if tool is not self.own_tool:
            await self.recorder.tool_call(
                agent.name,
                self.turn,
                getattr(tool, "name", type(tool).__name__),
                getattr(context, "tool_arguments", ""),
                getattr(context, "tool_call_id", ""),
            )
        if self.inner is not None:
            await self.inner.on_tool_start(context, agent, tool)

    async def on_tool_end(
        self, context: RunContextWrapper[Any], agent: Any, tool: Tool, result: Any
    ) -> None:
        name = getattr(tool, "name", type(tool).__name__)
        self.spans.tool_ended(name, getattr(context, "tool_call_id", ""))
        if self.inner is not None:
            await self.inner.on_tool_end(context, agent, tool, result)


async def _rewind(session: Any, length: int, saved: int) -> int:
    """Remove the items `session` (holding `length`) got after it held `saved`, latest first;
    returns how many were removed."""
    popped = 0
    for _ in range(length - saved):
        if await session.pop_item() is None:  # emptied meanwhile, or the task was lost
            break
        popped += 1
    return popped


async def _session_length(session: Any) -> int:
    """How many items `session` holds: `AgentSession.count()`, else its items counted."""
    count = getattr(session, "count", None)
    if callable(count):
        return int(await count())
    return len(await session.get_items())


_HOSTED_TOOL_CALLS = frozenset(
    {
        "web_search_call",
        "file_search_call",
        "code_interpreter_call",
        "image_generation_call",
        "mcp_call",
    }
)
_HOSTED_RESULT_FIELDS = {"id", "type", "status", "results", "result", "outputs", "output", "error"}


def _hosted_arguments(item: Any) -> str:
    """What a hosted tool was asked to do (query, code, arguments), as JSON, without its
    results."""
    if getattr(item, "type", "") == "mcp_call":
        return str(getattr(item, "arguments", "") or "")
    try:
        payload = item.model_dump(mode="json", exclude=_HOSTED_RESULT_FIELDS, exclude_none=True)
    except AttributeError:
        return ""
    return json.dumps(payload)


_loaded_overrides: dict[str, Model | ModelProvider] = {}


def _configured_override(path: str | None) -> Model | ModelProvider | None:
    """The model named by `AGENTEXEC_MODEL_OVERRIDE` (`path`), imported once per process."""
    if not path:
        return None
    loaded = _loaded_overrides.get(path)
    if loaded is None:
        value = import_setting("model_override", path, "a Model or ModelProvider")
        if not isinstance(value, Model | ModelProvider):
            raise ConfigurationError(
                f"AGENTEXEC_MODEL_OVERRIDE has value {path!r}, which is a "
                f"{type(value).__name__}; name an Agents SDK Model (such as "
                "agentexec.testing.ScriptedModel) or ModelProvider."
            )
        loaded = _loaded_overrides[path] = value
    return loaded


def _configure(run_config: RunConfig | None, configured: str | None) -> RunConfig | None:
    """`run_config` with the model override applied, if any: `use_model`/`override_model` in
    this process first, else `AGENTEXEC_MODEL_OVERRIDE` (`configured`)."""
    override = _model_override or _configured_override(configured)
    if override is None:
        return run_config
    provider = override if isinstance(override, ModelProvider) else _EveryName(override)
    return dataclasses.replace(run_config or RunConfig(), model_provider=provider)
