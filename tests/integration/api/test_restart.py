"""`agentexec api` as its own process: a client resumes across a restart of the server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

import agentexec as ax
from tests.integration.readmodel.conftest import database_url
from tests.support.sse import open_stream
from tests.support.waiting import scaled, wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ApiProcess:
    def __init__(self, port: int, env: dict[str, str]) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agentexec.cli", "api", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
        )

        def up() -> bool:
            assert self.process.poll() is None, "agentexec api exited"
            try:
                return httpx.get(f"{self.url}/api/activities", timeout=scaled(1)).status_code == 200
            except httpx.TransportError:
                return False

        try:
            wait_for(up, timeout=30, what="agentexec api to serve")
        except BaseException:
            self.stop()  # the test never gets hold of a server that did not come up
            raise

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=scaled(15))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def api_env(redis_conf: str, db: Engine) -> Iterator[dict[str, str]]:
    yield {
        **os.environ,
        "AGENTEXEC_REDIS_URL": redis_conf,
        "AGENTEXEC_DATABASE_URL": database_url(db),
        "AGENTEXEC_KEY_PREFIX": ax.CONF.key_prefix,
        "AGENTEXEC_PARTITIONS": str(ax.CONF.partitions),
        "PYTHONPATH": str(Path(__file__).parents[3]),
    }


async def test_a_client_resumes_across_a_server_restart(api_env: dict[str, str]) -> None:
    port = free_port()
    server = ApiProcess(port, api_env)
    agent = ax.activity.create("research", "queued")
    ids: list[str] = []
    try:
        async with httpx.AsyncClient(timeout=scaled(10)) as http:
            url = f"{server.url}/api/activities/{agent}/events"
            async with open_stream(http, url) as feed:
                ids.append((await feed.next()).id or "")
                for i in range(3):
                    ids.append(ax.activity.update(agent, f"before {i}", percentage=i * 10))
                assert [m.id for m in await feed.take(3)] == ids[1:]
                server.stop()  # the stream ends with the server
                assert await feed.rest() == []
            missed = [ax.activity.update(agent, f"while down {i}") for i in range(3)]
            server = ApiProcess(port, api_env)
            async with open_stream(http, url, {"Last-Event-ID": ids[-1]}) as feed:
                assert [m.id for m in await feed.take(3)] == missed
                done = ax.activity.complete(agent)
                assert [m.id for m in await feed.rest()] == [done]
    finally:
        server.stop()
