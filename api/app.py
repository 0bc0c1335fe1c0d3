"""`create_app`: a ready FastAPI application serving the agentexec API and dashboard."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from sqlalchemy import Engine
from starlette.types import ASGIApp

from agentexec import tracing
from agentexec.connection import close_redis
from agentexec.databases import create_sync_engine
from agentexec.runtime import current

from .headers import with_security_headers
from .messages import feed_schemas
from .responses import abortable
from .routes import router

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["create_app"]


def create_app(
    engine: Engine | AsyncEngine | None = None,
    *,
    database_url: str | None = None,
    authorize: Callable[..., Any] | None = None,
    token: str | None = None,
    redis_url: str | None = None,
    **options: Any,
) -> FastAPI:
    """A FastAPI app with `router(...)` mounted at its root (the dashboard at `/`).

    `engine` or `database_url` (default `AGENTEXEC_DATABASE_URL`) is the read model, sync or
    async (read through a sync engine on the same database, see `router`);
    `authorize` and `token` guard the API routes as in `router()`; `options` are
    `router()`'s (`buffer`, `send_timeout`, `keepalive`, `dashboard_page`, ...).
    Every response carries `X-Content-Type-Options`, `X-Frame-Options` and
    `Referrer-Policy` (the dashboard also its Content-Security-Policy). Calls
    `AGENTEXEC_TRACING_SETUP`, if set (docs/tracing.md). The Redis clients are
    closed when the app shuts down; `app.state.agentexec_hub` is the
    app's SSE hub, `app.state.agentexec_feeds` counts its open feeds.
    """
    tracing.setup(current().settings.tracing_setup, "api")
    if engine is None and database_url is not None:
        engine = create_sync_engine(database_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await close_redis()

    app = _App(
        title="agentexec",
        summary="Activities of agentexec tasks: REST reads and live server-sent events.",
        lifespan=lifespan,
    )
    api = router(engine=engine, authorize=authorize, token=token, redis_url=redis_url, **options)
    app.include_router(api)
    app.state.agentexec_hub = api.hub
    app.state.agentexec_feeds = api.feeds
    return app


class _App(FastAPI):
    def openapi(self) -> dict[str, Any]:
        """FastAPI's document, plus the schemas of the feeds' `data:` JSON (`FeedEvent` and
        one per event type), which each feed's `text/event-stream` answer names as the
        schema of its items (OpenAPI 3.2's `itemSchema`)."""
        if self.openapi_schema is None:
            document = super().openapi()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in feed_schemas().items():
                if schemas.setdefault(name, schema) != schema:
                    raise RuntimeError(f"two OpenAPI schemas are named {name!r}")
            for path in document.get("paths", {}).values():
                stream = (
                    path.get("get", {})
                    .get("responses", {})
                    .get("200", {})
                    .get("content", {})
                    .get("text/event-stream")
                )
                if stream is not None:
                    stream["itemSchema"] = {"$ref": "#/components/schemas/FeedEvent"}
            self.openapi_schema = document
        return self.openapi_schema

    def build_middleware_stack(self) -> ASGIApp:
        # Outermost, to see the server's own `send`: a feed can then abort the connection
        # of a client that stopped reading (api/responses.py).
        return abortable(with_security_headers(super().build_middleware_stack()))
