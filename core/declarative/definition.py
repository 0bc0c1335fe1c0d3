"""`AgentDefinition`: an agent declared as data, built into an SDK `Agent` when it runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentexec.errors import AgentDefinitionError, InvalidNameError
from agentexec.limits import check_name

from .context import AgentContext

if TYPE_CHECKING:
    from agents import Agent

    from .registry import Agents

Instructions = str | Callable[[Any, "AgentDefinition"], str | Awaitable[str]]
"""A system prompt, or a function `(context, definition) -> str` called for each run with the
run's context (dynamic prompts)."""

DEFAULT_MAX_TURNS = 10


@dataclass(frozen=True)
class AgentDefinition:
    """An agent as data: its prompt and the names of its tools, guardrails and handoffs.

    Names are resolved in the registry it is registered with (`ax.register_agent`), which
    rejects names it does not know. `model` None uses the SDK's default model;
    `output_type` (a Pydantic model, dataclass or type) makes the agent answer in that
    shape; `context_type` is the context a worker rebuilds when a task gets none.
    `max_turns` bounds a run's model calls.
    """

    name: str
    description: str = ""
    instructions: Instructions = ""
    tools: Sequence[str] = ()
    guardrails: Sequence[str] = ()
    model: str | None = None
    output_type: type[Any] | None = None
    handoffs: Sequence[str] = ()
    context_type: type[AgentContext] = AgentContext
    max_turns: int = DEFAULT_MAX_TURNS
    _agents: Agents | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        where = f"AgentDefinition(name={self.name!r})"
        try:
            check_name(self.name, "agent name")
        except InvalidNameError as e:
            raise AgentDefinitionError(f"{where}: {e}") from None
        if not (isinstance(self.instructions, str) or callable(self.instructions)):
            raise AgentDefinitionError(
                f"{where}: instructions is a {type(self.instructions).__name__}; pass a string "
                "or a function (context, definition) -> str."
            )
        for kind in ("tools", "guardrails", "handoffs"):
            names = getattr(self, kind)
            if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
                raise AgentDefinitionError(
                    f"{where}: {kind}={names!r}; pass a list of registered names, e.g. "
                    f'{kind}=["{names if isinstance(names, str) else "name"}"].'
                )
            object.__setattr__(self, kind, tuple(names))
        if not (
            isinstance(self.context_type, type) and issubclass(self.context_type, AgentContext)
        ):
            raise AgentDefinitionError(
                f"{where}: context_type={self.context_type!r}; pass ax.AgentContext or a "
                "subclass of it."
            )
        if isinstance(self.max_turns, bool) or not isinstance(self.max_turns, int):
            raise AgentDefinitionError(
                f"{where}: max_turns={self.max_turns!r}; use a whole number."
            )
        if self.max_turns < 1:
            raise AgentDefinitionError(f"{where}: max_turns={self.max_turns!r}; use 1 or more.")

    @property
    def agents(self) -> Agents | None:
        """The registry it was registered with, if any."""
        return self._agents

    def build(self, context: Any = None, *, agents: Agents | None = None) -> Agent[Any]:
        """The SDK `Agent` for a run with `context`: tools, guardrails and handoffs resolved in
        `agents` (default: the registry it was registered with, else the current one), and
        dynamic instructions called with the run's context (`context` when the run has none).
        Imports the Agents SDK."""
        from .build import build_agent
        from .registry import current_agents

        return build_agent(self, context, agents or self._agents or current_agents())
