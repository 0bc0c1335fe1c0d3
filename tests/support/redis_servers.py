"""`redis-server` processes of a test's own (a data server, a Sentinel, a cluster node), on
free ports, each with its folder, configuration file and log; `stop()` ends one whatever
state it is in. Used by the Sentinel and Redis Cluster fixtures."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
from pathlib import Path

import redis

from .waiting import scaled, wait_for


def free_port() -> int:
    """A port that is free now, below 55536 (so that `port + 10000` is one too: Redis Cluster's
    bus, should a test need it)."""
    while True:
        port = random.randint(20000, 55535)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


class Node:
    """One `redis-server` process (a data server or, with `sentinel`, a Sentinel), on `port` or
    a free one."""

    def __init__(
        self,
        directory: Path,
        name: str,
        config: list[str],
        *,
        sentinel: bool,
        port: int | None = None,
    ) -> None:
        self.dir = directory / name
        self.dir.mkdir()
        self.name = name
        self.port = free_port() if port is None else port
        # Sentinels rewrite their configuration file: it must be theirs to write.
        conf = self.dir / "redis.conf"
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.dir}",
            f"logfile {self.dir / 'redis.log'}",
            *([] if sentinel else ['save ""', "appendonly no"]),
            *config,
        ]
        conf.write_text("\n".join(lines) + "\n")
        args = ["redis-server", str(conf), *(["--sentinel"] if sentinel else [])]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=1)

    def wait_started(self) -> None:
        def answers() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log()[-2000:]}")
            try:
                return bool(self.client.ping())
            except redis.ConnectionError:
                return False

        wait_for(answers, timeout=10, what=f"{self.name} on port {self.port} to answer")

    def log(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(scaled(10))
            except subprocess.TimeoutExpired:
                self.kill()
