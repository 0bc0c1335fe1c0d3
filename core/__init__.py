"""agentexec: run AI agents as background tasks and see, live, what each one is doing.

import agentexec as ax

task = await ax.enqueue("research_company", ResearchContext(company="Acme"))
result = await ax.get_result(task, timeout=300)
"""

from typing import TYPE_CHECKING, Any

from . import activity
from .config import CONF, Settings
from .errors import (
    AgentexecError,
    ConfigurationError,
    ContextError,
    EventDecodeError,
    RedisUnavailableError,
    TaskDefinitionError,
    TaskFailedError,
    UnknownTaskError,
)
from .events import Priority, Status
from .queue import enqueue
from .results import gather, get_result
from .tasks import Task
from .workers import Pool

if TYPE_CHECKING:
    from . import testing as testing
    from .runners import BaseAgentRunner, OpenAIRunner

__all__ = [
    "CONF",
    "AgentexecError",
    "BaseAgentRunner",
    "ConfigurationError",
    "ContextError",
    "EventDecodeError",
    "OpenAIRunner",
    "Pool",
    "Priority",
    "RedisUnavailableError",
    "Settings",
    "Status",
    "Task",
    "TaskDefinitionError",
    "TaskFailedError",
    "UnknownTaskError",
    "activity",
    "enqueue",
    "gather",
    "get_result",
]


# Runners and `agentexec.testing` are imported on first use: `import agentexec` stays fast and
# does not import the Agents SDK.
def __getattr__(name: str) -> Any:
    import importlib

    if name == "testing":
        return importlib.import_module("agentexec.testing")
    if name in ("BaseAgentRunner", "OpenAIRunner"):
        return getattr(importlib.import_module("agentexec.runners"), name)
    raise AttributeError(f"module 'agentexec' has no attribute {name!r}")
