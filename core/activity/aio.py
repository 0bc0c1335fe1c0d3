"""The activity API for async code: `ax.activity.aio`, the same calls as `ax.activity`, each a
coroutine function (`await ax.activity.aio.update(agent_id, "searching")`).

The writes append their event with the async Redis client: inside a task's handler they
return its stream id once appended (fenced by the task's lease, after the events the
handler queued before), where the plain calls, on an event loop, queue the event and
return "". They build the same events as the plain calls (`agentexec.activity.writes`).
The reads take an `AsyncSession` and run the same queries as the plain reads.

Like `ax.activity`, importing this module does not import the SQLAlchemy ORM: the read side
is imported on the first read.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from typing_extensions import Unpack

from agentexec.eventlog import EventLog
from agentexec.events import Event, Status
from agentexec.runtime import current
from agentexec.tasks import own_task

from .writes import (
    completed_event,
    created_event,
    failed_event,
    pending_query,
    update_event,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy.ext.asyncio import AsyncSession

    from .filters import ListFilters, MetadataFilter
    from .schemas import (
        ActivityChildrenSchema,
        ActivityDetailSchema,
        ActivityListSchema,
        ActivityStatsSchema,
    )

__all__ = [
    "active_count",
    "append",
    "cancel_pending",
    "children",
    "complete",
    "count_active",
    "create",
    "detail",
    "error",
    "list",
    "prune",
    "stats",
    "update",
]


async def append(event: Event, *, check: bool = True) -> str:
    """Append one event to the log (`EventLog.append`); returns its stream id, "" when the
    running handler's worker lost the task (see there). Inside the task's own handler, waits
    while Redis is unreachable, for up to `AGENTEXEC_ENQUEUE_TIMEOUT` seconds.

    With `check`, raises `UnknownActivityError` unless the agent id is known (see
    `agentexec.activity.writes`). Raises `RedisUnavailableError` when Redis is unreachable.
    """
    run = own_task(event.agent_id)
    return await EventLog(current().broker).append(
        event, run.lease if run is not None else None, check=check and run is None, wait=True
    )


async def create(
    task_name: str,
    message: str | None = None,
    agent_id: UUID | str | None = None,
    session: AsyncSession | None = None,
    metadata: dict[str, Any] | None = None,
    tenant: str | None = None,
) -> UUID:
    """`ax.activity.create`, awaited: start tracking an activity not run by a worker, with
    `metadata` and `tenant`; returns its agent id (new if None). `session` is accepted for
    compatibility and not written to."""
    event = created_event(task_name, message, agent_id, metadata, tenant)
    await append(event, check=False)
    return event.agent_id


async def update(
    agent_id: UUID | str,
    message: str,
    percentage: int | None = None,
    status: Status | str | None = None,
) -> str:
    """`ax.activity.update`, awaited: a RUNNING log entry with `message` and optional
    `percentage` (0-100), or with `status` COMPLETE, ERROR or CANCELED the activity's end;
    returns the event's stream id. Raises ValueError for an empty message, a percentage
    outside 0-100 or status QUEUED, `UnknownActivityError` for an agent id never used."""
    event = update_event(agent_id, message, percentage, status)
    return "" if event is None else await append(event)


async def complete(agent_id: UUID | str, message: str | None = None, percentage: int = 100) -> str:
    """`ax.activity.complete`, awaited: mark the activity COMPLETE (final)."""
    return await append(completed_event(agent_id, message, percentage))


async def error(
    agent_id: UUID | str, message: str | None = None, *, error: str | None = None
) -> str:
    """`ax.activity.error`, awaited: mark the activity ERROR (final). From a task's own
    handler it is the handler's verdict on the task and returns "" (see
    `ax.activity.error`)."""
    event = failed_event(agent_id, message, error)
    return "" if event is None else await append(event)


async def cancel_pending(session: AsyncSession) -> int:
    """`ax.activity.cancel_pending`, awaited: mark CANCELED every QUEUED or RUNNING activity
    that no worker will ever end; returns how many."""
    from .writes import _cancel_async

    _check_session(session, "cancel_pending")
    return await _cancel_async((await session.execute(pending_query())).all())


async def list(
    session: AsyncSession,
    page: int = 1,
    page_size: int = 20,
    *,
    cursor: str | None = None,
    **filters: Unpack[ListFilters],
) -> ActivityListSchema:
    """`ax.activity.list`, awaited: one page of activities, active ones first, each newest
    first; the same filters and cursor."""
    from .reads import list_activities

    _check_session(session, "list")
    return await list_activities(session, page, page_size, cursor=cursor, **filters)


async def detail(session: AsyncSession, agent_id: UUID | str) -> ActivityDetailSchema | None:
    """`ax.activity.detail`, awaited: the activity with its whole log; None when unknown."""
    from . import reads

    _check_session(session, "detail")
    return await reads.detail(session, agent_id)


async def children(
    session: AsyncSession, agent_id: UUID | str, page: int = 1, page_size: int = 100
) -> ActivityChildrenSchema | None:
    """`ax.activity.children`, awaited: one page of the task's children, oldest first."""
    from . import reads

    _check_session(session, "children")
    return await reads.children(session, agent_id, page, page_size)


async def active_count(session: AsyncSession) -> int:
    """`ax.activity.active_count`, awaited: how many activities are QUEUED or RUNNING."""
    from . import reads

    _check_session(session, "active_count")
    return await reads.active_count(session)


count_active = active_count
"""The name agentexec 0.3.0 gave `active_count`."""


async def stats(
    session: AsyncSession,
    *,
    task_name: str | Iterable[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    metadata: MetadataFilter | None = None,
    bucket: timedelta | None = None,
    tenant: str | None = None,
    metadata_filter: MetadataFilter | None = None,
) -> ActivityStatsSchema:
    """`ax.activity.stats`, awaited: statistics of the tasks created in [`since`, `until`)."""
    from . import statistics

    _check_session(session, "stats")
    return await statistics.stats(
        session,
        task_name=task_name,
        since=since,
        until=until,
        metadata=metadata,
        bucket=bucket,
        tenant=tenant,
        metadata_filter=metadata_filter,
    )


async def prune(session: AsyncSession, older_than: timedelta, *, batch_size: int = 1000) -> int:
    """`ax.activity.prune`, awaited: delete the activities that ended more than `older_than`
    ago, with their log rows; returns how many activities."""
    from . import retention

    _check_session(session, "prune")
    return await retention.prune(session, older_than, batch_size=batch_size)


def _check_session(session: object, call: str) -> None:
    from .reads import is_async

    if not is_async(session):  # type: ignore[arg-type]
        raise TypeError(
            f"ax.activity.aio.{call} takes an AsyncSession, got {type(session).__name__}: "
            f"pass AsyncSession(async_engine), or call ax.activity.{call}(session) with a "
            "Session."
        )
