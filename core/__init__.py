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
    RedisOutOfMemoryError,
    RedisUnavailableError,
    TaskDefinitionError,
    TaskFailedError,
    UnknownActivityError,
    UnknownTaskError,
)
from .events import Priority, Status
from .pipelines import Pipeline
from .queue import cancel, enqueue
from .results import gather, get_result
from .tasks import Task
from .trackers import Tracker
from .workers import Pool

if TYPE_CHECKING:
    from . import testing as testing
    from .activity.models import Base
    from .runners import BaseAgentRunner, OpenAIRunner

__all__ = [
    "CONF",
    "AgentexecError",
    "Base",
    "BaseAgentRunner",
    "ConfigurationError",
    "ContextError",
    "EventDecodeError",
    "OpenAIRunner",
    "Pipeline",
    "Pool",
    "Priority",
    "RedisOutOfMemoryError",
    "RedisUnavailableError",
    "Settings",
    "Status",
    "Task",
    "TaskDefinitionError",
    "TaskFailedError",
    "Tracker",
    "UnknownActivityError",
    "UnknownTaskError",
    "activity",
    "cancel",
    "enqueue",
    "gather",
    "get_result",
]


# `ax.Base` builds the SQL models on first use, so that the table prefix can be set in code
# (`ax.CONF.table_prefix = ...`) after `import agentexec`. Runners and `agentexec.testing` are
# imported on first use too: `import agentexec` stays fast and does not import the Agents SDK.
def __getattr__(name: str) -> Any:
    import importlib

    if name == "Base":
        from .activity.models import Base

        return Base
    if name == "testing":
        return importlib.import_module("agentexec.testing")
    if name in ("BaseAgentRunner", "OpenAIRunner"):
        return getattr(importlib.import_module("agentexec.runners"), name)
    raise AttributeError(f"module 'agentexec' has no attribute {name!r}")
