"""Feeds over a log the projector trimmed: positions older than the hot window come from the
SQL archive, with no gap and no duplicate."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import Engine

import agentexec as ax
from agentexec.connection import get_sync_redis
from agentexec.projector import Projector
from tests.integration.api.test_feeds import append_history, ids_of, log_key
from tests.support.sse import open_stream


async def test_positions_the_projector_trimmed_come_from_the_archive(
    engine: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    ax.CONF.log_hot_window = 0
    server = await serve(engine)
    agent, ids = append_history(10)
    projector = Projector(engine, lease_seconds=5)
    assert await projector.catch_up() == 10
    # Trimmed up to its checkpoint, the last event.
    assert [i.decode() for i, _ in get_sync_redis().xrange(log_key())] == ids[-1:]
    ids.append(ax.activity.update(agent, "only in Redis"))

    async with open_stream(http, f"{server.url}/api/events", {"Last-Event-ID": ids[2]}) as feed:
        assert ids_of(await feed.take(8)) == ids[3:]
        ids.append(ax.activity.update(agent, "live"))
        assert ids_of(await feed.take(1)) == ids[-1:]
    async with open_stream(http, f"{server.url}/api/events?last_event_id=0") as feed:
        assert ids_of(await feed.take(len(ids))) == ids
    async with open_stream(http, f"{server.url}/api/activities/{agent}/events") as feed:
        assert ids_of(await feed.take(len(ids))) == ids
