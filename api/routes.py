"""The routes: REST reads of the read model, the SSE feeds of the event log, the dashboard.

`router()` builds them for one engine and one Redis namespace; see docs/api.md.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any, Literal
from uuid import UUID

import anyio
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, Response
from pydantic import AfterValidator
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse

import agentexec as ax
from agentexec.activity.reads import MAX_PAGE_SIZE
from agentexec.activity.schemas import ActivityDetailSchema, ActivityListSchema
from agentexec.config import CONF
from agentexec.connection import REDIS_ERRORS, get_redis
from agentexec.errors import ConfigurationError
from agentexec.events import TERMINAL, Status
from agentexec.positions import ORIGIN, Position
from agentexec.streams import Keys

from . import dashboard
from .authorization import BearerToken
from .feeds import stream
from .history import History
from .hub import Accepts, Hub
from .messages import Delivery, TaskNames
from .responses import FeedResponse, OpenFeeds
from .schemas import ActiveCountSchema, ActivityStatusSchema, ProblemSchema

__all__ = ["POSITION_HEADER", "LiveRouter", "requested_agent_id", "router"]

logger = logging.getLogger(__name__)

POSITION_HEADER = "Agentexec-Position"
"""Response header of `GET /api/activities`: the log position the read model had reached
before the list was read. Open `/api/events?last_event_id=<it>` to get every later event."""

MAX_PAGE = 1_000_000_000

WireStatus = Literal["queued", "running", "complete", "error", "canceled"]


def _position(value: str | None) -> str | None:
    if value is not None:
        Position.parse(value)
    return value


EventId = Annotated[str | None, AfterValidator(_position)]


class LiveRouter(APIRouter):
    """The router `router()` returns; `hub` is its process's SSE hub, `feeds` counts the
    feeds it serves."""

    def __init__(self, hub: Hub, feeds: OpenFeeds, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hub = hub
        self.feeds = feeds


def requested_agent_id(request: Request) -> UUID | None:
    """Dependency: the agent id a request names in its path, None for routes about every
    activity (lists, counts, the feed of every event) or when it is not a valid UUID (the
    route answers 422 then)."""
    value = request.path_params.get("agent_id")
    if value is None:
        return None
    try:
        return UUID(str(value))
    except ValueError:
        return None


def _allow_all() -> None:
    return None


_PROBLEMS: dict[int | str, dict[str, Any]] = {
    503: {"model": ProblemSchema, "description": "Redis or the database is unreachable"},
}
_FEED_PROBLEMS: dict[int | str, dict[str, Any]] = {
    503: {
        "model": ProblemSchema,
        "description": "Redis or the database is unreachable, or this process serves as many "
        "feeds as it may (`max_feeds`)",
    },
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ProblemSchema, "description": "No activity with this agent id"},
}
_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
        "description": "Server-sent events: `id:` stream id, `event:` event type, `data:` JSON",
    }
}


def router(
    *,
    engine: Engine | None = None,
    authorize: Callable[..., Any] | None = None,
    token: str | None = None,
    redis_url: str | None = None,
    dashboard_page: bool = True,
    buffer: int = 1000,
    send_timeout: float = 10.0,
    keepalive: float = 15.0,
    max_feeds: int | None = None,
    send_buffer: int | None = 64 * 1024,
) -> LiveRouter:
    """The agentexec API as a FastAPI router: `app.include_router(agentexec.api.router(...))`.

    - `engine`: the read model's SQLAlchemy engine (default: `AGENTEXEC_DATABASE_URL`).
    - `authorize`: a FastAPI dependency run before every API route (not the dashboard page);
      it refuses by raising `HTTPException(401 or 403)`, before any stream opens. It may
      depend on `requested_agent_id` to decide per agent.
    - `token`: require this bearer token on every API route (`Authorization: Bearer
      <token>`; the dashboard is signed in by opening it once with `?token=<token>`); with
      `authorize` too, a request must pass both. Raises `ConfigurationError` for a token
      shorter than 16 characters.
    - `redis_url`: default `AGENTEXEC_REDIS_URL`; the key namespace is `AGENTEXEC_KEY_PREFIX`
      as set when this is called.
    - `dashboard_page`: serve the dashboard at `/`.
    - `buffer`: events a feed may fall behind the live tail before it is cut off (the client
      then resumes from its last event id); `send_timeout`: seconds one send to a client
      may take before it is cut off (its connection aborted); `keepalive`: seconds between
      keepalive comments (at most 15).
    - `max_feeds`: feeds this process serves at once (default `AGENTEXEC_API_MAX_FEEDS`,
      1000); one more is answered 503. `send_buffer`: each feed connection's kernel send
      buffer in bytes (None: the system's default, which grows to megabytes).
    """
    if max_feeds is None:
        max_feeds = CONF.api_max_feeds
    if (
        buffer < 1
        or send_timeout <= 0
        or not 0 < keepalive <= 15
        or max_feeds < 1
        or (send_buffer is not None and send_buffer < 1024)
    ):
        raise ConfigurationError(
            f"router(buffer={buffer!r}, send_timeout={send_timeout!r}, keepalive={keepalive!r},"
            f" max_feeds={max_feeds!r}, send_buffer={send_buffer!r}): use a buffer >= 1, a send"
            " timeout > 0, a keepalive from above 0 to 15 seconds, max_feeds >= 1 and a send"
            " buffer of at least 1024 bytes (or None)."
        )
    bearer = BearerToken(token) if token is not None else None
    if engine is None:
        if CONF.database_url is None:
            raise ConfigurationError(
                "agentexec.api.router() needs the read model: pass engine=create_engine(...) "
                "or set AGENTEXEC_DATABASE_URL (e.g. sqlite:///agents.db)."
            )
        engine = create_engine(CONF.database_url)
    keys = Keys(CONF.key_prefix)
    history = History(keys, engine, TaskNames(engine), redis_url=redis_url)
    hub = Hub(keys, history, redis_url=redis_url, buffer=buffer)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await hub.close()

    feeds = OpenFeeds(max_feeds)
    api = LiveRouter(hub, feeds, lifespan=lifespan)
    guard = [Depends(check) for check in (bearer, authorize) if check is not None]
    guard = guard or [Depends(_allow_all)]

    @contextlib.contextmanager
    def session() -> Iterator[Session]:
        try:
            with Session(engine) as s:
                yield s
        except SQLAlchemyError as e:
            logger.warning("API: the read model is unreachable: %s", e)
            raise HTTPException(503, f"the read model is unreachable ({type(e).__name__})") from e

    def load_state(agent_id: UUID) -> tuple[Status, str] | None:
        from agentexec.activity.models import Activity

        with session() as s:
            row = s.execute(
                select(Activity.status, Activity.last_event_id).where(Activity.agent_id == agent_id)
            ).first()
        return None if row is None else (row[0], row[1])

    def read_position(s: Session) -> str:
        from agentexec.activity.models import Checkpoint

        value = s.execute(
            select(Checkpoint.position).where(Checkpoint.name == keys.events)
        ).scalar()
        return str(value) if value else str(ORIGIN)

    @api.get(
        "/api/activities",
        response_model=ActivityListSchema,
        dependencies=guard,
        responses=_PROBLEMS,
        tags=["activities"],
    )
    def list_activities(
        response: Response,
        page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
        page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
    ) -> ActivityListSchema:
        """One page of activities: queued and running ones first, then the rest, newest first.

        The `Agentexec-Position` header is the log position the read model had reached:
        open `/api/events?last_event_id=<it>` to follow every change after this page."""
        with session() as s:
            response.headers[POSITION_HEADER] = read_position(s)
            return ax.activity.list(s, page=page, page_size=page_size)

    @api.get(
        "/api/activities/active/count",
        response_model=ActiveCountSchema,
        dependencies=guard,
        responses=_PROBLEMS,
        tags=["activities"],
    )
    def active_count() -> ActiveCountSchema:
        """How many activities are queued or running."""
        with session() as s:
            return ActiveCountSchema(count=ax.activity.active_count(s))

    @api.get(
        "/api/activities/{agent_id}",
        response_model=ActivityDetailSchema,
        dependencies=guard,
        responses={**_NOT_FOUND, **_PROBLEMS},
        tags=["activities"],
    )
    def get_activity(agent_id: UUID) -> ActivityDetailSchema:
        """One activity with its whole log, oldest entry first."""
        with session() as s:
            activity = ax.activity.detail(s, agent_id)
        if activity is None:
            raise HTTPException(404, f"no activity with agent id {agent_id}")
        return activity

    @api.get(
        "/api/activities/{agent_id}/status",
        response_model=ActivityStatusSchema,
        dependencies=guard,
        responses={**_NOT_FOUND, **_PROBLEMS},
        tags=["activities"],
    )
    def get_status(agent_id: UUID) -> ActivityStatusSchema:
        """Just the current status, the latest percentage (`progress`) and message."""
        with session() as s:
            activity = ax.activity.detail(s, agent_id)
        if activity is None:
            raise HTTPException(404, f"no activity with agent id {agent_id}")
        return ActivityStatusSchema(
            status=activity.status,
            progress=activity.latest_percentage,
            message=activity.logs[-1].message if activity.logs else activity.latest_log,
        )

    def resume_from(query: str | None, header: str | None) -> Position | None:
        # The header wins: browsers send it on reconnection, with the query string unchanged.
        value = header if header is not None else query
        return None if value is None else Position.parse(value)

    def feed_response(
        after: Position, agent_id: UUID | None = None, accepts: Accepts | None = None
    ) -> Response:
        if not feeds.take():
            return feeds.refusal()  # the routes checked first; others took the last places
        # On shutdown, sse-starlette sets `closing` and the feed ends its stream cleanly.
        closing = anyio.Event()
        frames = stream(hub, after, agent_id=agent_id, accepts=accepts, closing=closing)
        return FeedResponse(
            frames,
            closed=feeds.release,
            ping=keepalive,
            send_timeout=send_timeout,
            send_buffer=send_buffer,
            shutdown_event=closing,
            shutdown_grace_period=1.0,
        )

    async def redis_call(what: str, call: Callable[[], Any]) -> Any:
        try:
            return await call()
        except REDIS_ERRORS as e:
            logger.warning("API: Redis is unreachable: %s", e)
            raise HTTPException(503, f"Redis is unreachable ({type(e).__name__}); {what}") from e

    @api.get(
        "/api/events",
        response_class=EventSourceResponse,
        dependencies=guard,
        responses={**_STREAM, **_FEED_PROBLEMS},
        tags=["feeds"],
    )
    async def events_feed(
        task_name: Annotated[list[str] | None, Query()] = None,
        status: Annotated[list[WireStatus] | None, Query()] = None,
        last_event_id: Annotated[EventId, Query()] = None,
        last_event_id_header: Annotated[EventId, Header(alias="Last-Event-ID")] = None,
    ) -> Response:
        """Every event, live (only tasks named `task_name`, only events moving a task to
        `status`: both repeatable). Resume with `Last-Event-ID` (header, or `last_event_id`):
        every later event once, in order, then the live tail; `0` is the beginning."""
        if feeds.full:  # before any Redis or SQL work
            return feeds.refusal()
        after = resume_from(last_event_id, last_event_id_header)
        if after is None:
            after = await redis_call("cannot open the feed", history.tail)
        names = frozenset(task_name or ())
        statuses = frozenset(Status(s.upper()) for s in status or ())
        accepts: Accepts | None = None
        if names or statuses:

            def accepts(delivery: Delivery) -> bool:
                return (not names or delivery.task_name in names) and (
                    not statuses or delivery.status in statuses
                )

        return feed_response(after, accepts=accepts)

    @api.get(
        "/api/activities/{agent_id}/events",
        response_class=EventSourceResponse,
        dependencies=guard,
        responses={
            **_STREAM,
            204: {"description": "The task ended before the event id given: nothing to send"},
            **_NOT_FOUND,
            **_FEED_PROBLEMS,
        },
        tags=["feeds"],
    )
    async def agent_feed(
        agent_id: UUID,
        last_event_id: Annotated[EventId, Query()] = None,
        last_event_id_header: Annotated[EventId, Header(alias="Last-Event-ID")] = None,
    ) -> Response:
        """One task's events from the beginning (or after `Last-Event-ID`), then live, ending
        after its terminal event (complete, error or canceled)."""
        if feeds.full:
            return feeds.refusal()
        after = resume_from(last_event_id, last_event_id_header) or ORIGIN
        state = await run_in_thread(load_state, agent_id)
        if state is None:
            client = get_redis(redis_url)
            known = await redis_call(
                "cannot open the feed",
                lambda: client.exists(keys.agent(agent_id), keys.result(agent_id)),
            )
            if not known:
                raise HTTPException(404, f"no activity with agent id {agent_id}")
        elif state[0] in TERMINAL and after >= Position.parse(state[1]):
            return Response(status_code=204)
        return feed_response(after, agent_id=agent_id)

    if dashboard_page:
        api.add_api_route("/", dashboard.page_for(bearer), include_in_schema=False)

    return api


async def run_in_thread(function: Callable[..., Any], *args: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(function, *args)
