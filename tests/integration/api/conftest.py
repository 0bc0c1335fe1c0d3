"""Fixtures of the API suite: the read model (SQLite, or both backends where a test takes
`engine`), the API served by a real uvicorn in the test's event loop, and an HTTP client."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine

import agentexec as ax
from agentexec.api import create_app
from agentexec.connection import close_redis
from agentexec.embedded import EmbeddedRedis
from agentexec.projector import Projector
from tests.integration.readmodel.conftest import engine, postgres, sqlite_engine
from tests.support.waiting import async_wait_for, scaled

__all__ = ["LiveServer", "engine", "postgres"]


class LiveServer:
    """uvicorn serving `app` in the running event loop, on `port` (0: a free one).

    `send_buffer`: the kernel send buffer of the connections it accepts (bytes; None: the
    system's), small for tests of clients that do not read."""

    def __init__(self, app: FastAPI, port: int = 0, send_buffer: int | None = None) -> None:
        self.app = app
        self.port = port
        self.send_buffer = send_buffer
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> LiveServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.send_buffer is not None:  # accepted connections inherit it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", timeout_graceful_shutdown=1, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]))
        server = self.server

        async def started() -> bool:
            if self.task is not None and self.task.done():
                self.task.result()
            return server.started

        await async_wait_for(started, what="uvicorn to start")
        return self

    def clients(self) -> set[int]:
        """The client ports of the connections the server holds open."""
        assert self.server is not None
        return {
            int(client[1])
            for protocol in self.server.server_state.connections
            if (client := getattr(protocol, "client", None))
        }

    async def stop(self) -> None:
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            await self.task
            self.server = self.task = None


@pytest.fixture
def db(tmp_path: Path) -> Engine:
    """An empty read model in a SQLite file."""
    return sqlite_engine(tmp_path / "agents.db")


@pytest.fixture
async def serve(redis_conf: str) -> AsyncIterator[Callable[..., Any]]:
    """`await serve(engine, **create_app options)` -> a started LiveServer, stopped after."""
    servers: list[LiveServer] = []

    async def start(
        engine: Engine, middleware: Any = None, port: int = 0, **options: Any
    ) -> LiveServer:
        app = create_app(engine, **options)
        if middleware is not None:
            app.add_middleware(middleware, minimum_size=1)
        server = await LiveServer(app, port).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()
    await close_redis()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=scaled(10)) as client:
        yield client


async def project(engine: Engine) -> int:
    """Apply what was appended to the log so far."""
    return await Projector(engine, lease_seconds=5).catch_up()


@pytest.fixture
def own_redis(redis_conf: str) -> Iterator[EmbeddedRedis]:
    """A Redis server of the test's own, to stop, restart (empty: it saves nothing) or kill."""
    server = EmbeddedRedis().start()
    ax.CONF.redis_url = server.url
    try:
        yield server
    finally:
        server.close()
