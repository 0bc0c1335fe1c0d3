"""The SSE endpoints: the feed of every event and the feed of one agent's events.

Each checks the router's feed limit before any Redis or SQL work, finds where the feed
starts, and answers with a `FeedResponse` over `feeds.stream`. `router()` (api/routes.py)
mounts them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal
from uuid import UUID

import anyio
from fastapi import Depends, Header, HTTPException, Query, Response
from pydantic import AfterValidator
from starlette.concurrency import run_in_threadpool

from agentexec.activity import reads
from agentexec.connection import REDIS_ERRORS
from agentexec.events import TERMINAL, Status
from agentexec.positions import ORIGIN, Position

from .cursors import Cursor
from .feeds import stream
from .hub import Accepts
from .messages import Delivery
from .responses import FeedResponse
from .state import Live, LiveState
from .tokens import FeedScope, FeedTokenError, verify_feed_token

__all__ = ["agent_feed", "agent_feed_by_token", "events_feed", "events_feed_by_token", "feed_scope"]

logger = logging.getLogger(__name__)

TENANT_PATTERN = r"^[A-Za-z0-9_.:@-]{1,128}$"
WireStatus = Literal["queued", "running", "complete", "error", "canceled"]


def _event_id(value: str | None) -> str | None:
    if value is not None:
        Cursor.parse(value)  # its form; the number of positions is checked by each feed
    return value


EventId = Annotated[str | None, AfterValidator(_event_id)]


def resume_from(
    last_event_id: Annotated[EventId, Query()] = None,
    last_event_id_header: Annotated[EventId, Header(alias="Last-Event-ID")] = None,
) -> str | None:
    """Dependency of the feeds: the id a client resumes after, None for none."""
    # The header wins: browsers send it on reconnection, with the query string unchanged.
    return last_event_id_header if last_event_id_header is not None else last_event_id


Resume = Annotated[str | None, Depends(resume_from)]


def _cursor(live: LiveState, text: str) -> Cursor:
    """The global feed's cursor written `text`: one position per partition; 422 naming the
    value and the fix when it has another number of them."""
    try:
        return Cursor.parse(text, len(live.history.partitions))
    except ValueError as e:
        raise HTTPException(422, str(e)) from None


def _agent_position(live: LiveState, text: str, partition: int) -> Position:
    """A task feed's position written `text`: a stream id of its partition, or a cursor of
    the global feed (its partition's position)."""
    cursor = Cursor.parse(text)
    if len(cursor) == 1:
        return cursor[0]
    return _cursor(live, text)[partition]


@dataclass(frozen=True)
class EventFilter:
    """Which events `/api/events` sends: only tasks named in `task_names`, only events moving
    a task to one of `statuses` (each empty: all), only the events of `tenant`'s tasks."""

    task_names: frozenset[str] = frozenset()
    statuses: frozenset[Status] = frozenset()
    tenant: str | None = None

    def accepts(self) -> Accepts | None:
        """The feed's test of a delivery; None when every delivery passes."""
        names, statuses, tenant = self.task_names, self.statuses, self.tenant
        if not (names or statuses or tenant is not None):
            return None

        def accepts(delivery: Delivery) -> bool:
            return (
                (not names or delivery.task_name in names)
                and (not statuses or delivery.status in statuses)
                and (tenant is None or delivery.event.tenant == tenant)
            )

        return accepts


def event_filter(
    task_name: Annotated[list[str] | None, Query()] = None,
    status: Annotated[list[WireStatus] | None, Query()] = None,
    tenant: Annotated[str | None, Query(pattern=TENANT_PATTERN)] = None,
) -> EventFilter:
    """Dependency of `/api/events`: its filter parameters."""
    return EventFilter(
        frozenset(task_name or ()), frozenset(Status(s.upper()) for s in status or ()), tenant
    )


Filter = Annotated[EventFilter, Depends(event_filter)]


async def events_feed(live: Live, only: Filter, after: Resume) -> Response:
    """Every event, live (only tasks named `task_name`, only events moving a task to
    `status`: both repeatable; only the events of `tenant`'s tasks). Resume with
    `Last-Event-ID` (header, or `last_event_id`): every later event once, in order, then
    the live tail; `0` is the beginning. With several partitions (AGENTEXEC_PARTITIONS) the
    ids are cursors, one position per partition joined by `_` (docs/api.md)."""
    if live.feeds.full:  # before any Redis or SQL work
        return live.feeds.refusal()
    if after is None:
        cursor = await _redis_call("cannot open the feed", live.history.tails)
    else:
        cursor = _cursor(live, after)
    return _feed_response(live, cursor, accepts=only.accepts())


async def agent_feed(agent_id: UUID, live: Live, after: Resume) -> Response:
    """One task's events from the beginning (or after `Last-Event-ID`), then live, ending
    after its terminal event (complete, error or canceled)."""
    if live.feeds.full:
        return live.feeds.refusal()
    partition = live.history.of(agent_id)
    position = ORIGIN if after is None else _agent_position(live, after, partition)
    last = await run_in_threadpool(_last_event, live, agent_id)
    if last is None:
        broker = live.history.broker()
        known = await _redis_call("cannot open the feed", lambda: broker.known(agent_id))
        if not known:
            raise HTTPException(404, f"no activity with agent id {agent_id}")
    elif last.status in TERMINAL and position >= Position.parse(last.event_id):
        return Response(status_code=204)
    cursor = Cursor.origin(len(live.history.partitions)).moved(partition, position)
    return _feed_response(live, cursor, agent_id=agent_id)


def feed_scope(
    live: Live,
    feed_token: Annotated[
        str, Query(max_length=1024, description="A token from agentexec.api.feed_token")
    ],
) -> FeedScope:
    """Dependency of the feeds opened with a feed token: its scope, if it is valid; 401 when
    it is not, or when this API accepts none."""
    if live.feed_key is None:
        raise HTTPException(
            401,
            "this API accepts no feed tokens: give it the secret the application signs them "
            "with (router(feed_secret=...) or AGENTEXEC_FEED_SECRET)",
        )
    try:
        return verify_feed_token(live.feed_key, feed_token)
    except FeedTokenError as e:
        raise HTTPException(401, str(e)) from None


Scope = Annotated[FeedScope, Depends(feed_scope)]


async def events_feed_by_token(live: Live, only: Filter, after: Resume, scope: Scope) -> Response:
    """`/api/events` opened with a tenant's feed token: only that tenant's events."""
    if scope.tenant is None:
        raise HTTPException(
            403,
            "this feed token is for one task: open /api/activities/"
            f"{scope.agent_id}/events with it",
        )
    if only.tenant is not None and only.tenant != scope.tenant:
        raise HTTPException(
            403, f"this feed token is for tenant {scope.tenant!r}, not tenant {only.tenant!r}"
        )
    return await events_feed(live, replace(only, tenant=scope.tenant), after)


async def agent_feed_by_token(agent_id: UUID, live: Live, after: Resume, scope: Scope) -> Response:
    """`/api/activities/{agent_id}/events` opened with that task's feed token."""
    if scope.agent_id != agent_id:
        what = (
            f"task {scope.agent_id}"
            if scope.agent_id is not None
            else f"tenant {scope.tenant!r}: open /api/events with it"
        )
        raise HTTPException(403, f"this feed token is for {what}, not task {agent_id}")
    return await agent_feed(agent_id, live, after)


def _last_event(live: LiveState, agent_id: UUID) -> reads.LastEvent | None:
    with live.session() as s:
        return reads.last_event(s, agent_id)


def _feed_response(
    live: LiveState,
    after: Cursor,
    agent_id: UUID | None = None,
    accepts: Accepts | None = None,
) -> Response:
    feeds = live.feeds
    if not feeds.take():
        return feeds.refusal()  # the endpoints checked first; others took the last places
    # On shutdown, sse-starlette sets `closing` and the feed ends its stream cleanly.
    closing = anyio.Event()
    frames = stream(live.hub, after, agent_id=agent_id, accepts=accepts, closing=closing)
    return FeedResponse(
        frames,
        closed=feeds.release,
        ping=live.keepalive,
        send_timeout=live.send_timeout,
        send_buffer=live.send_buffer,
        shutdown_event=closing,
        shutdown_grace_period=1.0,
    )


async def _redis_call(what: str, call: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return await call()
    except REDIS_ERRORS as e:
        logger.warning("API: Redis is unreachable: %s", e)
        raise HTTPException(503, f"Redis is unreachable ({type(e).__name__}); {what}") from e
