"""Fault injection: a projector SIGKILLed mid-batch, database outages, Redis restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text

import agentexec as ax
from agentexec.activity.models import Activity, ArchivedEvent
from agentexec.connection import close_redis
from agentexec.embedded import EmbeddedRedis
from agentexec.projector import Projector
from agentexec.projector.rebuild import rebuild
from tests.support.waiting import scaled

from .conftest import PostgresSchema, database_url
from .workload import append_all, checkpoint_position, snapshot, traffic, wait_until

AGENTEXEC = str(Path(sys.executable).parent / "agentexec")


class ProjectorProcess:
    """`agentexec projector` in a subprocess of its own, logging to a file that is echoed to
    stderr when it is closed (pytest shows it for a failed test)."""

    def __init__(self, url: str, *extra: str) -> None:
        env = {
            **os.environ,
            "AGENTEXEC_REDIS_URL": ax.CONF.redis_url,
            "AGENTEXEC_KEY_PREFIX": ax.CONF.key_prefix,
            "AGENTEXEC_PARTITIONS": str(ax.CONF.partitions),
            "AGENTEXEC_DATABASE_URL": url,
        }
        self.log = tempfile.NamedTemporaryFile(prefix="projector-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [AGENTEXEC, "--log-level", "INFO", "projector", "--lease-seconds", "1", *extra],
            env=env,
            stderr=self.log,
        )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(scaled(10))

    def stop(self) -> int:
        # A SIGTERM that comes while the interpreter still starts kills it outright: wait
        # until it runs (on a loaded machine start-up takes seconds).
        deadline = time.monotonic() + scaled(30)
        while "started on" not in Path(self.log.name).read_text() and time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(scaled(20))

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        if not self.log.closed:
            self.log.close()
            sys.stderr.write(Path(self.log.name).read_text())
            os.unlink(self.log.name)


def count(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


async def test_projector_killed_mid_batch_equals_a_rebuild(
    engine: Engine, redis_conf: str, processes: list[ProjectorProcess]
) -> None:
    evs = traffic(20_000, seed=3)
    last = append_all(evs)
    url = database_url(engine)
    processes.append(ProjectorProcess(url))
    # Kill it once it has committed something and is still working through the log.
    await wait_until(lambda: checkpoint_position(engine) not in (None, "0-0"))
    processes[0].kill()
    assert checkpoint_position(engine) != last, "finished before it could be killed"

    # Two projectors now: one takes over when the dead one's lease expires, the other waits.
    processes.append(ProjectorProcess(url))
    processes.append(ProjectorProcess(url))
    await wait_until(lambda: checkpoint_position(engine) == last, timeout=60)
    assert [p.stop() for p in processes[1:]] == [0, 0]

    assert count(engine, ArchivedEvent) == len(evs)
    live = snapshot(engine, checkpoint=True)
    await rebuild(engine)
    assert snapshot(engine, checkpoint=True) == live
    await close_redis()


async def test_rebuild_flag_of_the_command(
    engine: Engine, redis_conf: str, processes: list[ProjectorProcess]
) -> None:
    aid = ax.activity.create("t")
    await Projector(engine).catch_up()
    with engine.begin() as conn:
        conn.execute(Activity.__table__.delete())
    processes.append(ProjectorProcess(database_url(engine), "--rebuild"))
    await wait_until(lambda: count(engine, Activity) == 1)
    assert processes[0].stop() == 0
    with engine.connect() as conn:
        assert conn.execute(select(Activity.agent_id)).scalar() == aid


@pytest.mark.postgres
async def test_database_outage_loses_nothing(
    postgres: PostgresSchema, redis_conf: str, caplog: pytest.LogCaptureFixture
) -> None:
    postgres.truncate()
    name = f"axtest_{os.getpid()}_{id(caplog)}"
    engine = postgres.connect(connect_args={"application_name": name})
    projector = Projector(engine, lease_seconds=2)
    stop = asyncio.Event()
    run = asyncio.create_task(projector.run(stop))
    try:
        first = ax.activity.create("before")
        await wait_until(lambda: count(engine, Activity) == 1)

        # The connection dies under the projector.
        with postgres.admin.begin() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name"
                ),
                {"name": name},
            )
        # Then the tables are unreachable for a while.
        hidden = f"{postgres.name}_away"
        with postgres.admin.begin() as conn:
            conn.execute(text(f'ALTER SCHEMA "{postgres.name}" RENAME TO "{hidden}"'))
        try:
            during = [ax.activity.create("during") for _ in range(3)]
            await wait_until(lambda: projector._db_down_since is not None)
        finally:
            with postgres.admin.begin() as conn:
                conn.execute(text(f'ALTER SCHEMA "{hidden}" RENAME TO "{postgres.name}"'))
        await wait_until(lambda: count(engine, Activity) == 4)
        assert "database unavailable" in caplog.text
        with engine.connect() as conn:
            ids = set(conn.execute(select(Activity.agent_id)).scalars())
        assert ids == {first, *during}
    finally:
        stop.set()
        await run
        engine.dispose()
        await close_redis()


async def test_redis_restart(engine: Engine, tmp_path: Path) -> None:
    server = EmbeddedRedis()
    server.start()
    ax.CONF.redis_url = server.url
    projector = Projector(engine, lease_seconds=1)
    stop = asyncio.Event()
    run = asyncio.create_task(projector.run(stop))
    try:
        first = ax.activity.create("before")
        await wait_until(lambda: count(engine, Activity) == 1)
        server.kill()
        server.start()  # back, and empty: no stream, no group, no lease
        second = ax.activity.create("after")
        await wait_until(lambda: count(engine, Activity) == 2)
        with engine.connect() as conn:
            assert set(conn.execute(select(Activity.agent_id)).scalars()) == {first, second}
    finally:
        stop.set()
        await run
        await close_redis()
        server.close()
