"""`agentexec.testing`: the scripted model plays agent runs with no network and no API key."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from agents import Agent, RunConfig, Runner, function_tool
from agents.stream_events import RawResponsesStreamEvent
from openai.types.responses import ResponseTextDeltaEvent

from agentexec.testing import (
    ScriptedCall,
    ScriptedModel,
    ScriptError,
    disable_tracing,
    handoff,
    reply,
    tool_call,
    use_model,
)

calls: list[str] = []


@function_tool
def lookup(company: str) -> str:
    """Look a company up."""
    calls.append(company)
    return f"{company}: 12 employees"


@pytest.fixture(autouse=True)
def _no_tracing() -> Iterator[None]:
    disable_tracing()
    calls.clear()
    yield


async def test_a_script_plays_tool_calls_then_a_reply() -> None:
    model = ScriptedModel([tool_call("lookup", company="Acme"), reply("Acme is small.")])
    agent = Agent(name="A", instructions="Be brief.", tools=[lookup], model=model)
    result = await Runner.run(agent, "Tell me about Acme")
    assert result.final_output == "Acme is small."
    assert calls == ["Acme"]
    first, second = model.calls
    assert (first.step, second.step) == (0, 1)
    assert first.instructions == "Be brief." and first.tools == ("lookup",)
    assert first.last_user_message == "Tell me about Acme"
    outputs = [i for i in second.input if i.get("type") == "function_call_output"]
    assert outputs[0]["output"] == "Acme: 12 employees"
    assert result.context_wrapper.usage.total_tokens > 0


async def test_one_turn_may_call_several_tools_at_once() -> None:
    model = ScriptedModel(
        [(tool_call("lookup", company="A"), tool_call("lookup", company="B")), reply("done")]
    )
    agent = Agent(name="A", tools=[lookup], model=model)
    assert (await Runner.run(agent, "go")).final_output == "done"
    assert sorted(calls) == ["A", "B"]


async def test_handoffs_go_to_the_named_agent() -> None:
    model = ScriptedModel([handoff("Writer"), reply("written")])
    writer = Agent(name="Writer", model=model)
    agent = Agent(name="Researcher", handoffs=[writer], model=model)
    result = await Runner.run(agent, "go")
    assert result.final_output == "written" and result.last_agent is writer
    assert model.calls[0].handoffs == ("Writer",)


async def test_each_run_reads_the_script_from_the_start_even_concurrently() -> None:
    def answer(call: ScriptedCall) -> object:
        return reply(f"about {call.last_user_message}")

    model = ScriptedModel([tool_call("lookup", company="X"), answer])
    agent = Agent(name="A", tools=[lookup], model=model)
    results = await asyncio.gather(*(Runner.run(agent, f"company {i}") for i in range(5)))
    assert [r.final_output for r in results] == [f"about company {i}" for i in range(5)]
    assert len(model.calls) == 10


async def test_a_continued_conversation_starts_the_script_again() -> None:
    # The place in the script comes from what the current run produced: the replayed history
    # ended with a final reply, so the follow-up is a new run, from the first step.
    model = ScriptedModel([tool_call("lookup", company="A"), reply("first")])
    agent = Agent(name="A", tools=[lookup], model=model)
    first = await Runner.run(agent, "one")
    follow_up = [*first.to_input_list(), {"role": "user", "content": "two"}]
    assert (await Runner.run(agent, follow_up)).final_output == "first"
    assert [c.step for c in model.calls] == [0, 1, 0, 1]


async def test_runs_on_one_session_each_play_the_script_from_its_start() -> None:
    from agents import SQLiteSession

    def answer(call: ScriptedCall) -> object:
        return reply(f"re: {call.last_user_message}")

    model = ScriptedModel([tool_call("lookup", company="A"), answer])
    agent = Agent(name="A", tools=[lookup], model=model)
    session = SQLiteSession("conversation")
    outputs = [
        (await Runner.run(agent, message, session=session)).final_output
        for message in ("one", "two", "three")
    ]
    assert outputs == ["re: one", "re: two", "re: three"]
    assert [c.step for c in model.calls] == [0, 1] * 3
    # Each later run was given the whole conversation so far.
    assert len(model.calls[4].input) > len(model.calls[2].input) > len(model.calls[0].input)


async def test_a_conversation_stopped_mid_run_continues_the_script() -> None:
    model = ScriptedModel([tool_call("lookup", company="A"), reply("done")])
    agent = Agent(name="A", tools=[lookup], model=model)
    first = await Runner.run(agent, "go")
    # Only the tool call and its output, as a run stopped by its turn limit leaves them.
    midway = [
        i
        for i in first.to_input_list()
        if i.get("type") in ("function_call", "function_call_output")
    ]
    again = [{"role": "user", "content": "go"}, *midway, {"role": "user", "content": "wrap up"}]
    assert (await Runner.run(agent, again)).final_output == "done"
    assert model.calls[-1].step == 1


async def test_running_past_the_script_names_the_problem() -> None:
    model = ScriptedModel([tool_call("lookup", company="A")])
    agent = Agent(name="A", tools=[lookup], model=model)
    with pytest.raises(ScriptError, match=r"asked for turn 2, but the script has 1 step"):
        await Runner.run(agent, "go")


async def test_a_step_naming_a_missing_tool_or_agent_names_what_is_there() -> None:
    agent = Agent(name="A", tools=[lookup], model=ScriptedModel([tool_call("search", q="x")]))
    with pytest.raises(ScriptError, match=r"tool 'search'.*its tools: lookup"):
        await Runner.run(agent, "go")
    agent = Agent(name="A", model=ScriptedModel([handoff("Nobody")]))
    with pytest.raises(ScriptError, match=r"hands off to 'Nobody'.*its handoffs: none"):
        await Runner.run(agent, "go")


async def test_streaming_yields_text_deltas_and_the_final_output() -> None:
    model = ScriptedModel([tool_call("lookup", company="A"), reply("three small words")])
    agent = Agent(name="A", tools=[lookup], model=model)
    result = Runner.run_streamed(agent, "go")
    deltas = [
        e.data.delta
        async for e in result.stream_events()
        if isinstance(e, RawResponsesStreamEvent) and isinstance(e.data, ResponseTextDeltaEvent)
    ]
    assert "".join(deltas) == "three small words"
    assert result.final_output == "three small words"
    assert [c.streamed for c in model.calls] == [True, True]


async def test_run_config_replaces_a_named_model() -> None:
    model = ScriptedModel([reply("offline")])
    agent = Agent(name="A", model="gpt-4o")
    result = await Runner.run(agent, "go", run_config=RunConfig(model=model))
    assert result.final_output == "offline"


def test_use_model_applies_at_once_and_restores_as_a_context_manager() -> None:
    from agentexec.runners import openai

    before = openai._model_override
    model = ScriptedModel([reply("offline")])
    with use_model(model):
        assert openai._model_override is model
    assert openai._model_override is before
    use_model(model)
    try:
        assert openai._model_override is model
    finally:
        use_model(before)


def test_tool_call_arguments_are_json() -> None:
    step = tool_call("lookup", company="Acme", tags=["a"])
    assert json.loads(json.dumps(step.arguments)) == {"company": "Acme", "tags": ["a"]}
