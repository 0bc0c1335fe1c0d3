"""agentexec: run AI agents as background tasks and see, live, what each one is doing.

import agentexec as ax

task = await ax.enqueue("research_company", ResearchContext(company="Acme"))
result = await ax.get_result(task, timeout=300)
"""

import importlib
from typing import TYPE_CHECKING, Any

from .config import CONF, Settings
from .errors import (
    AgentDefinitionError,
    AgentexecError,
    ConfigurationError,
    ContextError,
    EventDecodeError,
    GuardrailTrippedError,
    InvalidAgentIdError,
    InvalidNameError,
    PoolStartError,
    RedisOutOfMemoryError,
    RedisUnavailableError,
    SessionConflictError,
    SessionError,
    SessionItemError,
    TaskDefinitionError,
    TaskFailedError,
    UnknownActivityError,
    UnknownTaskError,
)
from .events import Priority, Status

if TYPE_CHECKING:
    __version__: str
    from . import activity as activity
    from . import testing as testing
    from .activity.models import Base
    from .declarative import (
        AgentContext,
        AgentDefinition,
        AgentOrchestrator,
        AgentOutcome,
        AgentRun,
        Agents,
        agents,
        current_agents,
        enqueue_agent,
        guardrails,
        register_agent,
        register_guardrail,
        register_tool,
        tools,
        transient_errors,
        use_agents,
    )
    from .pipelines import Pipeline
    from .queue import cancel, enqueue
    from .results import gather, get_result
    from .runners import AgentStream, BaseAgentRunner, OpenAIRunner
    from .sessions import AgentSession
    from .tasks import Task
    from .trackers import Tracker
    from .workers import Pool

__all__ = [
    "CONF",
    "AgentContext",
    "AgentDefinition",
    "AgentDefinitionError",
    "AgentOrchestrator",
    "AgentOutcome",
    "AgentRun",
    "AgentSession",
    "AgentStream",
    "AgentexecError",
    "Agents",
    "Base",
    "BaseAgentRunner",
    "ConfigurationError",
    "ContextError",
    "EventDecodeError",
    "GuardrailTrippedError",
    "InvalidAgentIdError",
    "InvalidNameError",
    "OpenAIRunner",
    "Pipeline",
    "Pool",
    "PoolStartError",
    "Priority",
    "RedisOutOfMemoryError",
    "RedisUnavailableError",
    "SessionConflictError",
    "SessionError",
    "SessionItemError",
    "Settings",
    "Status",
    "Task",
    "TaskDefinitionError",
    "TaskFailedError",
    "Tracker",
    "UnknownActivityError",
    "UnknownTaskError",
    "activity",
    "agents",
    "cancel",
    "current_agents",
    "enqueue",
    "enqueue_agent",
    "gather",
    "get_result",
    "guardrails",
    "register_agent",
    "register_guardrail",
    "register_tool",
    "tools",
    "transient_errors",
    "use_agents",
]


# Everything but settings, errors and the two enums is imported on first use (PEP 562), so a
# process pays only for what it touches: an enqueuer never imports the SQL models, FastAPI or
# the Agents SDK, and a worker process only what its handlers use. `ax.Base` builds the SQL
# models on first use too, so that the table prefix can be set in code
# (`ax.CONF.table_prefix = ...`) after `import agentexec`.
_LAZY: dict[str, tuple[str, str | None]] = {
    "activity": ("agentexec.activity", None),
    "testing": ("agentexec.testing", None),
    "AgentSession": ("agentexec.sessions", "AgentSession"),
    "Base": ("agentexec.activity.models", "Base"),
    "AgentContext": ("agentexec.declarative", "AgentContext"),
    "AgentDefinition": ("agentexec.declarative", "AgentDefinition"),
    "AgentOrchestrator": ("agentexec.declarative", "AgentOrchestrator"),
    "AgentOutcome": ("agentexec.declarative", "AgentOutcome"),
    "AgentRun": ("agentexec.declarative", "AgentRun"),
    "Agents": ("agentexec.declarative", "Agents"),
    "agents": ("agentexec.declarative", "agents"),
    "current_agents": ("agentexec.declarative", "current_agents"),
    "enqueue_agent": ("agentexec.declarative", "enqueue_agent"),
    "guardrails": ("agentexec.declarative", "guardrails"),
    "register_agent": ("agentexec.declarative", "register_agent"),
    "register_guardrail": ("agentexec.declarative", "register_guardrail"),
    "register_tool": ("agentexec.declarative", "register_tool"),
    "tools": ("agentexec.declarative", "tools"),
    "transient_errors": ("agentexec.declarative", "transient_errors"),
    "use_agents": ("agentexec.declarative", "use_agents"),
    "AgentStream": ("agentexec.runners", "AgentStream"),
    "BaseAgentRunner": ("agentexec.runners", "BaseAgentRunner"),
    "OpenAIRunner": ("agentexec.runners", "OpenAIRunner"),
    "Pipeline": ("agentexec.pipelines", "Pipeline"),
    "Pool": ("agentexec.workers", "Pool"),
    "Task": ("agentexec.tasks", "Task"),
    "Tracker": ("agentexec.trackers", "Tracker"),
    "cancel": ("agentexec.queue", "cancel"),
    "enqueue": ("agentexec.queue", "enqueue"),
    "gather": ("agentexec.results", "gather"),
    "get_result": ("agentexec.results", "get_result"),
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        # The installed distribution's version, read once, on first use.
        from importlib.metadata import PackageNotFoundError, version

        try:
            globals()[name] = version("agentexec")
        except PackageNotFoundError:  # run from a source tree that is not installed
            globals()[name] = "0+unknown"
        return globals()[name]
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'agentexec' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
