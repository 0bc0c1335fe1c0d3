"""The processes of one fault test: its own `redis-server` (AOF on), worker pools started with
`agentexec worker`, projector processes, and a SQLite read model; and the figures it reports."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from sqlalchemy import Engine, text

import agentexec as ax
from agentexec import events
from agentexec.activity.models import Base
from agentexec.connection import close_redis, get_redis
from agentexec.embedded import EmbeddedRedis
from agentexec.streams import Keys
from tests.faults.app import Job
from tests.integration.readmodel.conftest import PostgresSchema, sqlite_engine
from tests.integration.readmodel.test_faults import AGENTEXEC, ProjectorProcess
from tests.support.waiting import async_wait_for, scaled

ROOT = Path(__file__).resolve().parents[2]

SETTINGS = {
    "AGENTEXEC_LEASE_SECONDS": "3",
    "AGENTEXEC_BLOCK_MS": "1000",
    "AGENTEXEC_GRACEFUL_SHUTDOWN_TIMEOUT": "5",
    "AGENTEXEC_RETRY_BACKOFF": "0.1",
    "AGENTEXEC_RETRY_BACKOFF_MAX": "0.4",
    "AGENTEXEC_MAX_DELIVERIES": "3",
    "AGENTEXEC_ENQUEUE_TIMEOUT": "60",
}
"""Every process of a fault test runs with these (a short lease: takeovers within seconds)."""


class PoolProcess:
    """`agentexec worker tests.faults.app:pool`: a supervisor and its worker processes."""

    def __init__(self, log: Path, workers: int, concurrency: int, env: dict[str, str]) -> None:
        self.log = log
        self._out = log.open("ab")
        self.process = subprocess.Popen(
            [
                AGENTEXEC,
                "worker",
                "tests.faults.app:pool",
                *("--workers", str(workers), "--concurrency", str(concurrency)),
            ],
            cwd=ROOT,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        return self.process.wait(scaled(timeout))

    def close(self) -> None:
        if self.process.poll() is None:
            # The supervisor's group: its workers are its children.
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(scaled(30))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()


@dataclass
class Figures:
    """What one fault test reports (see docs/reliability.md)."""

    fault: str
    tasks: int = 0
    faults_injected: int = 0
    recovery_seconds: float | None = None
    """From the first fault to the moment the test saw the system recovered (the affected
    tasks ended, or the component came back)."""
    tasks_lost: int = 0
    completed_twice: int = 0
    """Tasks whose handler ran to completion more than once without the fault allowing it."""
    reruns: int = 0
    """Tasks whose handler ran to completion again because of the fault (at-least-once)."""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


class Cluster:
    def __init__(self, tmp_path: Path, fault: str, *, postgres: bool = False) -> None:
        self.tmp = tmp_path
        self.redis = EmbeddedRedis(appendonly=True).start(timeout=scaled(10))
        self.db_path = tmp_path / "readmodel.db"
        self.postgres = PostgresSchema() if postgres else None
        """The read model's schema on the test PostgreSQL server; None: SQLite at `db_path`."""
        self.engine = sqlite_engine(self.db_path) if self.postgres is None else self.postgres.engine
        self.database_url = (
            f"sqlite:///{self.db_path}" if self.postgres is None else self.postgres.schema_url
        )
        self.ledger = str(tmp_path / "ledger")
        self.keys = Keys(ax.CONF.key_prefix)
        self.redis_url = self.redis.url
        """The URL processes started from now on use (a proxy's, in the proxy test)."""
        self.pools: list[PoolProcess] = []
        self.projectors: list[ProjectorProcess] = []
        self.figures = Figures(fault)
        self._started = time.monotonic()
        self._first_fault: float | None = None
        self._markers = 0
        self.killed_pids: set[int] = set()
        """Worker processes the test killed or froze: runs of theirs that never recorded an
        outcome may be run again (delivery is at least once)."""
        for name, value in SETTINGS.items():
            setattr(ax.CONF, name.removeprefix("AGENTEXEC_").lower(), value)
        self.use_redis(self.redis.url)

    def use_redis(self, url: str) -> None:
        self.redis_url = url
        ax.CONF.redis_url = url

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            **SETTINGS,
            "AGENTEXEC_REDIS_URL": self.redis_url,
            "AGENTEXEC_KEY_PREFIX": ax.CONF.key_prefix,
            "AGENTEXEC_PARTITIONS": str(ax.CONF.partitions),
            "AGENTEXEC_DATABASE_URL": self.database_url,
            **extra,
        }

    def start_pool(self, workers: int = 2, concurrency: int = 4, **env: str) -> PoolProcess:
        pool = PoolProcess(
            self.tmp / f"pool-{len(self.pools)}.log", workers, concurrency, self.env(**env)
        )
        self.pools.append(pool)
        return pool

    def start_projector(self, *extra: str) -> ProjectorProcess:
        saved = dict(os.environ)
        os.environ.update(self.env())
        try:
            projector = ProjectorProcess(self.database_url, *extra)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self.projectors.append(projector)
        return projector

    async def stop_projectors(self) -> None:
        # In a thread: a proxy serving their connections may run in this event loop.
        for projector in self.projectors:
            if projector.process.poll() is None:
                await asyncio.to_thread(projector.stop)

    def copy_database(self) -> tuple[Engine, Callable[[], None]]:
        """A copy of the read model's database, and what disposes of it."""
        if self.postgres is None:
            copy = self.tmp / "rebuilt.db"
            shutil.copyfile(self.db_path, copy)
            engine = sqlite_engine(copy)
            return engine, engine.dispose
        schema = PostgresSchema()
        with schema.engine.begin() as conn:
            for table in Base.metadata.sorted_tables:
                conn.execute(
                    text(
                        f'INSERT INTO "{schema.name}"."{table.name}" '
                        f'SELECT * FROM "{self.postgres.name}"."{table.name}"'
                    )
                )
        return schema.engine, schema.drop

    def marker(self) -> str:
        self._markers += 1
        return str(self.tmp / f"marker-{self._markers}")

    def job(self, **fields: Any) -> Job:
        return Job(ledger=self.ledger, **fields)

    async def enqueue_jobs(self, count: int, **fields: Any) -> list[ax.Task]:
        return [await ax.enqueue("fault_job", self.job(**fields)) for _ in range(count)]

    def fault(self, what: str) -> None:
        """Record that one fault was injected now."""
        self.figures.faults_injected += 1
        if self._first_fault is None:
            self._first_fault = time.monotonic()
        if what not in self.figures.notes:
            self.figures.notes.append(what)

    def recovered(self) -> None:
        """Record that the test saw the system recover from its faults (first call wins)."""
        if self.figures.recovery_seconds is None and self._first_fault is not None:
            self.figures.recovery_seconds = round(time.monotonic() - self._first_fault, 2)

    def finish(self) -> None:
        self.figures.seconds = round(time.monotonic() - self._started, 1)

    async def close(self) -> None:
        for pool in self.pools:
            await asyncio.to_thread(pool.close)
        for projector in self.projectors:
            await asyncio.to_thread(projector.close)
        await close_redis()
        self.engine.dispose()
        if self.postgres is not None:
            self.postgres.drop()
        self.redis.close()


async def events_of(agent_id: UUID) -> list[events.AnyEvent]:
    """The events of one task in the Redis log (its partition's)."""
    entries = await get_redis().xrange(ax.runtime.current().partitions.keys_of(agent_id).events)
    decoded = (events.decode_entry(fields) for _, fields in entries)
    return [e for e in decoded if e.agent_id == agent_id]


async def wait_for_event(agent_id: UUID, kind: type, count: int = 1, timeout: float = 60) -> None:
    """Wait until the log holds `count` events of type `kind` of the task."""

    async def enough() -> bool:
        return len([e for e in await events_of(agent_id) if isinstance(e, kind)]) >= count

    await async_wait_for(enough, timeout=timeout, what=f"{count} {kind.__name__} of {agent_id}")


async def wait_for_file(path: str, timeout: float = 60) -> str:
    """The content of `path` once it exists and is not empty (`timeout` scaled by load)."""
    async with asyncio.timeout(scaled(timeout)):
        while True:
            if os.path.exists(path):
                text = Path(path).read_text()
                if text:
                    return text
            # A file appearing has no notification to wait on: poll it.
            await asyncio.sleep(0.02)
