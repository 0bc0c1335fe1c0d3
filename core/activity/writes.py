"""Activity writes: each call appends one event to the event log; the projector turns it into
rows. Plain calls, usable from sync and async code, inside a worker or outside one.

An agent id is known to these calls when a task was enqueued or an activity created with it
within `AGENT_TTL` of the latest write (a Redis marker set in the same transaction), or when
the call runs inside that task's own handler. Anything else is a mistake worth an error.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, overload
from uuid import UUID, uuid4

from agentexec.connection import REDIS_ERRORS
from agentexec.credentials import redact_url
from agentexec.errors import RedisUnavailableError
from agentexec.eventlog import EventLog
from agentexec.events import (
    ACTIVE,
    Event,
    TaskCanceled,
    TaskCompleted,
    TaskFailed,
    TaskProgress,
    TaskQueued,
)
from agentexec.limits import check_name
from agentexec.runtime import current
from agentexec.tasks import event_identity, own_task, running_task

from .schemas import parse_agent_id

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)

CANCELED_MESSAGE = "Task canceled."


def _agent_id(value: UUID | str) -> UUID:
    return parse_agent_id(value)


def _percentage(value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise ValueError(f"percentage {value!r} is not a whole number from 0 to 100.")
    return value


def _message(value: str, what: str = "message") -> str:
    # Over-long text is cut when the event is encoded, not refused (`events.encode`).
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} {value!r} is empty; describe what the task is doing.")
    return value


def append(event: Event, *, check: bool = True) -> str:
    """Append one event to the log (`EventLog.append_sync`); returns its stream id, "" when
    queued by an async handler or discarded (see there).

    With `check`, raises `UnknownActivityError` unless the agent id is known (see above).
    Raises `RedisUnavailableError` when Redis is unreachable, inside the task's own handler
    only after `AGENTEXEC_ENQUEUE_TIMEOUT`.
    """
    run = own_task(event.agent_id)
    return EventLog(current().broker).append_sync(
        event, run.lease if run is not None else None, check=check and run is None
    )


def create(
    task_name: str,
    message: str | None = None,
    agent_id: UUID | str | None = None,
    session: object | None = None,
) -> UUID:
    """Start tracking an activity not run by a worker; returns its agent id (new if None).

    The activity is QUEUED with `message` (default `AGENTEXEC_ACTIVITY_MESSAGE_CREATE`). Its
    row appears once the projector has applied the event, usually within milliseconds;
    `session` is accepted for compatibility and not written to.
    """
    aid = uuid4() if agent_id is None else _agent_id(agent_id)
    append(
        TaskQueued(
            agent_id=aid,
            task_name=check_name(task_name, "task name"),
            message=_message(message)
            if message is not None
            else current().settings.activity_message_create,
        ),
        check=False,
    )
    return aid


def update(agent_id: UUID | str, message: str, percentage: int | None = None) -> str:
    """Record progress: a RUNNING log entry with `message` and optional `percentage` (0-100).

    Returns the event's stream id. Raises ValueError for an empty message or a percentage
    outside 0-100, `UnknownActivityError` for an agent id never used.
    """
    return append(
        TaskProgress(
            agent_id=_agent_id(agent_id),
            **event_identity(_agent_id(agent_id)),
            message=_message(message),
            percentage=_percentage(percentage),
        )
    )


def complete(agent_id: UUID | str, message: str | None = None, percentage: int = 100) -> str:
    """Mark the activity COMPLETE (final: later events do not change its status)."""
    return append(
        TaskCompleted(
            agent_id=_agent_id(agent_id),
            **event_identity(_agent_id(agent_id)),
            message=_message(message)
            if message is not None
            else current().settings.activity_message_complete,
            percentage=_percentage(percentage),
        )
    )


def error(agent_id: UUID | str, message: str | None = None, *, error: str | None = None) -> str:
    """Mark the activity ERROR (final) with `message`, or with
    `AGENTEXEC_ACTIVITY_MESSAGE_ERROR` filled in with `error=` (`error(id, error="...")`).

    Called by a task's own handler (for the agent id it received), it is the handler's
    verdict on the task: when the handler ends, by returning or by raising, the task fails
    for good with this message (no retry), `get_result` raises `TaskFailedError` with it, and
    its return value is discarded. The worker records that one failure (so the ERROR shows
    when the handler ends) and returns `""` here. Anywhere else the event is appended at once
    and its stream id returned."""
    text = _message(message if message is not None else error or "", "error message")
    shown = current().settings.activity_message_error.replace("{error}", text) if error else text
    run = running_task()
    if run is not None and run.lease is not None and str(run.agent_id) == str(agent_id):
        if not run.reported_error:
            run.reported_error.append((shown, text))
        return ""
    return append(
        TaskFailed(
            agent_id=_agent_id(agent_id),
            **event_identity(_agent_id(agent_id)),
            message=shown,
            error=text,
        )
    )


@overload
def cancel_pending(session: Session) -> int: ...
@overload
def cancel_pending(session: AsyncSession) -> Awaitable[int]: ...
def cancel_pending(session: Session | AsyncSession) -> int | Awaitable[int]:
    """Mark CANCELED every QUEUED or RUNNING activity that no worker will ever end; returns
    how many.

    Those are activities created with `ax.activity.create` and never ended, and tasks whose
    queue no longer holds them. A task that its queue holds is left alone: waiting to start,
    running (leased by a live worker), waiting for a retry, or handed back by a worker that
    shut down, since another worker takes it over. Cancel such a task with `ax.cancel`.

    Appends a `task.canceled` event per activity (the projector applies them). With an
    `AsyncSession`, returns an awaitable. Raises `RedisUnavailableError` when Redis is down.
    """
    from sqlalchemy import select

    from .models import Activity
    from .reads import is_async

    query = select(Activity.agent_id, Activity.agent_type, Activity.queue).where(
        Activity.status.in_(ACTIVE)
    )
    if is_async(session):

        async def run() -> int:
            return _cancel((await session.execute(query)).all())

        return run()
    return _cancel(session.execute(query).all())


def _cancel(rows: Any) -> int:
    runtime = current()
    broker = runtime.broker
    try:
        held = broker.held_by_queues({queue for _, _, queue in rows if queue})
        orphans = [(a, name) for a, name, _ in rows if a not in held]
        if orphans:
            # A worker that runs a task whose entry Redis lost holds its held key instead.
            running = broker.running_unqueued([a for a, _ in orphans])
            orphans = [o for o in orphans if o[0] not in running]
    except REDIS_ERRORS as e:
        raise RedisUnavailableError(
            f"cancel_pending: Redis at {redact_url(runtime.settings.redis_url)} is unreachable "
            f"({e}); nothing canceled"
        ) from e
    log = EventLog(broker)
    for agent_id, task_name in orphans:
        log.append_sync(
            TaskCanceled(agent_id=agent_id, task_name=task_name, message=CANCELED_MESSAGE),
            check=False,
        )
    if orphans:
        logger.info("canceled %d pending activities that no queue holds", len(orphans))
    if len(orphans) < len(rows):
        logger.info(
            "cancel_pending: left %d task(s) that their queue holds for a worker",
            len(rows) - len(orphans),
        )
    return len(orphans)
