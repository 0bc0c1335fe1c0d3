"""A feed resuming beyond the log's end (Redis lost its latest events, or came back empty
and writes lower ids) gets a reset event, then the events that follow: never silence."""

from __future__ import annotations

from typing import Any

import httpx
import redis
from sqlalchemy import Engine

import agentexec as ax
from agentexec import events
from agentexec.api import Position
from agentexec.connection import close_redis
from agentexec.embedded import EmbeddedRedis
from agentexec.streams import Keys
from tests.support.sse import open_stream


def log_key() -> str:
    return Keys(ax.CONF.key_prefix).events


async def test_resuming_beyond_the_end_of_the_log_gets_a_reset_event(
    db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await serve(db)
    agent = ax.activity.create("research")
    last = ax.activity.update(agent, "one")
    beyond = Position(Position.parse(last).ms + 10**9, 0)  # e.g. from a Redis since lost
    url = f"{server.url}/api/events"
    async with open_stream(http, url, {"Last-Event-ID": str(beyond)}) as feed:
        reset, queued, one = await feed.take(3)
        assert reset.event == "reset"
        assert reset.json["last_event_id"] == str(beyond)
        assert reset.id == reset.json["resume_from"]
        assert Position.parse(reset.id or "") < Position.parse(queued.id or "")
        assert "ends before" in reset.json["message"]
        # What Redis holds comes again (it may be new: Redis came back empty), then live.
        assert (queued.event, one.id) == ("task.queued", last)
        after = ax.activity.update(agent, "two")
        assert (await feed.next()).id == after
    # An agent's feed too.
    agent_url = f"{server.url}/api/activities/{agent}/events"
    async with open_stream(http, agent_url, {"Last-Event-ID": str(beyond)}) as feed:
        assert (await feed.next()).event == "reset"
        ax.activity.update(agent, "three")
        messages = await feed.until(lambda m: m.json["message"] == "three")
        assert [m.json["message"] for m in messages][-2:] == ["two", "three"]


async def test_a_live_feed_is_reset_when_redis_comes_back_with_lower_ids(
    own_redis: EmbeddedRedis, db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await serve(db)
    agent = ax.activity.create("research")
    async with open_stream(http, f"{server.url}/api/events?last_event_id=0") as feed:
        assert (await feed.next()).event == "task.queued"
        own_redis.kill()
        own_redis.start()  # empty: it saves nothing
        # The new log's ids are below every id the feed has sent.
        client = redis.Redis.from_url(own_redis.url)
        event = events.TaskProgress(agent_id=agent, task_name="research", message="low")
        low = client.xadd(log_key(), events.entry(event), id="1-1").decode()
        client.close()
        reset = await feed.next(timeout=30)
        assert reset.event == "reset"
        assert (await feed.next(timeout=30)).id == low
    await close_redis()
