"""The REST endpoints: reads of the read model (`agentexec.activity.reads`), one session each.

`router()` (api/routes.py) mounts them under `/api/activities`.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import HTTPException, Query, Response

from agentexec.activity import reads
from agentexec.activity.reads import MAX_PAGE_SIZE
from agentexec.activity.schemas import (
    ActivityChildrenSchema,
    ActivityDetailSchema,
    ActivityListSchema,
)
from agentexec.positions import ORIGIN

from .schemas import ActiveCountSchema, ActivityStatusSchema
from .state import Live

__all__ = [
    "POSITION_HEADER",
    "active_count",
    "get_activity",
    "get_children",
    "get_status",
    "list_activities",
]

POSITION_HEADER = "Agentexec-Position"
"""Response header of `GET /api/activities`: the log position the read model had reached
before the list was read. Open `/api/events?last_event_id=<it>` to get every later event."""

MAX_PAGE = 1_000_000_000


def list_activities(
    response: Response,
    live: Live,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
    parent_id: Annotated[UUID | None, Query(description="Only the children of this task")] = None,
) -> ActivityListSchema:
    """One page of activities: queued and running ones first, then the rest, newest first.

    The `Agentexec-Position` header is the log position the read model had reached:
    open `/api/events?last_event_id=<it>` to follow every change after this page."""
    with live.session() as s:
        position = reads.checkpoint(s, live.keys.events)
        response.headers[POSITION_HEADER] = position or str(ORIGIN)
        return reads.list_activities(s, page=page, page_size=page_size, parent_id=parent_id)


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
