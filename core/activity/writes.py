"""Activity writes: each call appends one event to the event log. Usable from sync and async
code, inside a worker or outside one."""

from __future__ import annotations

import logging
from uuid import UUID, uuid4

import redis

from agentexec import events
from agentexec.config import CONF
from agentexec.connection import get_sync_redis
from agentexec.errors import RedisUnavailableError
from agentexec.events import Event, TaskCompleted, TaskFailed, TaskProgress, TaskQueued
from agentexec.streams import Keys

logger = logging.getLogger(__name__)


def _agent_id(value: UUID | str) -> UUID:
    try:
        return value if isinstance(value, UUID) else UUID(str(value))
    except ValueError:
        raise ValueError(f"agent id {value!r} is not a UUID; pass the task's agent_id.") from None


def _percentage(value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise ValueError(f"percentage {value!r} is not a whole number from 0 to 100.")
    return value


def _message(value: str, what: str = "message") -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} {value!r} is empty; describe what the task is doing.")
    return value


def append(event: Event) -> str:
    """Append one event to the log; returns its stream id."""
    try:
        entry_id: bytes = get_sync_redis().xadd(Keys(CONF.key_prefix).events, events.entry(event))  # type: ignore[assignment]
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise RedisUnavailableError(
            f"could not record {type(event).__name__} for agent {event.agent_id}: Redis at "
            f"{CONF.redis_url} is unreachable ({e})"
        ) from e
    return entry_id.decode()


def create(
    task_name: str,
    message: str | None = None,
    agent_id: UUID | str | None = None,
    session: object | None = None,
) -> UUID:
    """Start tracking an activity not run by a worker; returns its agent id (new if None).

    `session` is accepted for compatibility with the read model API and is not written to:
    the projector creates the row from the event.
    """
    aid = uuid4() if agent_id is None else _agent_id(agent_id)
    append(
        TaskQueued(
            agent_id=aid,
            task_name=_message(task_name, "task name"),
            message=_message(message) if message is not None else CONF.activity_message_create,
        )
    )
    return aid


def update(agent_id: UUID | str, message: str, percentage: int | None = None) -> str:
    """Record progress: a RUNNING log entry with `message` and optional `percentage` (0-100)."""
    aid = _agent_id(agent_id)
    return append(
        TaskProgress(
            agent_id=aid,
            task_name="",
            message=_message(message),
            percentage=_percentage(percentage),
        )
    )


def complete(agent_id: UUID | str, message: str | None = None, percentage: int = 100) -> str:
    """Mark the activity COMPLETE."""
    return append(
        TaskCompleted(
            agent_id=_agent_id(agent_id),
            task_name="",
            message=_message(message) if message is not None else CONF.activity_message_complete,
            percentage=_percentage(percentage),
        )
    )


def error(agent_id: UUID | str, message: str | None = None, *, error: str | None = None) -> str:
    """Mark the activity ERROR with `message` (or `error=`, as in `error(id, error="...")`)."""
    text = _message(message if message is not None else error or "", "error message")
    return append(
        TaskFailed(
            agent_id=_agent_id(agent_id),
            task_name="",
            message=CONF.activity_message_error.replace("{error}", text) if error else text,
            error=text,
        )
    )
