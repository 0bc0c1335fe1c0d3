"""OpenAIRunner against a real Redis: progress, agent events, recovery, streaming, custom
runners. The model is scripted (`agentexec.testing`); nothing leaves the machine."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from agents import Agent, RunContextWrapper, RunHooks, Runner, RunResult, function_tool
from agents.exceptions import MaxTurnsExceeded
from agents.stream_events import RunItemStreamEvent

import agentexec as ax
from agentexec import events
from agentexec.connection import get_redis
from agentexec.runners import REDACTED
from agentexec.streams import WORKERS_GROUP, ensure_group
from agentexec.tasks import RunningTask, TaskLease, reset_running, set_running
from agentexec.testing import (
    ScriptedModel,
    disable_tracing,
    handoff,
    reply,
    tool_call,
    use_model,
)
from tests.support.logs import keys_of, log_entries

searches: list[str] = []


@function_tool
def search(query: str, api_key: str) -> str:
    """Search the web."""
    searches.append(query)
    return f"3 results for {query}"


@pytest.fixture(autouse=True)
def _offline(redis_conf: str) -> Iterator[None]:
    disable_tracing()
    searches.clear()
    yield


async def agent_events(agent_id: uuid.UUID) -> list[events.AnyEvent]:
    entries = await log_entries()
    log = [events.decode_entry(fields) for _, fields in entries]
    return [e for e in log if e.agent_id == agent_id]


def research_agent(runner: ax.OpenAIRunner, model: ScriptedModel, **kwargs: Any) -> Agent[Any]:
    return Agent(
        name="Research Agent",
        instructions=f"Research Acme. {runner.prompts.report_status}",
        tools=[runner.tools.report_status, search],
        model=model,
        **kwargs,
    )


async def test_report_status_calls_become_progress_events() -> None:
    runner = ax.OpenAIRunner(uuid.uuid4())
    model = ScriptedModel(
        [
            tool_call("report_status", message="Gathering data", percentage=30),
            tool_call("report_status", message="Analyzing financials", percentage=60),
            tool_call("report_status", message="Too far", percentage=150),
            reply("Acme makes anvils."),
        ]
    )
    result = await runner.run(research_agent(runner, model), input="Begin research")
    assert result.final_output == "Acme makes anvils."
    progress = [
        e for e in await agent_events(runner.agent_id) if isinstance(e, events.TaskProgress)
    ]
    assert [(e.message, e.percentage) for e in progress] == [
        ("Gathering data", 30),
        ("Analyzing financials", 60),
    ]
    assert all(e.status is ax.Status.RUNNING for e in progress)
    # The bad call was not recorded, and the model was told why.
    last_input = model.calls[-1].input
    answer = [i["output"] for i in last_input if i.get("type") == "function_call_output"][-1]
    assert "Not recorded: percentage 150 is not a whole number from 0 to 100" in answer


async def test_turns_tool_calls_handoffs_and_usage_are_recorded_bounded_and_redacted() -> None:
    ax.CONF.max_event_summary_chars = 120
    runner = ax.OpenAIRunner(uuid.uuid4())
    model = ScriptedModel(
        [
            tool_call("search", api_key="sk-abcdefghijklmnopqrstuv", query="acme " + "q" * 500),
            handoff("Writer"),
            reply("Report written."),
        ]
    )
    writer = Agent(name="Writer", instructions="Write the report.", model=model)
    agent = research_agent(runner, model, handoffs=[writer])
    result = await runner.run(agent, input="Begin research", max_turns=5)
    assert result.final_output == "Report written."
    log = await agent_events(runner.agent_id)
    assert [type(e).__name__ for e in log] == [
        "AgentTurn",
        "AgentUsage",
        "AgentToolCall",
        "AgentTurn",
        "AgentUsage",
        "AgentHandoff",
        "AgentTurn",
        "AgentUsage",
    ]
    turns = [e for e in log if isinstance(e, events.AgentTurn)]
    assert [(e.agent, e.turn, e.max_turns) for e in turns] == [
        ("Research Agent", 1, 5),
        ("Research Agent", 2, 5),
        ("Writer", 3, 5),
    ]
    [call] = [e for e in log if isinstance(e, events.AgentToolCall)]
    assert call.tool == "search" and call.turn == 1 and call.call_id
    assert len(call.arguments) == 120 and call.arguments.endswith("…")
    assert call.arguments.startswith('{"api_key":"[redacted]","query":"acme qqq')
    assert call.message == "Research Agent called search"
    [moved] = [e for e in log if isinstance(e, events.AgentHandoff)]
    assert (moved.agent, moved.to_agent, moved.turn) == ("Research Agent", "Writer", 2)
    usage = [e for e in log if isinstance(e, events.AgentUsage)]
    assert all(u.total_tokens == u.input_tokens + u.output_tokens > 0 for u in usage)
    assert sum(u.total_tokens for u in usage) == result.context_wrapper.usage.total_tokens
    # No agent event changes the task's status.
    assert all(e.status is None for e in log)


async def test_use_model_replaces_named_models_and_leaves_given_ones() -> None:
    runner = ax.OpenAIRunner(uuid.uuid4())
    scripted = ScriptedModel([reply("from the override")])
    named = Agent(name="Named", model="gpt-4o")
    given = Agent(name="Given", model=ScriptedModel([reply("from the agent")]))
    with use_model(scripted):
        assert (await runner.run(named)).final_output == "from the override"
        assert (await runner.run(given)).final_output == "from the agent"
        streamed = await runner.run_streamed(named)
        assert streamed.final_output == "from the override"


OVERRIDE = ScriptedModel([reply("from the setting")])
NOT_A_MODEL = "a string"


async def test_the_model_override_setting_names_a_model_for_every_process() -> None:
    runner = ax.OpenAIRunner(uuid.uuid4())
    named = Agent(name="Named", model="gpt-4o")
    ax.CONF.model_override = f"{__name__}:OVERRIDE"
    assert (await runner.run(named)).final_output == "from the setting"
    with use_model(ScriptedModel([reply("from use_model")])):
        assert (await runner.run(named)).final_output == "from use_model"
    ax.CONF.model_override = f"{__name__}:NOT_A_MODEL"
    with pytest.raises(ax.ConfigurationError, match="which is a str; name an Agents SDK Model"):
        await runner.run(named)
    ax.CONF.model_override = "no_such_module_here:MODEL"
    with pytest.raises(ax.ConfigurationError, match="cannot be imported"):
        await runner.run(named)


async def test_a_custom_redactor_decides_what_is_recorded() -> None:
    def only_the_query(tool: str, arguments: Any) -> Any:
        return {"query": arguments.get("query")}

    runner = ax.OpenAIRunner(uuid.uuid4(), redact=only_the_query)
    model = ScriptedModel([tool_call("search", query="acme", api_key="k-1"), reply("ok")])
    await runner.run(research_agent(runner, model))
    [call] = [e for e in await agent_events(runner.agent_id) if isinstance(e, events.AgentToolCall)]
    assert call.arguments == '{"query":"acme"}'
    assert REDACTED not in call.arguments


def endless_searches(n: int, final: str) -> ScriptedModel:
    return ScriptedModel(
        [tool_call("search", query=f"page {i}", api_key="") for i in range(n)] + [reply(final)]
    )


async def test_max_turns_recovery_wraps_up_with_a_summary() -> None:
    runner = ax.OpenAIRunner(
        uuid.uuid4(), max_turns_recovery=True, wrap_up_prompt="Please summarize your findings."
    )
    model = endless_searches(3, "Summary: Acme makes anvils.")
    result = await runner.run(research_agent(runner, model), max_turns=3)
    assert result.final_output == "Summary: Acme makes anvils."
    assert searches == ["page 0", "page 1", "page 2"]
    wrap_up = model.calls[-1]
    assert wrap_up.last_user_message == "Please summarize your findings."
    # The whole conversation so far was given back to the model.
    assert sum(1 for i in wrap_up.input if i.get("type") == "function_call_output") == 3
    log = await agent_events(runner.agent_id)
    assert any(isinstance(e, events.TaskProgress) and "limit of 3 turns" in e.message for e in log)
    last_turn = [e for e in log if isinstance(e, events.AgentTurn)][-1]
    assert (last_turn.turn, last_turn.max_turns) == (4, 3 + runner.wrap_up_turns)


async def test_without_recovery_max_turns_raises() -> None:
    runner = ax.OpenAIRunner(uuid.uuid4())
    with pytest.raises(MaxTurnsExceeded, match=r"Max turns \(2\) exceeded"):
        await runner.run(research_agent(runner, endless_searches(3, "never")), max_turns=2)


async def test_an_agent_that_will_not_wrap_up_still_raises() -> None:
    runner = ax.OpenAIRunner(uuid.uuid4(), max_turns_recovery=True, wrap_up_turns=1)
    with pytest.raises(MaxTurnsExceeded, match=r"did not answer the wrap-up prompt within 1"):
        await runner.run(research_agent(runner, endless_searches(10, "never")), max_turns=2)


async def test_run_streamed_can_be_awaited_or_iterated() -> None:
    runner = ax.OpenAIRunner(uuid.uuid4())
    script = [tool_call("report_status", message="Halfway", percentage=50), reply("Streamed.")]
    model = ScriptedModel(script)
    agent = research_agent(runner, model)
    result = await runner.run_streamed(agent, input="Begin research", max_turns=15)
    assert result.is_complete and result.final_output == "Streamed."

    stream = runner.run_streamed(agent, input="Begin research")
    kinds = [e.name async for e in stream if isinstance(e, RunItemStreamEvent)]
    assert "tool_called" in kinds and "message_output_created" in kinds
    assert (await stream).final_output == "Streamed."
    progress = [
        e for e in await agent_events(runner.agent_id) if isinstance(e, events.TaskProgress)
    ]
    assert [e.percentage for e in progress] == [50, 50]


async def test_streamed_recovery_continues_the_stream_with_the_wrap_up() -> None:
    runner = ax.OpenAIRunner(uuid.uuid4(), max_turns_recovery=True)
    model = endless_searches(2, "Streamed summary.")
    stream = runner.run_streamed(research_agent(runner, model), max_turns=2)
    outputs = [
        e.item.raw_item
        async for e in stream
        if isinstance(e, RunItemStreamEvent) and e.name == "message_output_created"
    ]
    assert len(outputs) == 1
    assert (await stream).final_output == "Streamed summary."
    assert model.calls[-1].last_user_message == runner.prompts.wrap_up


async def test_the_users_own_hooks_are_still_called() -> None:
    seen: list[str] = []

    class Hooks(RunHooks[Any]):
        async def on_tool_start(
            self, context: RunContextWrapper[Any], agent: Any, tool: Any
        ) -> None:
            seen.append(f"tool {tool.name}")

        async def on_agent_end(self, context: Any, agent: Any, output: Any) -> None:
            seen.append(f"end {output}")

    runner = ax.OpenAIRunner(uuid.uuid4())
    model = ScriptedModel([tool_call("search", query="x", api_key=""), reply("fine")])
    await runner.run(research_agent(runner, model), hooks=Hooks())
    assert seen == ["tool search", "end fine"]


async def test_agent_events_are_dropped_not_fatal_when_redis_is_unreachable() -> None:
    ax.CONF.redis_url = "redis://127.0.0.1:9/0"  # nothing listens on the discard port
    runner = ax.OpenAIRunner(uuid.uuid4())
    model = ScriptedModel(
        [
            tool_call("search", query="x", api_key=""),
            tool_call("report_status", message="Still going", percentage=10),
            reply("Finished offline."),
        ]
    )
    result = await runner.run(research_agent(runner, model))
    assert result.final_output == "Finished offline."
    told = [i["output"] for i in model.calls[-1].input if i.get("type") == "function_call_output"]
    assert "Not recorded: progress cannot be saved right now" in told[-1]


class PlainRunner(ax.BaseAgentRunner):
    """A custom runner, as in the seed: runs the SDK itself and records its own events."""

    async def run(self, agent: Agent[Any], input: str) -> RunResult:
        await self.recorder.progress("Starting", 0)
        await self.recorder.turn(agent.name, 1)
        await self.recorder.tool_call(agent.name, 1, "lookup", '{"token": "abc", "q": "acme"}')
        result = await Runner.run(agent, input)
        await self.recorder.progress("Done", 100)
        return result


async def test_a_custom_runner_records_through_the_base_class() -> None:
    runner = PlainRunner(uuid.uuid4())
    agent = Agent(name="Plain", model=ScriptedModel([reply("plain answer")]))
    result = await runner.run(agent, "go")
    assert result.final_output == "plain answer"
    log = await agent_events(runner.agent_id)
    assert [type(e).__name__ for e in log] == [
        "TaskProgress",
        "AgentTurn",
        "AgentToolCall",
        "TaskProgress",
    ]
    assert isinstance(log[2], events.AgentToolCall)
    assert log[2].arguments == '{"token":"[redacted]","q":"acme"}'
    with pytest.raises(ValueError, match="percentage 101"):
        await runner.recorder.progress("Over", 101)


async def test_hosted_tool_calls_are_recorded_from_the_model_response() -> None:
    # Hosted tools run on the provider's side, so no scripted run can show them: the hook is
    # given a response such as the Responses API returns.
    from agents import ModelResponse, Usage
    from openai.types.responses import ResponseFunctionWebSearch
    from openai.types.responses.response_function_web_search import ActionSearch

    from agentexec.runners.openai import _RecordingHooks

    runner = ax.OpenAIRunner(uuid.uuid4())
    hooks = _RecordingHooks(runner, 10, None)
    hooks.turn = 2
    search_call = ResponseFunctionWebSearch(
        id="ws_1",
        status="completed",
        type="web_search_call",
        action=ActionSearch(type="search", query="acme anvils"),
    )
    response = ModelResponse(output=[search_call], usage=Usage(requests=1), response_id=None)
    agent = Agent(name="Searcher")
    await hooks.on_llm_end(RunContextWrapper(context=None), agent, response)
    [call] = [e for e in await agent_events(runner.agent_id) if isinstance(e, events.AgentToolCall)]
    assert (call.tool, call.turn, call.call_id) == ("web_search", 2, "ws_1")
    assert '"query":"acme anvils"' in call.arguments


async def test_a_worker_that_lost_its_task_records_no_more_agent_events() -> None:
    # A worker frozen past its lease comes back while its agent still runs: the entry is now
    # pending to the worker that took the task over, and this one's events are discarded.
    runner = PlainRunner(uuid.uuid4())
    client, keys = get_redis(), keys_of(runner.agent_id)  # its entry is in its partition
    stream = keys.queue("q", events.Priority.LOW)
    await ensure_group(client, stream, WORKERS_GROUP)
    entry_id = await client.xadd(stream, {"event": b"{}"})
    await client.xreadgroup(WORKERS_GROUP, "late:0", {stream: ">"})
    lease = TaskLease(stream, entry_id, WORKERS_GROUP, "late:0")
    token = set_running(RunningTask(runner.agent_id, "research", 1, lease))
    try:
        await runner.recorder.turn("Research Agent", 1)
        await client.xclaim(stream, WORKERS_GROUP, "other:0", 0, [entry_id])
        assert await runner.recorder.progress("Late news", 50) == ""
        await runner.recorder.turn("Research Agent", 2)
    finally:
        reset_running(token)
    log = await agent_events(runner.agent_id)
    assert [(type(e).__name__, e.attempt) for e in log] == [("AgentTurn", 1)]
