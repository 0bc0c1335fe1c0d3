"""`router(metrics=True)`: `/metrics` of a real uvicorn counts the open SSE feeds, and is
guarded as the API routes are."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import Engine

from agentexec.api import router
from tests.support.metrics import Samples, scrape_async
from tests.support.sse import open_stream
from tests.support.waiting import async_wait_for

TOKEN = "metrics-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_metrics_count_the_open_feeds(
    db: Engine, serve: Callable[..., Any], http: httpx.AsyncClient
) -> None:
    server = await serve(db, metrics=True, token=TOKEN, max_feeds=7)
    url = f"{server.url}/metrics"
    assert (await http.get(url)).status_code == 401
    samples = await scrape_async(http, url, AUTH)
    assert (samples["agentexec_sse_feeds_open"], samples["agentexec_sse_feeds_limit"]) == (0, 7)

    async def feeds(count: int) -> Samples | None:
        samples = await scrape_async(http, url, AUTH)
        return samples if samples["agentexec_sse_feeds_open"] == count else None

    async with open_stream(http, f"{server.url}/api/events", AUTH):
        async with open_stream(http, f"{server.url}/api/events", AUTH):
            await async_wait_for(lambda: feeds(2), what="two open feeds")
        await async_wait_for(lambda: feeds(1), what="one feed closed")
    await async_wait_for(lambda: feeds(0), what="no feed open")


async def test_no_metrics_route_unless_asked(db: Engine) -> None:
    paths = {getattr(r, "path", None) for r in router(engine=db).routes}
    assert "/metrics" not in paths
    assert "/metrics" in {getattr(r, "path", None) for r in router(engine=db, metrics=True).routes}
