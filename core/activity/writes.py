"""Activity writes: each call appends one event to the event log; the projector turns it into
rows. Plain calls, usable from sync and async code, inside a worker or outside one;
`agentexec.activity.aio` has the awaitable forms. Both build their events with the
`*_event` functions here, so each write has one definition.

An agent id is known to these calls when a task was enqueued or an activity created with it
within `AGENT_TTL` of the latest write (a Redis marker set in the same transaction), or when
the call runs inside that task's own handler. Anything else is a mistake worth an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, overload
from uuid import UUID, uuid4

from agentexec import tenants
from agentexec.connection import REDIS_ERRORS
from agentexec.credentials import redact_url
from agentexec.errors import RedisUnavailableError
from agentexec.eventlog import EventLog
from agentexec.events import (
    ACTIVE,
    Event,
    Status,
    TaskCanceled,
    TaskCompleted,
    TaskFailed,
    TaskProgress,
    TaskQueued,
)
from agentexec.limits import check_name
from agentexec.runtime import current
from agentexec.tasks import RunningTask, event_identity, own_task

from .schemas import parse_agent_id

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from sqlalchemy import Select
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


def created_event(
    task_name: str,
    message: str | None,
    agent_id: UUID | str | None,
    metadata: dict[str, Any] | None = None,
    tenant: str | None = None,
) -> TaskQueued:
    """The `task.queued` event of `create` (a new agent id when `agent_id` is None)."""
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError(
            f"metadata {metadata!r} is not a dict; pass a JSON object such as "
            "{'customer_id': '42'}, or None."
        )
    _, metadata = tenants.resolve(tenant, metadata, f"create({task_name!r}, ...)")
    return TaskQueued(
        agent_id=uuid4() if agent_id is None else _agent_id(agent_id),
        task_name=check_name(task_name, "task name"),
        message=_message(message)
        if message is not None
        else current().settings.activity_message_create,
        metadata=metadata,
    )


def progress_event(agent_id: UUID | str, message: str, percentage: int | None) -> TaskProgress:
    """The `task.progress` event of `update`."""
    aid = _agent_id(agent_id)
    return TaskProgress(
        agent_id=aid,
        **event_identity(aid),
        message=_message(message),
        percentage=_percentage(percentage),
    )


def completed_event(agent_id: UUID | str, message: str | None, percentage: int) -> TaskCompleted:
    """The `task.completed` event of `complete`."""
    aid = _agent_id(agent_id)
    return TaskCompleted(
        agent_id=aid,
        **event_identity(aid),
        message=_message(message)
        if message is not None
        else current().settings.activity_message_complete,
        percentage=_percentage(percentage),
    )


def _own_worker_task(agent_id: UUID | str) -> RunningTask | None:
    """`agent_id`'s task when a worker runs its handler in this context (not when a test
    only marks it): the handler's own writes about it, which its worker ends."""
    run = own_task(agent_id)
    return run if run is not None and run.lease is not None else None


def failed_event(agent_id: UUID | str, message: str | None, error: str | None) -> TaskFailed | None:
    """The `task.failed` event of `error`; None when the call is the running handler's
    verdict on its own task, which is kept on the task for its worker to record (see
    `error`)."""
    text = _message(message if message is not None else error or "", "error message")
    shown = current().settings.activity_message_error.replace("{error}", text) if error else text
    run = _own_worker_task(agent_id)
    if run is not None:
        if not run.reported_error:
            run.reported_error.append((shown, text))
        return None
    aid = _agent_id(agent_id)
    return TaskFailed(agent_id=aid, **event_identity(aid), message=shown, error=text)


def update_event(
    agent_id: UUID | str, message: str, percentage: int | None, status: Status | str | None
) -> Event | None:
    """The event of `update`: `task.progress` for status None or RUNNING; for COMPLETE,
    ERROR and CANCELED the event that ends the activity (None as from `failed_event`).
    Raises ValueError for status QUEUED or one that is no status, and for CANCELED from the
    task's own handler (the worker ends a running task)."""
    ending = None if status is None else _status(status)
    if ending is None or ending is Status.RUNNING:
        return progress_event(agent_id, message, percentage)
    if ending is Status.COMPLETE:
        return completed_event(agent_id, message, 100 if percentage is None else percentage)
    if ending is Status.ERROR:
        return failed_event(agent_id, message, None)
    if _own_worker_task(agent_id) is not None:
        raise ValueError(
            "update(status=CANCELED) from the task's own handler: the worker ends the task "
            "when the handler returns; return (or raise) to end it, or cancel it from "
            "another process with ax.cancel(agent_id)."
        )
    aid = _agent_id(agent_id)
    return TaskCanceled(
        agent_id=aid,
        **event_identity(aid),
        message=_message(message),
        percentage=_percentage(percentage),
    )


