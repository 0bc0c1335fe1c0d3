"""`BaseAgentRunner`: what every runner shares, whatever runs the agent."""

from __future__ import annotations

import abc
from typing import Any
from uuid import UUID

from agentexec.errors import ConfigurationError

from .recorder import EventRecorder
from .redaction import Redactor


class BaseAgentRunner(abc.ABC):
    """Base class for runners: runs an agent for the task `agent_id` and records what it does.

    Subclasses implement `run`. `self.recorder` appends agent events for `agent_id`
    (`await self.recorder.progress("Reading sources", 40)`, `.turn(...)`, `.tool_call(...)`,
    `.handoff(...)`, `.usage(...)`), with tool arguments passed through `redact` (default:
    `redact_secrets`) and cut to `AGENTEXEC_MAX_EVENT_SUMMARY_CHARS`.

    Raises `ConfigurationError` when `agent_id` is not a UUID.
    """

    def __init__(self, agent_id: UUID | str, *, redact: Redactor | None = None) -> None:
        self.agent_id = run_agent_id(agent_id, type(self).__name__)
        if redact is not None and not callable(redact):
            raise ConfigurationError(
                f"{type(self).__name__}(redact={redact!r}): pass a function "
                "`(tool_name, arguments) -> arguments to record`, or None for the default."
            )
        self.recorder = EventRecorder(self.agent_id, redact=redact)

    @abc.abstractmethod
    async def run(self, agent: Any, input: Any) -> Any:
        """Run `agent` on `input` to its final output and return the run's result."""


def run_agent_id(agent_id: UUID | str, owner: str) -> UUID:
    """`agent_id` as a UUID; `ConfigurationError` naming `owner` when it is not one."""
    try:
        return agent_id if isinstance(agent_id, UUID) else UUID(str(agent_id))
    except ValueError:
        raise ConfigurationError(
            f"{owner}(agent_id={agent_id!r}): not a UUID; pass the agent_id your task handler "
            "receives."
        ) from None
