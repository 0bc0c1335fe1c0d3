"""Agents as data: definitions, the registries of tools, guardrails and agents, the shared
context, agent runs as tasks, and orchestration in code. See docs/agents.md.

Nothing here imports the OpenAI Agents SDK until an agent is built or run (and
`register_tool` given a plain function), so an enqueuer importing `enqueue_agent` never does.
"""

from .context import AgentContext
from .definition import AgentDefinition
from .orchestrator import AgentOrchestrator
from .registry import (
    AgentRegistry,
    Agents,
    GuardrailEntry,
    GuardrailRegistry,
    ToolEntry,
    ToolRegistry,
    agents,
    current_agents,
    guardrails,
    register_agent,
    register_guardrail,
    register_tool,
    tools,
    use_agents,
)
from .runs import AgentOutcome, AgentRun, enqueue_agent
from .task import AgentTask, transient_errors

__all__ = [
    "AgentContext",
    "AgentDefinition",
    "AgentOrchestrator",
    "AgentOutcome",
    "AgentRegistry",
    "AgentRun",
    "AgentTask",
    "Agents",
    "GuardrailEntry",
    "GuardrailRegistry",
    "ToolEntry",
    "ToolRegistry",
    "agents",
    "current_agents",
    "enqueue_agent",
    "guardrails",
    "register_agent",
    "register_guardrail",
    "register_tool",
    "tools",
    "transient_errors",
    "use_agents",
]
