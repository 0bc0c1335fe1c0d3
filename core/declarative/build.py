"""Build an SDK `Agent` from an `AgentDefinition`, and guardrails from registered checks.

Imports the Agents SDK: imported only when an agent is built or run.
"""

from __future__ import annotations

import inspect
from typing import Any

from agents import (
    Agent,
    GuardrailFunctionOutput,
    InputGuardrail,
    OutputGuardrail,
    RunContextWrapper,
    TResponseInputItem,
)
from agents.exceptions import InputGuardrailTripwireTriggered, OutputGuardrailTripwireTriggered

from agentexec.errors import AgentDefinitionError

from .definition import AgentDefinition
from .registry import Agents, GuardrailEntry


def build_agent(
    definition: AgentDefinition,
    context: Any,
    agents: Agents,
    built: dict[str, Agent[Any]] | None = None,
) -> Agent[Any]:
    """The SDK agent for `definition`, its handoff agents built too (each once)."""
    built = {} if built is None else built
    if definition.name in built:
        return built[definition.name]
    for name in definition.tools:
        agents.tools.get(name)  # an unknown name fails here, naming the known ones
    guardrails = [agents.guardrails.get(n) for n in definition.guardrails]
    kwargs: dict[str, Any] = {}
    if definition.output_type is not None:
        kwargs["output_type"] = definition.output_type
    if definition.model is not None:
        kwargs["model"] = definition.model
    agent: Agent[Any] = Agent(
        name=definition.name,
        handoff_description=definition.description or None,
        instructions=_instructions(definition, context),
        tools=agents.tools.get_tool_functions(definition.tools),
        input_guardrails=[_input_guardrail(g) for g in guardrails if g.stage == "input"],
        output_guardrails=[_output_guardrail(g) for g in guardrails if g.stage == "output"],
        **kwargs,
    )
    built[definition.name] = agent
    agent.handoffs = [
        build_agent(agents.agents.get(name), context, agents, built) for name in definition.handoffs
    ]
    return agent


def _instructions(definition: AgentDefinition, context: Any) -> Any:
    given = definition.instructions
    if isinstance(given, str):
        return given

    async def instructions(wrapper: RunContextWrapper[Any], agent: Agent[Any]) -> str:
        run_context = wrapper.context if wrapper.context is not None else context
        text = given(run_context, definition)
        if inspect.isawaitable(text):
            text = await text
        if not isinstance(text, str):
            raise AgentDefinitionError(
                f"agent {definition.name!r}: its instructions function returned a "
                f"{type(text).__name__}; return the prompt as a string."
            )
        return text

    return instructions


def _verdict(entry: GuardrailEntry, value: Any) -> GuardrailFunctionOutput:
    if isinstance(value, GuardrailFunctionOutput):
        return value
    if isinstance(value, bool):
        return GuardrailFunctionOutput(output_info="", tripwire_triggered=not value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bool):
        ok, message = value
        return GuardrailFunctionOutput(output_info=str(message or ""), tripwire_triggered=not ok)
    raise AgentDefinitionError(
        f"guardrail {entry.name!r} returned {value!r}; return (ok, message), a bool, or a "
        "GuardrailFunctionOutput."
    )


async def _call(entry: GuardrailEntry, wrapper: RunContextWrapper[Any], value: Any) -> Any:
    result = entry.check(wrapper, value)
    if inspect.isawaitable(result):
        result = await result
    return result


def _input_guardrail(entry: GuardrailEntry) -> InputGuardrail[Any]:
    async def check(
        wrapper: RunContextWrapper[Any], agent: Agent[Any], input: str | list[TResponseInputItem]
    ) -> GuardrailFunctionOutput:
        return _verdict(entry, await _call(entry, wrapper, input_text(input)))

    # Not in parallel with the model: a refused input costs no model call.
    return InputGuardrail(guardrail_function=check, name=entry.name, run_in_parallel=False)


def _output_guardrail(entry: GuardrailEntry) -> OutputGuardrail[Any]:
    async def check(
        wrapper: RunContextWrapper[Any], agent: Agent[Any], output: Any
    ) -> GuardrailFunctionOutput:
        return _verdict(entry, await _call(entry, wrapper, output))

    return OutputGuardrail(guardrail_function=check, name=entry.name)


def input_text(input: str | list[Any]) -> str:
    """The text of the latest user message of a run's input."""
    if isinstance(input, str):
        return input
    for item in reversed(input):
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            return " ".join(
                str(part.get("text", "")) for part in content or () if isinstance(part, dict)
            )
    return ""


def tripped(error: Exception) -> tuple[str, str, str, str] | None:
    """(stage, guardrail, agent, reason) of an SDK guardrail tripwire error, else None."""
    if isinstance(error, InputGuardrailTripwireTriggered):
        stage = "input"
    elif isinstance(error, OutputGuardrailTripwireTriggered):
        stage = "output"
    else:
        return None
    result = error.guardrail_result
    guardrail = result.guardrail.get_name()
    agent = getattr(getattr(result, "agent", None), "name", "") or ""
    info = result.output.output_info
    return stage, guardrail, agent, "" if info is None else str(info)