def create(
    task_name: str,
    message: str | None = None,
    agent_id: UUID | str | None = None,
    session: object | None = None,
    metadata: dict[str, Any] | None = None,
    tenant: str | None = None,
) -> UUID:
    """Start tracking an activity not run by a worker; returns its agent id (new if None).

    The activity is QUEUED with `message` (default `AGENTEXEC_ACTIVITY_MESSAGE_CREATE`),
    `metadata` (a JSON object, as `ax.enqueue` takes) and `tenant` (as `ax.enqueue` takes
    it). Its row appears once the projector has applied the event, usually within
    milliseconds; `session` is accepted for compatibility and not written to.
    """
    event = created_event(task_name, message, agent_id, metadata, tenant)
    append(event, check=False)
    return event.agent_id


def update(
    agent_id: UUID | str,
    message: str,
    percentage: int | None = None,
    status: Status | str | None = None,
) -> str:
    """Record progress: a RUNNING log entry with `message` and optional `percentage` (0-100).

    `status` (agentexec 0.3.0's form) RUNNING or None records progress; COMPLETE, ERROR and
    CANCELED end the activity with `message`, as `complete`, `error` and a cancel do.
    Returns the event's stream id. Raises ValueError for an empty message, a percentage
    outside 0-100 or status QUEUED, `UnknownActivityError` for an agent id never used.
    """
    event = update_event(agent_id, message, percentage, status)
    return "" if event is None else append(event)


def _status(value: Status | str) -> Status:
    try:
        status = Status(value)
    except ValueError:
        raise ValueError(
            f"status {value!r} is not an activity status; use one of "
            f"{', '.join(s.name for s in Status)}."
        ) from None
    if status is Status.QUEUED:
        raise ValueError(
            "update(status=QUEUED): an activity never goes back to QUEUED; report progress "
            "with status=RUNNING (or no status), or start a new activity with "
            "ax.activity.create(...)."
        )
    return status


def complete(agent_id: UUID | str, message: str | None = None, percentage: int = 100) -> str:
    """Mark the activity COMPLETE (final: later events do not change its status)."""
    return append(completed_event(agent_id, message, percentage))


def error(agent_id: UUID | str, message: str | None = None, *, error: str | None = None) -> str:
    """Mark the activity ERROR (final) with `message`, or with
    `AGENTEXEC_ACTIVITY_MESSAGE_ERROR` filled in with `error=` (`error(id, error="...")`).

    Called by a task's own handler (for the agent id it received), it is the handler's
    verdict on the task: when the handler ends, by returning or by raising, the task fails
    for good with this message (no retry), `get_result` raises `TaskFailedError` with it, and
    its return value is discarded. The worker records that one failure (so the ERROR shows
    when the handler ends) and returns `""` here. Anywhere else the event is appended at once
    and its stream id returned."""
    event = failed_event(agent_id, message, error)
    return "" if event is None else append(event)


def pending_query() -> Select[UUID, str, str | None]:
    """The QUEUED and RUNNING activities `cancel_pending` looks at: agent id, task name,
    queue."""
    from sqlalchemy import select

    from .models import Activity

    return select(Activity.agent_id, Activity.agent_type, Activity.queue).where(
        Activity.status.in_(ACTIVE)
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
    from .reads import is_async

    query = pending_query()
    if is_async(session):

        async def run() -> int:
            rows = (await session.execute(query)).all()
            return await _cancel_async(rows)

        return run()
    log = EventLog(current().broker)
    events = cancel_orphans(session.execute(query).all())
    for event in events:
        log.append_sync(event, check=False)
    return len(events)


async def _cancel_async(rows: Sequence[Any]) -> int:
    # The look at the queues is blocking Redis work: a thread keeps the loop free.
    events = await asyncio.to_thread(cancel_orphans, rows)
    log = EventLog(current().broker)
    for event in events:
        await log.append(event, check=False)
    return len(events)


def cancel_orphans(rows: Sequence[Any]) -> list[TaskCanceled]:
    """The `task.canceled` events of `cancel_pending` for `rows` (of `pending_query`): one per
    activity that no queue holds and no worker runs. Blocking (reads Redis); raises
    `RedisUnavailableError` when Redis is down."""
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
    if orphans:
        logger.info("canceling %d pending activities that no queue holds", len(orphans))
    if len(orphans) < len(rows):
        logger.info(
            "cancel_pending: left %d task(s) that their queue holds for a worker",
            len(rows) - len(orphans),
        )
    return [
        TaskCanceled(agent_id=agent_id, task_name=task_name, message=CANCELED_MESSAGE)
        for agent_id, task_name in orphans
    ]
