"""The REST endpoints: reads of the read model (`agentexec.activity.reads`), one session each.

`router()` (api/routes.py) mounts them under `/api/activities`.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import HTTPException, Query, Response
from pydantic import BeforeValidator, StringConstraints
from sqlalchemy.orm import Session

from agentexec.activity import reads, statistics
from agentexec.activity.filters import CURSOR_PATTERN
from agentexec.activity.reads import MAX_PAGE_SIZE
from agentexec.activity.schemas import (
    ActivityChildrenSchema,
    ActivityDetailSchema,
    ActivityListSchema,
    ActivityStatsSchema,
)
from agentexec.events import Status
from agentexec.positions import Position

from .cursors import Cursor
from .schemas import ActiveCountSchema, ActivityStatusSchema
from .state import Live, LiveState

__all__ = [
    "POSITION_HEADER",
    "active_count",
    "get_activity",
    "get_children",
    "get_stats",
    "get_status",
    "list_activities",
]

POSITION_HEADER = "Agentexec-Position"
"""Response header of `GET /api/activities`: the log position the read model had reached
before the list was read. Open `/api/events?last_event_id=<it>` to get every later event."""

MAX_PAGE = 1_000_000_000


MetadataPair = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,100}=.{0,1000}$")]
Metadata = Annotated[
    list[MetadataPair] | None,
    Query(description="key=value the task's metadata must hold (compared as text); repeatable"),
]
Tenant = Annotated[
    str | None,
    Query(
        pattern=r"^[A-Za-z0-9_.:@-]{1,128}$",
        description="Only the tasks of this tenant (short for metadata=tenant=<it>)",
    ),
]
TaskNames = Annotated[str | None, Query(max_length=255, description="Only tasks of this name")]


def _iso_time(value: object) -> object:
    # Pydantic also takes a number of seconds for a datetime; the schema says ISO 8601.
    if isinstance(value, str) and not re.match(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError(f"{value!r} is not an ISO 8601 time such as 2026-12-06T10:00:00Z")
    return value


IsoTime = Annotated[datetime, BeforeValidator(_iso_time)]
Since = Annotated[IsoTime | None, Query(description="Created at or after (default UTC)")]
Until = Annotated[IsoTime | None, Query(description="Created before (default UTC)")]


def _metadata(pairs: list[str] | None) -> dict[str, str] | None:
    return None if not pairs else dict(pair.split("=", 1) for pair in pairs)


def list_activities(
    response: Response,
    live: Live,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
    parent_id: Annotated[UUID | None, Query(description="Only the children of this task")] = None,
    status: Annotated[list[Status] | None, Query(description="Only these statuses")] = None,
    task_name: TaskNames = None,
    since: Since = None,
    until: Until = None,
    metadata: Metadata = None,
    tenant: Tenant = None,
    running_longer_than: Annotated[
        float | None,
        Query(ge=0, le=1e9, description="Only tasks running for longer than this (seconds)"),
    ] = None,
    retried: Annotated[
        bool | None, Query(description="true: only retried tasks; false: never retried")
    ] = None,
    cursor: Annotated[
        str | None,
        Query(
            pattern=CURSOR_PATTERN,
            description="`next_cursor` of the page before (then `page` is not used)",
        ),
    ] = None,
) -> ActivityListSchema:
    """One page of activities: queued and running ones first, then the rest, newest first,
    with the filters given (all must hold). Pass a page's `next_cursor` back as `cursor` for
    the page after it (keyset pagination, fast at any depth).

    The `Agentexec-Position` header is the log position the read model had reached:
    open `/api/events?last_event_id=<it>` to follow every change after this page."""
    longer = None if running_longer_than is None else timedelta(seconds=running_longer_than)
    with live.session() as s:
        response.headers[POSITION_HEADER] = str(_read_position(s, live))
        try:
            return reads.list_activities(
                s,
                page=page,
                page_size=page_size,
                cursor=cursor,
                parent_id=parent_id,
                status=status,
                task_name=task_name,
                since=since,
                until=until,
                metadata=_metadata(metadata),
                tenant=tenant,
                running_longer_than=longer,
                retried=retried,
            )
        except ValueError as e:
            raise HTTPException(400, str(e)) from None


def _read_position(s: Session, live: LiveState) -> Cursor:
    """Where the read model is in each partition's log: the global feed's cursor."""
    history = live.history
    return Cursor(
        tuple(
            Position.parse(reads.checkpoint(s, history.keys(p).events) or "0")
            for p in history.partitions
        )
    )


def get_stats(
    live: Live,
    task_name: TaskNames = None,
    since: Since = None,
    until: Until = None,
    metadata: Metadata = None,
    tenant: Tenant = None,
    bucket_seconds: Annotated[
        float | None, Query(ge=1, le=1e9, description="Also per bucket of this many seconds")
    ] = None,
) -> ActivityStatsSchema:
    """Statistics of the tasks created in [since, until): per task name and overall, counts
    by status, success and retry rates, queue wait and run durations (mean, nearest-rank
    p50 and p95, max, in seconds) and the most frequent errors; with `bucket_seconds`, the
    same per time bucket."""
    bucket = None if bucket_seconds is None else timedelta(seconds=bucket_seconds)
    with live.session() as s:
        try:
            return statistics.stats(
                s,
                task_name=task_name,
                since=since,
                until=until,
                metadata=_metadata(metadata),
                tenant=tenant,
                bucket=bucket,
            )
        except ValueError as e:
            raise HTTPException(400, str(e)) from None


def active_count(live: Live) -> ActiveCountSchema:
    """How many activities are queued or running."""
    with live.session() as s:
        return ActiveCountSchema(count=reads.active_count(s))


def get_activity(agent_id: UUID, live: Live) -> ActivityDetailSchema:
    """One activity with its whole log, oldest entry first."""
    with live.session() as s:
        activity = reads.detail(s, agent_id)
    if activity is None:
        raise HTTPException(404, f"no activity with agent id {agent_id}")
    return activity


def get_children(
    agent_id: UUID,
    live: Live,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
) -> ActivityChildrenSchema:
    """The tasks queued with this one as their parent, oldest first, and how many of them
    are in each status."""
    with live.session() as s:
        children = reads.children(s, agent_id, page=page, page_size=page_size)
    if children is None:
        raise HTTPException(404, f"no activity with agent id {agent_id}, and no child of it")
    return children


def get_status(agent_id: UUID, live: Live) -> ActivityStatusSchema:
    """Just the current status, the latest percentage (`progress`) and message."""
    with live.session() as s:
        activity = reads.detail(s, agent_id)
    if activity is None:
        raise HTTPException(404, f"no activity with agent id {agent_id}")
    return ActivityStatusSchema(
        status=activity.status,
        progress=activity.latest_percentage,
        message=activity.logs[-1].message if activity.logs else activity.latest_log,
    )
