"""The one exception hierarchy of agentexec: everything it raises derives from `AgentexecError`."""

from __future__ import annotations

from typing import Any

from .credentials import redact_text


class AgentexecError(Exception):
    """Base class of every error agentexec raises on purpose."""


class ConfigurationError(AgentexecError):
    """A setting, pool or task declaration is invalid; the message says which and how to fix it."""


class TaskDefinitionError(ConfigurationError):
    """A `@pool.task` handler does not have the shape agentexec needs."""


class AgentDefinitionError(ConfigurationError, LookupError):
    """An agent definition names a tool, guardrail or agent its registry does not have, or
    repeats a registered name; raised when it is registered (`ax.register_agent`)."""


class InvalidNameError(ConfigurationError, ValueError):
    """A task, queue, pipeline or tracker name the read model cannot store: empty, longer than
    its column, or holding a NUL or an unencodable character; raised where it is declared."""


class PoolStartError(AgentexecError):
    """`pool.start()` could not bring its workers to serve; the message says what happened."""


class ContextError(AgentexecError, TypeError):
    """A context passed to `enqueue` is not of the registered type, cannot be serialised or
    is larger than `AGENTEXEC_MAX_CONTEXT_BYTES`."""


class UnknownTaskError(AgentexecError, LookupError):
    """No handler is registered under a task name."""


class RedisUnavailableError(AgentexecError, ConnectionError):
    """Redis could not be reached; raised from the Redis client error.

    The message never shows a password: URLs in it are redacted (`redis://user:***@host`),
    as it may end up in a task's recorded error and in logs."""

    def __init__(self, message: str) -> None:
        super().__init__(redact_text(message))


class RedisOutOfMemoryError(RedisUnavailableError):
    """Redis refused a write because it reached `maxmemory` (with `noeviction`); nothing of
    the refused call was stored. Free memory or raise `maxmemory`."""


class TaskFailedError(AgentexecError):
    """A task ended with an error for good (no retry left); raised by `get_result` and `gather`."""

    def __init__(self, agent_id: Any, task_name: str, error: str, attempts: int = 1) -> None:
        self.agent_id = agent_id
        self.task_name = task_name
        self.error = error
        self.attempts = attempts
        """How many attempts the task made before it failed for good."""
        super().__init__(f"task {task_name!r} (agent {agent_id}) failed: {error}")


class EventDecodeError(AgentexecError, ValueError):
    """A stream entry is not a valid agentexec event."""


class InvalidAgentIdError(AgentexecError, ValueError):
    """An agent id given as a string is not a UUID, so it names no task. A web view taking the
    id from a URL answers 422 (or 404) for it: see docs/activity.md, "In a web view"."""


class UnknownActivityError(AgentexecError, LookupError):
    """An activity call named an agent id that no task or `ax.activity.create` has used."""


class FencedError(AgentexecError):
    """A projector's batch lost a race for the checkpoint: another projector advanced it first.

    The batch's transaction is rolled back; `position` is the checkpoint as it now stands.
    """

    def __init__(self, name: str, expected: str, position: str | None) -> None:
        self.name = name
        self.expected = expected
        self.position = position
        super().__init__(
            f"checkpoint {name!r} is at {position!r}, not at {expected!r} as this projector "
            "expected: another projector advanced it; this batch was rolled back"
        )


class ScriptError(AgentexecError):
    """A scripted model (`agentexec.testing.ScriptedModel`) was asked for a turn its script does
    not have, or a step names a tool or agent the calling agent does not offer."""


class GuardrailTrippedError(AgentexecError):
    """A guardrail of an agent run refused its input or output: not retried (the same input
    trips it again). `guardrail` is its name, `reason` what it said."""

    def __init__(self, message: str, *, guardrail: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.guardrail = guardrail
        self.reason = reason


class BrokerError(AgentexecError):
    """Redis refused a command of the Broker's for a reason other than an outage (a script's
    error, a wrong key type, a busy server); the message says which verb and Redis's words."""


class GroupMissingError(BrokerError):
    """A queue's stream or its consumer group is gone (Redis came back empty, or the stream
    was deleted under a blocked read): create the groups again."""


class SessionError(AgentexecError):
    """A conversation session (`ax.AgentSession`) refused a change."""


class SessionItemError(SessionError, ValueError):
    """An item given to `AgentSession.add_items` cannot be stored: not JSON-serialisable,
    or larger than the session's `max_item_bytes`."""


class SessionConflictError(SessionError):
    """Other writers kept changing a session while this change retried; nothing was stored."""
