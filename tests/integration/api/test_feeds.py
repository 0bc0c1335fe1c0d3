"""SSE feeds against a real uvicorn: message shape, filters, resume exactly once, the agent
feed's end, the archive fallback, the reset event, slow clients, keepalives, cleanup."""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any

import httpx
from fastapi.middleware.gzip import GZipMiddleware
from sqlalchemy import Engine, delete, tuple_

import agentexec as ax
from agentexec.activity.models import ArchivedEvent
from agentexec.api import Position
from agentexec.api.hub import Hub
from agentexec.connection import get_sync_redis
from agentexec.streams import Keys
from tests.integration.api.conftest import LiveServer, project
from tests.support.logs import keys_of
from tests.support.sse import Message, open_stream
from tests.support.waiting import async_wait_for


def log_key() -> str:
    return Keys(ax.CONF.key_prefix).events


def append_history(count: int, task: str = "research") -> tuple[uuid.UUID, list[str]]:
    """An activity with `count` events: created, then progress; returns its stream ids."""
    agent = ax.activity.create(task, "queued")
    ids = [get_sync_redis().xrevrange(keys_of(agent).events, count=1)[0][0].decode()]
    for i in range(1, count):
        ids.append(ax.activity.update(agent, f"step {i}", percentage=min(i, 100)))
    return agent, ids


def ids_of(messages: list[Message]) -> list[str | None]:
    return [m.id for m in messages]


def hub_of(server: LiveServer) -> Hub:
    hub: Hub = server.app.state.agentexec_hub
    return hub


