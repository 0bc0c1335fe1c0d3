"""The routes: `router()` wires the endpoints (api/activities.py, api/events.py, the dashboard)
to one read model and one Redis namespace; see docs/api.md.

The endpoints are plain functions; what they share lives in the router's `LiveState`
(api/state.py), which reaches them through a dependency.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import Engine
from sse_starlette import EventSourceResponse
from starlette.routing import Match
from starlette.types import Scope

from agentexec.activity.schemas import (
    ActivityChildrenSchema,
    ActivityDetailSchema,
    ActivityListSchema,
    ActivityStatsSchema,
)
from agentexec.databases import create_sync_engine, sync_engine
from agentexec.errors import ConfigurationError
from agentexec.runtime import Runtime, current

from . import activities, dashboard, events
from .authorization import BearerToken
from .history import History
from .hub import Hub
from .metrics import registry_of, scrape
from .responses import OpenFeeds
from .schemas import ActiveCountSchema, ActivityStatusSchema, ProblemSchema
from .state import LiveState
from .tokens import feed_secret as signing_key

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["LiveRouter", "router"]

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
_BAD_REQUEST: dict[int | str, dict[str, Any]] = {
    400: {"model": ProblemSchema, "description": "A filter, cursor or bucket is not usable"},
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


class FeedTokenRoute(APIRoute):
    """A feed's route for requests that carry `?feed_token=`: put before the feed's guarded
    route on the same path, it takes those requests (checked by the token alone, see
    `agentexec.api.tokens`) and leaves every other request to the guarded route."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is Match.NONE:
            return match, child
        query = scope.get("query_string", b"").decode("latin-1")
        if not any(name == "feed_token" for name, _ in parse_qsl(query, keep_blank_values=True)):
            return Match.NONE, {}
        return match, child


class LiveRouter(APIRouter):
    """The router `router()` returns; `live` is the state its endpoints share, `hub` its
    process's SSE hub, `feeds` counts the feeds it serves."""

    def __init__(self, live: LiveState, **kwargs: Any) -> None:
        super().__init__(lifespan=self._lifespan, **kwargs)
        self.live = live

    @property
    def hub(self) -> Hub:
        return self.live.hub

    @property
    def feeds(self) -> OpenFeeds:
        return self.live.feeds

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        yield
        await self.live.hub.close()


