"""A feed whose history read meets a Redis outage waits for Redis and goes on: it does not
end (the hub's live reads already wait the same way)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

import agentexec as ax
from agentexec.embedded import EmbeddedRedis
from tests.support.sse import open_stream
from tests.support.waiting import async_wait_for, scaled


async def test_a_feed_whose_history_read_meets_an_outage_waits_for_redis(
    own_redis: EmbeddedRedis,
    db: Engine,
    serve: Any,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await serve(db)
    own_redis.kill()
    # With a position given, opening the feed asks Redis nothing: its first history read does.
    async with open_stream(http, f"{server.url}/api/events?last_event_id=0") as feed:

        async def history_waits() -> bool:
            return "feed of all events: history: Redis unreachable" in caplog.text

        await async_wait_for(history_waits, what="the feed's history read to meet the outage")
        own_redis.start()
        agent = ax.activity.create("research")
        queued = await feed.next(timeout=scaled(30))
        assert (queued.event, queued.json["agent_id"]) == ("task.queued", str(agent))
        assert "feed of all events: failed" not in caplog.text