async def test_live_messages_carry_id_type_and_the_event(
    db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await serve(db)
    async with open_stream(http, f"{server.url}/api/events") as feed:
        agent = ax.activity.create("research", "waiting")
        progress_id = ax.activity.update(agent, "reading", percentage=30)
        done_id = ax.activity.complete(agent)
        queued, progress, done = await feed.take(3)
    assert (queued.event, progress.event, done.event) == (
        "task.queued",
        "task.progress",
        "task.completed",
    )
    assert (progress.id, done.id) == (progress_id, done_id)
    assert Position.parse(queued.id or "") < Position.parse(progress_id)
    data = progress.json
    assert data["type"] == "task.progress"
    assert data["id"] == progress_id
    assert data["agent_id"] == str(agent)
    assert data["task_name"] == "research"  # filled in: ax.activity.update records none
    assert (data["status"], data["message"], data["percentage"]) == ("running", "reading", 30)
    assert data["ts"].endswith("Z")
    assert (done.json["status"], done.json["percentage"]) == ("complete", 100)
    assert queued.json["status"] == "queued"


async def test_filters_by_task_name_and_status(
    db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await serve(db)
    url = f"{server.url}/api/events?task_name=summarise&status=running&status=complete"
    async with open_stream(http, url) as feed:
        other = ax.activity.create("research")
        ax.activity.update(other, "other task", percentage=10)
        mine = ax.activity.create("summarise")
        ax.activity.update(mine, "mine", percentage=20)
        ax.activity.complete(other)
        ax.activity.complete(mine)
        messages = await feed.take(2)
    assert [(m.event, m.json["agent_id"]) for m in messages] == [
        ("task.progress", str(mine)),
        ("task.completed", str(mine)),
    ]


async def test_resume_sends_every_later_event_once_in_order_then_live(
    db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await serve(db)
    agent, ids = append_history(6)
    async with open_stream(http, f"{server.url}/api/events?last_event_id=0") as feed:
        assert ids_of(await feed.take(6)) == ids  # `0`: from the beginning

    # The header, the query parameter, and both (the header wins, as browsers send it).
    for kwargs in (
        {"headers": {"Last-Event-ID": ids[2]}},
        {"params": f"last_event_id={ids[2]}"},
        {"params": f"last_event_id={ids[0]}", "headers": {"Last-Event-ID": ids[2]}},
    ):
        url = f"{server.url}/api/events?{kwargs.get('params', '')}"
        async with open_stream(http, url, kwargs.get("headers")) as feed:
            assert ids_of(await feed.take(len(ids) - 3)) == ids[3:]
            ids.append(ax.activity.update(agent, "live", percentage=90))
            assert ids_of(await feed.take(1)) == ids[-1:]


async def test_resume_racing_appends_loses_nothing(
    db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    """Events appended while a feed catches up are sent once: from history or live."""
    server = await serve(db)
    agent, ids = append_history(300)
    stop = asyncio.Event()

    async def writer() -> None:
        while not stop.is_set():
            ids.append(await asyncio.to_thread(ax.activity.update, agent, "racing"))

    task = asyncio.create_task(writer())
    try:
        async with open_stream(http, f"{server.url}/api/events?last_event_id=0") as feed:
            received = await feed.take(400)
            stop.set()
            await task
            received += await feed.take(len(ids) - 400)
    finally:
        stop.set()
        await task
    assert ids_of(received) == ids


async def test_agent_feed_is_its_history_then_live_then_ends(
    db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await serve(db)
    agent, ids = append_history(3)
    append_history(2, task="noise")
    async with open_stream(http, f"{server.url}/api/activities/{agent}/events") as feed:
        assert ids_of(await feed.take(3)) == ids
        append_history(2, task="noise")
        ids.append(ax.activity.update(agent, "live"))
        ids.append(ax.activity.error(agent, "it broke"))
        rest = await feed.rest()
    assert ids_of(rest) == ids[3:]
    assert rest[-1].json["status"] == "error"
    # Resuming in the middle: the rest, and the end again.
    url = f"{server.url}/api/activities/{agent}/events"
    async with open_stream(http, url, {"Last-Event-ID": ids[1]}) as feed:
        assert ids_of(await feed.rest()) == ids[2:]
    assert hub_of(server).subscribers == 0


async def test_older_than_redis_comes_from_the_archive(
    engine: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await serve(engine)
    agent, ids = append_history(10)
    await project(engine)
    client = get_sync_redis()
    assert client.xtrim(log_key(), minid=ids[7], approximate=False) >= 7
    ids.append(ax.activity.update(agent, "only in Redis"))  # not archived yet
    assert next(i.decode() for i, _ in client.xrange(log_key())) == ids[7]

    async with open_stream(http, f"{server.url}/api/events", {"Last-Event-ID": ids[2]}) as feed:
        assert ids_of(await feed.take(8)) == ids[3:]
        ids.append(ax.activity.update(agent, "live"))
        assert ids_of(await feed.take(1)) == ids[-1:]
    async with open_stream(http, f"{server.url}/api/activities/{agent}/events") as feed:
        assert ids_of(await feed.take(len(ids))) == ids
    async with open_stream(http, f"{server.url}/api/events?last_event_id=0") as feed:
        assert ids_of(await feed.take(len(ids))) == ids


def prune_archive(engine: Engine, through: str) -> None:
    ms, seq = Position.parse(through)
    table = ArchivedEvent.__table__.c
    with engine.begin() as conn:
        conn.execute(
            delete(ArchivedEvent).where(tuple_(table.stream_ms, table.stream_seq) <= (ms, seq))
        )


async def test_older_than_the_archive_too_gets_a_reset_event(
    engine: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await serve(engine)
    _agent, ids = append_history(10)
    await project(engine)
    prune_archive(engine, ids[4])
    get_sync_redis().xtrim(log_key(), minid=ids[7], approximate=False)

    url = f"{server.url}/api/events"
    async with open_stream(http, url, {"Last-Event-ID": ids[1]}) as feed:
        reset, *rest = await feed.take(6)
    assert reset.event == "reset"
    assert reset.id == str(Position.parse(ids[5]).before())
    assert reset.json["last_event_id"] == ids[1]
    assert reset.json["resume_from"] == reset.id
    assert ids_of(rest) == ids[5:]
    # Reconnecting after the reset: no second reset.
    async with open_stream(http, url, {"Last-Event-ID": reset.id or ""}) as feed:
        assert ids_of(await feed.take(5)) == ids[5:]
    # From the beginning: what is kept, without a reset.
    async with open_stream(http, f"{url}?last_event_id=0") as feed:
        assert ids_of(await feed.take(5)) == ids[5:]


async def test_events_lost_between_archive_and_redis_get_a_reset_event(
    db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await serve(db)
    agent, ids = append_history(5)
    await project(db)
    ids += [ax.activity.update(agent, f"unarchived {i}") for i in range(3)]
    get_sync_redis().xdel(log_key(), ids[5], ids[6])  # never archived
    async with open_stream(http, f"{server.url}/api/events", {"Last-Event-ID": ids[2]}) as feed:
        messages = await feed.take(4)
    assert ids_of(messages[:2]) == ids[3:5]
    assert messages[2].event == "reset"
    assert messages[2].json["last_event_id"] == ids[4]
    assert Position.parse(ids[6]) <= Position.parse(messages[2].id or "") < Position.parse(ids[7])
    assert messages[3].id == ids[7]


async def test_a_slow_client_is_cut_off_without_slowing_the_others(
    db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await serve(db, buffer=8, send_timeout=0.5)
    hub = hub_of(server)
    agent = ax.activity.create("research")
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", server.port))
    slow.sendall(b"GET /api/events HTTP/1.1\r\nHost: test\r\n\r\n")
    try:
        async with open_stream(http, f"{server.url}/api/events") as fast:
            await async_wait_for(lambda: _ready(hub, 2), what="both subscribed")
            big = "x" * 20_000
            for i in range(200):
                await asyncio.to_thread(ax.activity.update, agent, f"{i} {big}")
                # The fast client keeps up, round by round; a round stays below the buffer
                # (8), which the hub may fill at once when it reads a whole round in one go.
                if i % 4 == 3:
                    messages = await fast.take(4, timeout=5)
                    assert messages[-1].json["message"].startswith(f"{i} ")
            await async_wait_for(lambda: _ready(hub, 1), what="the slow client cut off")
    finally:
        slow.close()
    await async_wait_for(lambda: _ready(hub, 0), what="every subscription freed")


async def _ready(hub: Hub, subscribers: int) -> bool:
    return hub.subscribers == subscribers


async def test_disconnect_frees_the_subscription_and_stops_the_reader(
    db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await serve(db)
    hub = hub_of(server)
    async with open_stream(http, f"{server.url}/api/events") as feed:
        ax.activity.create("research")
        await feed.next()

        # The event may reach the feed from the history it reads before it subscribes: the
        # subscription counts at once, the reader's position once it read the tail.
        async def reading() -> bool:
            return hub.subscribers == 1 and hub.position is not None

        await async_wait_for(reading, what="the reader running for the feed")
    await async_wait_for(lambda: _ready(hub, 0), what="the subscription freed")

    async def stopped() -> bool:
        return hub.position is None

    await async_wait_for(stopped, what="the reader stopped")


async def test_keepalive_comments_and_no_compression(
    db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await serve(db, keepalive=0.2, middleware=GZipMiddleware)
    headers = {"Accept-Encoding": "gzip"}
    async with open_stream(http, f"{server.url}/api/events", headers) as feed:
        assert "content-encoding" not in feed.response.headers
        waiting = asyncio.create_task(feed.next(timeout=10))

        async def commented() -> bool:
            return len(feed.comments) >= 2

        await async_wait_for(commented, what="keepalive comments")
        ax.activity.create("research")
        assert (await waiting).event == "task.queued"
    assert (await http.get(f"{server.url}/api/activities", headers=headers)).status_code == 200