def router(
    *,
    engine: Engine | AsyncEngine | None = None,
    authorize: Callable[..., Any] | None = None,
    token: str | None = None,
    redis_url: str | None = None,
    dashboard_page: bool = True,
    buffer: int = 1000,
    send_timeout: float = 10.0,
    keepalive: float = 15.0,
    max_feeds: int | None = None,
    send_buffer: int | None = 64 * 1024,
    metrics: bool = False,
    ui_routes: bool = False,
    feed_secret: str | bytes | None = None,
    runtime: Runtime | None = None,
) -> LiveRouter:
    """The agentexec API as a FastAPI router: `app.include_router(agentexec.api.router(...))`.

    - `engine`: the read model's SQLAlchemy engine (default: `AGENTEXEC_DATABASE_URL`); for
      an `AsyncEngine` or an async URL, the router reads through a sync engine on the same
      database (`agentexec.databases.sync_engine`).
    - `authorize`: a FastAPI dependency run before every API route (not the dashboard page);
      it refuses by raising `HTTPException(401 or 403)`, before any stream opens. It may
      depend on `requested_agent_id` to decide per agent.
    - `token`: require this bearer token on every API route (`Authorization: Bearer
      <token>`; the dashboard is signed in by opening it once with `?token=<token>`); with
      `authorize` too, a request must pass both. Raises `ConfigurationError` for a token
      shorter than 16 characters.
    - `runtime`: the settings, key namespace and Redis (default: `ax.CONF` as it is when
      this is called, see `agentexec.runtime`); `redis_url` overrides its Redis URL.
    - `dashboard_page`: serve the dashboard at `/`.
    - `buffer`: events a feed may fall behind the live tail before it is cut off (the client
      then resumes from its last event id); `send_timeout`: seconds one send to a client
      may take before it is cut off (its connection aborted); `keepalive`: seconds between
      keepalive comments (at most 15).
    - `max_feeds`: feeds this process serves at once (default `AGENTEXEC_API_MAX_FEEDS`,
      1000); one more is answered 503. `send_buffer`: each feed connection's kernel send
      buffer in bytes (None: the system's default, which grows to megabytes).
    - `metrics`: serve Prometheus metrics at `/metrics` (the router's open feeds; guarded as
      the API routes are; see docs/metrics.md).
    - `ui_routes`: also serve the list, detail and active count under the paths the
      `agentexec-ui` example application uses (`/api/agents/activity`,
      `/api/agents/activity/{agent_id}`, `/api/agents/active/count`; see docs/api.md).
    - `feed_secret`: the key feed tokens are signed with (default `AGENTEXEC_FEED_SECRET`;
      at least 32 bytes, else `ConfigurationError`). A feed opened with
      `?feed_token=<agentexec.api.feed_token(...)>` is checked by the token alone, not by
      `token` or `authorize` (a browser's EventSource cannot send headers), and shows only
      the tenant or the task the token names (docs/tenants.md). REST routes never take one.
      Unset: a feed token is no credential (the API's own guards decide).
    """
    runtime = runtime or current()
    settings = runtime.settings
    redis_url = redis_url or settings.redis_url
    if max_feeds is None:
        max_feeds = settings.api_max_feeds
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
    feed_key = None
    if feed_secret is not None or settings.feed_secret is not None:
        feed_key = signing_key(feed_secret if feed_secret is not None else settings)
    if engine is None:
        if settings.database_url is None:
            raise ConfigurationError(
                "agentexec.api.router() needs the read model: pass engine=create_engine(...) "
                "or set AGENTEXEC_DATABASE_URL (e.g. sqlite:///agents.db)."
            )
        engine = create_sync_engine(settings.database_url)
    else:
        engine = sync_engine(engine)
    history = History(runtime.partitions, engine, redis_url=redis_url, runtime=runtime)
    feeds = OpenFeeds(max_feeds)
    live = LiveState(
        hub=Hub(history, redis_url=redis_url, buffer=buffer, runtime=runtime),
        history=history,
        feeds=feeds,
        engine=engine,
        redis_url=redis_url,
        bearer=bearer,
        keepalive=keepalive,
        send_timeout=send_timeout,
        send_buffer=send_buffer,
        registry=registry_of(feeds) if metrics else None,
        feed_key=feed_key,
    )
    api = LiveRouter(live)
    # The state first: the guard of an application may run after it, never without it.
    state = Depends(live)
    guarded = [state, *(Depends(check) for check in (bearer, authorize) if check is not None)]

    def add(path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        api.add_api_route(path, endpoint, methods=["GET"], dependencies=guarded, **options)

    add(
        "/api/activities",
        activities.list_activities,
        response_model=ActivityListSchema,
        responses={**_BAD_REQUEST, **_PROBLEMS},
        tags=["activities"],
    )
    add(
        "/api/activities/active/count",
        activities.active_count,
        response_model=ActiveCountSchema,
        responses=_PROBLEMS,
        tags=["activities"],
    )
    add(
        "/api/activities/stats",
        activities.get_stats,
        response_model=ActivityStatsSchema,
        responses={**_BAD_REQUEST, **_PROBLEMS},
        tags=["activities"],
    )
    add(
        "/api/activities/{agent_id}",
        activities.get_activity,
        response_model=ActivityDetailSchema,
        responses={**_NOT_FOUND, **_PROBLEMS},
        tags=["activities"],
    )
    add(
        "/api/activities/{agent_id}/status",
        activities.get_status,
        response_model=ActivityStatusSchema,
        responses={**_NOT_FOUND, **_PROBLEMS},
        tags=["activities"],
    )
    add(
        "/api/activities/{agent_id}/children",
        activities.get_children,
        response_model=ActivityChildrenSchema,
        responses={**_NOT_FOUND, **_PROBLEMS},
        tags=["activities"],
    )
    if feed_key is not None:
        # Feeds opened with a feed token: before the guarded routes on the same paths.
        feed_routes: tuple[tuple[str, Callable[..., Any]], ...] = (
            ("/api/events", events.events_feed_by_token),
            ("/api/activities/{agent_id}/events", events.agent_feed_by_token),
        )
        for path, feed in feed_routes:
            api.add_api_route(
                path,
                feed,
                methods=["GET"],
                dependencies=[state],
                response_class=EventSourceResponse,
                include_in_schema=False,
                route_class_override=FeedTokenRoute,
            )
    add(
        "/api/events",
        events.events_feed,
        response_class=EventSourceResponse,
        responses={**_STREAM, **_FEED_PROBLEMS},
        tags=["feeds"],
    )
    add(
        "/api/activities/{agent_id}/events",
        events.agent_feed,
        response_class=EventSourceResponse,
        responses={
            **_STREAM,
            204: {"description": "The task ended before the event id given: nothing to send"},
            **_NOT_FOUND,
            **_FEED_PROBLEMS,
        },
        tags=["feeds"],
    )
    if ui_routes:
        for path, endpoint, model, problems in (
            ("/api/agents/activity", activities.list_activities, ActivityListSchema, _BAD_REQUEST),
            ("/api/agents/active/count", activities.active_count, ActiveCountSchema, {}),
            (
                "/api/agents/activity/{agent_id}",
                activities.get_activity,
                ActivityDetailSchema,
                _NOT_FOUND,
            ),
        ):
            add(
                path,
                endpoint,
                response_model=model,
                responses={**problems, **_PROBLEMS},
                tags=["agentexec-ui"],
                operation_id=f"ui_{endpoint.__name__}",
            )
    if metrics:
        api.add_api_route("/metrics", scrape, dependencies=guarded, include_in_schema=False)
    if dashboard_page:
        api.add_api_route("/", dashboard.page, dependencies=[state], include_in_schema=False)
    return api
