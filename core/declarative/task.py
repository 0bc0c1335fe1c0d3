"""Agent definitions run as tasks: the handler `pool.agent(definition)` registers, and the
retry policy of agent tasks (transient errors only)."""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from agentexec.errors import ConfigurationError, GuardrailTrippedError
from agentexec.events import AgentGuardrailTripped
from agentexec.tasks import TaskDefinition, event_identity

from .definition import AgentDefinition
from .registry import Agents
from .runs import AgentOutcome, AgentRun

logger = logging.getLogger(__name__)


def transient_errors() -> tuple[type[BaseException], ...]:
    """The errors an agent task retries by default: connection errors and timeouts (built-in
    `ConnectionError`, `TimeoutError`, so also `RedisUnavailableError`), and from the OpenAI
    client, connection errors, timeouts, rate limits (429) and server errors (5xx). A
    deterministic failure (`MaxTurnsExceeded`, a validation error, a tripped guardrail, a
    bug) fails the task at once instead of paying for the same tokens again."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        import openai
    except ImportError:
        return tuple(errors)
    errors += [
        openai.APIConnectionError,  # APITimeoutError is one
        openai.RateLimitError,
        openai.InternalServerError,
    ]
    return tuple(errors)


class AgentTask:
    """Runs the agent `name` of registry `agents` for one task. Pickled to worker processes
    by reference: the worker imports the modules that filled the registry, then finds it."""

    def __init__(self, agents: Agents, name: str) -> None:
        self.agents = agents
        self.name = name

    def __reduce__(self) -> tuple[Any, ...]:
        return (AgentTask, (self.agents, self.name))

    def __repr__(self) -> str:
        return f"AgentTask({self.name!r})"

    async def run(self, agent_id: UUID, context: AgentRun) -> AgentOutcome:
        """Run the agent for task `agent_id`: build it with the run's context, run it streamed
        with an `OpenAIRunner` (turns, tool calls, handoffs, usage and the text as it is
        written recorded), record a tripped guardrail, and return the outcome."""
        from agents import Agent
        from agents.exceptions import (
            InputGuardrailTripwireTriggered,
            OutputGuardrailTripwireTriggered,
        )

        from agentexec.runners.openai import OpenAIRunner

        from .build import build_agent, tripped

        definition = self.agents.agents.get(self.name)
        what = f"agent task {self.name!r} ({agent_id})"
        shared = context.load_context(definition.context_type, what)
        if getattr(shared, "database_connector", False) is None:
            shared.database_connector = self.agents.connector()  # type: ignore[attr-defined]
        session = (
            None if context.session_id is None else self.agents.open_session(context.session_id)
        )
        runner = OpenAIRunner(agent_id)
        agent: Agent[Any] = build_agent(definition, shared, self.agents)
        try:
            # Streamed, so that the run's text reaches the live feeds as it is written
            # (coalesced: AGENTEXEC_STREAM_INTERVAL, AGENTEXEC_STREAM_CHARS).
            result = await runner.run_streamed(
                agent,
                context.input,  # type: ignore[arg-type]
                context=shared,
                session=session,
                max_turns=context.max_turns or definition.max_turns,
            )
        except (InputGuardrailTripwireTriggered, OutputGuardrailTripwireTriggered) as e:
            found = tripped(e)
            assert found is not None
            stage, guardrail, by, reason = found
            by = by or definition.name
            await runner.recorder.append(
                AgentGuardrailTripped(
                    agent_id=agent_id,
                    **event_identity(agent_id),
                    agent=by,
                    guardrail=guardrail,
                    stage=stage,
                    reason=reason,
                    message=f"{by}: {stage} guardrail {guardrail} tripped: {reason or 'refused'}",
                )
            )
            logger.info("agent %s: %s guardrail %s tripped", agent_id, stage, guardrail)
            raise GuardrailTrippedError(
                f"agent {by!r}: {stage} guardrail {guardrail!r} refused the run: "
                f"{reason or 'no reason given'}",
                guardrail=guardrail,
                reason=reason,
            ) from e
        usage = result.context_wrapper.usage
        return AgentOutcome(
            output=_jsonable(result.final_output),
            agent=result.last_agent.name,
            context=shared.model_dump(mode="json"),
            requests=usage.requests,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            total_tokens=usage.total_tokens,
        )


def _jsonable(value: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(Any).dump_python(value, mode="json")


def agent_task_definition(
    definition: AgentDefinition,
    queue_name: str,
    *,
    agents: Agents | None = None,
    name: str | None = None,
    max_retries: int | None = None,
    retry_on: tuple[type[BaseException], ...] | None = None,
    timeout: float | None = None,
    caller: str = "__main__",
) -> TaskDefinition:
    """The task definition that runs `definition` (see `Pool.agent`); `caller` is the module
    declaring it, which workers import."""
    from .registry import current_agents

    registry = agents or definition.agents or current_agents()
    registry.modules.add(caller)
    if definition.name not in registry.agents:
        registry.register_agent(definition)
    elif registry.agents.get(definition.name) is not definition:
        raise ConfigurationError(
            f"pool.agent({definition.name!r}): the registry holds another definition named "
            f"{definition.name!r}; pass the registered one (ax.agents.get(...))."
        )
    registry.locate()  # fails now, not in the worker, when workers could not find it
    handler = AgentTask(registry, definition.name).run
    return TaskDefinition.from_handler(
        name or definition.name,
        handler,
        queue_name,
        max_retries,
        transient_errors() if retry_on is None else retry_on,
        timeout,
    )
