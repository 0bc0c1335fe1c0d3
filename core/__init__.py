"""agentexec: run AI agents as background tasks and see, live, what each one is doing.

import agentexec as ax

task = await ax.enqueue("research_company", ResearchContext(company="Acme"))
result = await ax.get_result(task, timeout=300)
"""

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
from .queue import cancel, enqueue
from .results import gather, get_result
from .tasks import Task
from .workers import Pool

__all__ = [
    "CONF",
    "AgentexecError",
    "ConfigurationError",
    "ContextError",
    "EventDecodeError",
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
    "cancel",
    "enqueue",
    "gather",
    "get_result",
]
