"""The SSE endpoints: the feed of every event and the feed of one agent's events.

Each checks the router's feed limit before any Redis or SQL work, finds where the feed
starts, and answers with a `FeedResponse` over `feeds.stream`. `router()` (api/routes.py)
mounts them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal
from uuid import UUID

import anyio
from fastapi import Header, HTTPException, Query, Response
from pydantic import AfterValidator
from starlette.concurrency import run_in_threadpool

from agentexec.activity import reads
from agentexec.connection import REDIS_ERRORS
from agentexec.events import TERMINAL, Status
from agentexec.positions import ORIGIN, Position

from .feeds import stream
from .hub import Accepts
from .messages import Delivery
from .responses import FeedResponse
from .state import Live, LiveState

__all__ = ["agent_feed", "events_feed"]

logger = logging.getLogger(__name__)

TENANT_PATTERN = r"^[A-Za-z0-9_.:@-]{1,128}$"
WireStatus = Literal["queued", "running", "complete", "error", "canceled"]


def _position(value: str | None) -> str | None:
    if value is not None:
        Position.parse(value)
    return value


EventId = Annotated[str | None, AfterValidator(_position)]


async def events_feed(
    live: Live,
    task_name: Annotated[list[str] | None, Query()] = None,
    status: Annotated[list[WireStatus] | None, Query()] = None,
    tenant: Annotated[str | None, Query(pattern=TENANT_PATTERN)] = None,
    last_event_id: Annotated[EventId, Query()] = None,
    last_event_id_header: Annotated[EventId, Header(alias="Last-Event-ID")] = None,
) -> Response:
    """Every event, live (only tasks named `task_name`, only events moving a task to
    `status`: both repeatable; only the events of `tenant`'s tasks). Resume with
    `Last-Event-ID` (header, or `last_event_id`): every later event once, in order, then
    the live tail; `0` is the beginning."""
    if live.feeds.full:  # before any Redis or SQL work
        return live.feeds.refusal()
    after = _resume_from(last_event_id, last_event_id_header)
    if after is None:
        after = await _redis_call("cannot open the feed", live.history.tail)
    names = frozenset(task_name or ())
    statuses = frozenset(Status(s.upper()) for s in status or ())
    accepts: Accepts | None = None
    if names or statuses or tenant is not None:

        def accepts(delivery: Delivery) -> bool:
            return (
                (not names or delivery.task_name in names)
                and (not statuses or delivery.status in statuses)
                and (tenant is None or delivery.event.tenant == tenant)
            )

    return _feed_response(live, after, accepts=accepts)


async def agent_feed(
    agent_id: UUID,
    live: Live,
    last_event_id: Annotated[EventId, Query()] = None,
    last_event_id_header: Annotated[EventId, Header(alias="Last-Event-ID")] = None,
) -> Response:
    """One task's events from the beginning (or after `Last-Event-ID`), then live, ending
    after its terminal event (complete, error or canceled)."""
    if live.feeds.full:
        return live.feeds.refusal()
    after = _resume_from(last_event_id, last_event_id_header) or ORIGIN
    last = await run_in_threadpool(_last_event, live, agent_id)
    if last is None:
        broker = live.history.broker()
        known = await _redis_call("cannot open the feed", lambda: broker.known(agent_id))
        if not known:
            raise HTTPException(404, f"no activity with agent id {agent_id}")
    elif last.status in TERMINAL and after >= Position.parse(last.event_id):
        return Response(status_code=204)
    return _feed_response(live, after, agent_id=agent_id)


def _last_event(live: LiveState, agent_id: UUID) -> reads.LastEvent | None:
    with live.session() as s:
        return reads.last_event(s, agent_id)


def _resume_from(query: str | None, header: str | None) -> Position | None:
    # The header wins: browsers send it on reconnection, with the query string unchanged.
    value = header if header is not None else query
    return None if value is None else Position.parse(value)


def _feed_response(
    live: LiveState,
    after: Position,
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
