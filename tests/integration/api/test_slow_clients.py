"""Clients that never read, and too many feeds, against a real uvicorn on a free port: the
stuck ones are cut off and their connections released, the REST routes keep answering, and
past the per-process limit a feed is refused with a 503 that names the limit.

Timing figures (how fast, how much memory) are in the benchmark, tests/bench/slow_clients.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy import Engine

import agentexec as ax
from agentexec.api import create_app
from agentexec.api.hub import Hub
from agentexec.connection import close_redis
from tests.integration.api.conftest import LiveServer
from tests.support.sse import open_stream
from tests.support.waiting import async_wait_for

STUCK = 200


def stuck_client(port: int, path: str = "/api/events") -> socket.socket:
    """A client that sends its request and never reads a byte of the answer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    sock.setblocking(False)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed or reset `sock`: reading what it was sent then ends (the
    kernel still delivers what the server's side held when it closed)."""
    sock.settimeout(10)
    try:
        while sock.recv(1 << 16):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


@pytest.fixture
async def live(redis_conf: str, db: Engine) -> AsyncIterator[LiveServer]:
    # A small kernel send buffer, so that a client that does not read is stuck after a few
    # kilobytes rather than the megabytes the kernel would otherwise buffer for it.
    app = create_app(db, send_timeout=0.5, buffer=50)
    server = await LiveServer(app, send_buffer=16384).start()
    try:
        yield server
    finally:
        await server.stop()
        await close_redis()


@contextlib.contextmanager
def stuck_clients(port: int, count: int) -> Iterator[list[socket.socket]]:
    clients = [stuck_client(port) for _ in range(count)]
    try:
        yield clients
    finally:
        for sock in clients:
            sock.close()


def hub_of(server: LiveServer) -> Hub:
    hub: Hub = server.app.state.agentexec_hub
    return hub


async def test_clients_that_never_read_are_cut_off_and_released(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    hub = hub_of(live)
    with stuck_clients(live.port, STUCK) as clients:
        ports = {sock.getsockname()[1] for sock in clients}

        async def all_subscribed() -> bool:
            return hub.subscribers == STUCK

        await async_wait_for(all_subscribed, timeout=60, what=f"{STUCK} feeds subscribed")
        agent = ax.activity.create("research")
        big = "x" * 4000
        for i in range(150):  # 600 kB for each client: far beyond what its buffers hold
            await asyncio.to_thread(ax.activity.update, agent, f"{i} {big}")

        # The REST routes answer while the stuck clients are there.
        response = await http.get(f"{live.url}/api/activities/active/count", timeout=60)
        assert response.status_code == 200

        async def released() -> bool:
            return not live.clients() & ports and hub.subscribers == 0

        await async_wait_for(released, timeout=60, what="every stuck connection released")
        still_open = await asyncio.to_thread(
            lambda: [s.getsockname()[1] for s in clients if not closed_by_server(s)]
        )
        assert still_open == []

    # A client that reads is served as before.
    async with open_stream(http, f"{live.url}/api/events") as feed:
        ax.activity.update(agent, "after")
        assert (await feed.next()).json["message"] == "after"


async def test_feeds_beyond_the_limit_get_a_503_naming_it(
    redis_conf: str, db: Engine, http: httpx.AsyncClient
) -> None:
    app = create_app(db, max_feeds=3)
    server = await LiveServer(app).start()
    agent = ax.activity.create("research")
    try:
        async with contextlib.AsyncExitStack() as stack:
            for path in ("/api/events", "/api/events", f"/api/activities/{agent}/events"):
                await stack.enter_async_context(open_stream(http, f"{server.url}{path}"))
            for path in ("/api/events", f"/api/activities/{agent}/events"):
                refused = await http.get(f"{server.url}{path}")
                assert refused.status_code == 503
                body = refused.json()
                assert body["limit"] == 3 and body["setting"] == "AGENTEXEC_API_MAX_FEEDS"
                assert "3" in body["detail"] and "AGENTEXEC_API_MAX_FEEDS" in body["detail"]
                assert refused.headers["retry-after"]
            # REST is not a feed: it is served at the limit.
            assert (await http.get(f"{server.url}/api/activities")).status_code == 200
        # Closed feeds give their places back.
        feeds = server.app.state.agentexec_feeds

        async def none_open() -> bool:
            return feeds.count == 0

        await async_wait_for(none_open, what="the feeds' places given back")
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(3):
                await stack.enter_async_context(open_stream(http, f"{server.url}/api/events"))
    finally:
        await server.stop()
        await close_redis()
