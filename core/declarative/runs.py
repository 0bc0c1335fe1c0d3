"""What an agent task receives (`AgentRun`) and returns (`AgentOutcome`), and
`enqueue_agent`, which queues one. No Agents SDK here: an enqueuer does not import it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from pydantic_core import PydanticSerializationError

from agentexec.errors import ContextError
from agentexec.events import Priority
from agentexec.queue import enqueue
from agentexec.tasks import RUNNING_TASK, ParentId, Task

from .context import load_type, type_path

DEFAULT_INPUT = "Begin."


class AgentRun(BaseModel):
    """The context of an agent task: the run's input and the shared context's JSON."""

    input: str | list[dict[str, Any]] = DEFAULT_INPUT
    context: dict[str, Any] | None = None
    """The shared context's JSON (see `ax.AgentContext`)."""
    context_type: str | None = None
    """`module:QualName` of the shared context's class, rebuilt by the worker."""
    session_id: str | None = None
    """The conversation the run continues; the worker opens it (`Agents.session_factory`)."""
    max_turns: int | None = Field(default=None, ge=1)

    def load_context(self, default: type[BaseModel], what: str) -> BaseModel:
        """The shared context, rebuilt as its own type (`default` when none was sent)."""
        model = default if self.context_type is None else load_type(self.context_type, what)
        if self.context is None:
            return model()
        return model.model_validate(self.context)


class AgentOutcome(BaseModel):
    """The result of an agent task: the final output (JSON), the agent that gave it, the
    shared context as the run left it, and the tokens used."""

    output: Any = None
    agent: str = ""
    """The agent that produced the output (after handoffs, not necessarily the first)."""
    context: dict[str, Any] | None = None
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


async def enqueue_agent(
    name: str,
    input: str | list[dict[str, Any]] = DEFAULT_INPUT,
    *,
    context: BaseModel | None = None,
    session_id: str | None = None,
    max_turns: int | None = None,
    queue_name: str | None = None,
    priority: Priority | str = Priority.LOW,
    idempotency_key: str | None = None,
    timeout: float | None = None,
    delay: float | timedelta | datetime | None = None,
    metadata: dict[str, Any] | None = None,
    parent_id: ParentId = RUNNING_TASK,
) -> Task:
    """Queue a run of the agent registered as a task under `name` (`pool.agent(definition)`)
    with `input`, and return its `Task`; `await ax.get_result(task)` gives an
    `AgentOutcome`. The run is tracked, streamed and retried like any task.

    `context` (an `ax.AgentContext`, or any Pydantic model) is sent as JSON and rebuilt as
    its own class in the worker, so define that class at module level. `session_id`
    continues a conversation. Other options are `ax.enqueue`'s. Raises `ContextError` for a
    context that is not a Pydantic model or does not serialise.
    """
    if context is not None and not isinstance(context, BaseModel):
        raise ContextError(
            f"enqueue_agent({name!r}, ...): context is a {type(context).__name__}; pass an "
            "ax.AgentContext (or a subclass, or another Pydantic model)."
        )
    if session_id is not None and not (isinstance(session_id, str) and session_id):
        raise ValueError(
            f"enqueue_agent({name!r}, ...): session_id={session_id!r}; use a non-empty string."
        )
    if max_turns is not None and (
        isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1
    ):
        raise ValueError(
            f"enqueue_agent({name!r}, ...): max_turns={max_turns!r}; use a whole number >= 1, "
            "or None for the agent's own."
        )
    try:
        data = None if context is None else context.model_dump(mode="json")
    except PydanticSerializationError as e:
        raise ContextError(
            f"enqueue_agent({name!r}, ...): the {type(context).__name__} context cannot be "
            f"serialised to JSON ({e}); exclude process-local fields (Field(exclude=True)) or "
            "use JSON-compatible types."
        ) from e
    run = AgentRun(
        input=input,
        context=data,
        context_type=None if context is None else type_path(type(context)),
        session_id=session_id,
        max_turns=max_turns,
    )
    if "<locals>" in (run.context_type or ""):
        raise ContextError(
            f"enqueue_agent({name!r}, ...): the context class {run.context_type} is defined "
            "inside a function; define it at module level so that workers can import it."
        )
    return await enqueue(
        name,
        run,
        priority=priority,
        queue_name=queue_name,
        idempotency_key=idempotency_key,
        timeout=timeout,
        delay=delay,
        metadata=metadata,
        parent_id=parent_id,
    )


__all__ = ["AgentOutcome", "AgentRun", "enqueue_agent", "load_type"]
