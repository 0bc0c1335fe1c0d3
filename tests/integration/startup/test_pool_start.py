"""`pool.start()` returns once the workers serve, and refuses a script without the main guard."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import agentexec as ax
from agentexec.connection import get_redis
from agentexec.streams import WORKERS_GROUP, Keys
from tests.apps import basic

UNGUARDED = """
import asyncio
from uuid import UUID
from pydantic import BaseModel
import agentexec as ax

class Job(BaseModel):
    n: int

pool = ax.Pool(num_workers=1)

@pool.task("add_one")
async def add_one(agent_id: UUID, context: Job) -> int:
    return context.n + 1

pool.start()

async def main() -> None:
    task = await ax.enqueue("add_one", Job(n=1))
    print("result", await ax.get_result(task, timeout=20))

asyncio.run(main())
pool.shutdown()
"""


def _env(redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "AGENTEXEC_REDIS_URL": redis_url,
        "AGENTEXEC_KEY_PREFIX": ax.CONF.key_prefix,
        "AGENTEXEC_PARTITIONS": str(ax.CONF.partitions),
    }


def test_start_in_a_script_without_the_main_guard_raises_with_the_fix(
    redis_conf: str, tmp_path: Path
) -> None:
    script = tmp_path / "app.py"
    script.write_text(UNGUARDED)
    done = subprocess.run(
        [sys.executable, str(script)],
        env=_env(redis_conf),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()
    assert any(
        line.startswith("agentexec.errors.ConfigurationError: pool.start()") for line in last
    )
    line = UNGUARDED.splitlines().index("pool.start()") + 1
    assert f"{script}, line {line}" in done.stderr
    assert 'if __name__ == "__main__":' in done.stderr
    assert "result" not in done.stdout


def test_the_same_script_with_the_guard_runs(redis_conf: str, tmp_path: Path) -> None:
    head, tail = UNGUARDED.split("pool.start()\n")
    body = "pool.start()\n" + tail
    guarded = head + 'if __name__ == "__main__":\n' + textwrap.indent(body, "    ")
    script = tmp_path / "app.py"
    script.write_text(guarded)
    done = subprocess.run(
        [sys.executable, str(script)],
        env=_env(redis_conf),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "result 2" in done.stdout


async def test_start_returns_once_every_worker_reads_its_queue(redis_conf: str) -> None:
    basic.pool.start()
    try:
        keys = Keys(ax.CONF.key_prefix)
        stream = keys.queue(basic.pool.queue_name, ax.Priority.LOW)
        # No wait: every worker has joined the consumer group by the time start() returns.
        consumers = await get_redis().xinfo_consumers(stream, WORKERS_GROUP)
        assert len(consumers) == 2 == len(basic.pool.worker_pids)
    finally:
        basic.pool.shutdown()


async def test_start_raises_when_a_worker_exits_before_serving(redis_conf: str) -> None:
    pool = ax.Pool(num_workers=1)
    pool.task("crash_on_start")(basic.echo)
    ax.CONF.redis_url = "redis://127.0.0.1:1/0"  # nothing listens there
    ax.CONF.graceful_shutdown_timeout = 1
    with pytest.raises(ax.AgentexecError, match="not serving after 5") as raised:
        pool.start(timeout=5)
    assert isinstance(raised.value, ax.PoolStartError)
    assert pool.worker_pids == []
