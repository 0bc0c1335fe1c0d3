"""Pool supervision and shutdown, with real worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import agentexec as ax
from agentexec.connection import get_redis
from agentexec.streams import WORKERS_GROUP, Keys
from tests.apps import basic, queues
from tests.apps.basic import Echo, Record
from tests.support.waiting import async_wait_for, scaled


async def test_a_dead_worker_is_replaced_and_its_task_taken_over_at_once(
    redis_conf: str, tmp_path: Path
) -> None:
    ax.CONF.lease_seconds = 600  # takeover must not wait for a lease to expire
    basic.pool.start()
    try:
        before = set(basic.pool.worker_pids)
        task = await ax.enqueue("die", Record(path=str(tmp_path / "marker"), label="x"))
        result = await ax.get_result(task, timeout=scaled(30))
        dead_pid = int((tmp_path / "marker").read_text())
        assert result == f"survived after {dead_pid} died"
        assert dead_pid in before
        await async_wait_for(
            lambda: asyncio.sleep(0, len(basic.pool.worker_pids) == 2),
            what="the replacement worker",
        )
        assert dead_pid not in basic.pool.worker_pids
    finally:
        basic.pool.shutdown()


def _run_cli_pool(*extra: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "AGENTEXEC_REDIS_URL": ax.CONF.redis_url,
        "AGENTEXEC_KEY_PREFIX": ax.CONF.key_prefix,
        "AGENTEXEC_PARTITIONS": str(ax.CONF.partitions),
        "AGENTEXEC_GRACEFUL_SHUTDOWN_TIMEOUT": str(ax.CONF.graceful_shutdown_timeout),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "agentexec.cli", "worker", "tests.apps.basic:pool", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def _wait_running(agent_id: object) -> None:
    keys = Keys(ax.CONF.key_prefix)

    async def started() -> bool:
        entries = await get_redis().xrange(keys.events)
        return any(
            b"task.started" in f[b"event"] and str(agent_id).encode() in f[b"event"]
            for _, f in entries
        )

    await async_wait_for(started, timeout=30, what="the task to start")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_the_cli_pool_finishes_in_flight_tasks_on_a_signal(
    redis_conf: str, signum: signal.Signals
) -> None:
    process = _run_cli_pool("--workers", "1")
    try:
        task = await ax.enqueue("echo", Echo(text="finish me", delay=1.0))
        await _wait_running(task.agent_id)
        process.send_signal(signum)
        assert (await ax.get_result(task, timeout=scaled(30))).text == "finish me"
        assert process.wait(scaled(30)) == 0
    finally:
        process.kill()
    output = process.stdout.read() if process.stdout else ""
    assert "shutting down" in output and "stopped" in output


async def test_unfinished_tasks_are_handed_back_after_the_shutdown_timeout(
    redis_conf: str,
) -> None:
    ax.CONF.graceful_shutdown_timeout = 0.5
    process = _run_cli_pool("--workers", "1")
    try:
        task = await ax.enqueue("echo", Echo(text="long", delay=60))
        await _wait_running(task.agent_id)
        process.send_signal(signal.SIGTERM)
        assert process.wait(scaled(30)) == 0
    finally:
        process.kill()
    keys = Keys(ax.CONF.key_prefix)
    stream = keys.queue(ax.CONF.queue_name, ax.Priority.LOW)
    # Back in the stream, held by nobody: the next worker takes it at once.
    assert await get_redis().xlen(stream) == 1
    pending = await get_redis().xpending(stream, WORKERS_GROUP)
    assert pending["pending"] == 0
    output = process.stdout.read() if process.stdout else ""
    assert "handed back 1 unfinished task(s)" in output


async def test_pools_on_different_queues_share_one_redis(redis_conf: str) -> None:
    queues.email_pool.start()
    queues.research_pool.start()
    try:
        mail = await ax.enqueue(
            "send_email", queues.EmailContext(to="a@example.com"), queue_name="email_queue"
        )
        research = await ax.enqueue("research_company", queues.ResearchContext(company="Acme"))
        assert research.queue_name == "research_queue"
        mail_result = await ax.get_result(mail, timeout=scaled(30))
        research_result = await ax.get_result(research, timeout=scaled(30))
    finally:
        queues.email_pool.shutdown()
        queues.research_pool.shutdown()
    assert mail_result.startswith("email to a@example.com")
    assert research_result.startswith("research on Acme")
    email_pid = int(mail_result.rsplit(" ", 1)[1])
    research_pid = int(research_result.rsplit(" ", 1)[1])
    assert email_pid != research_pid


def test_the_cli_rejects_a_bad_pool_reference() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agentexec.cli", "worker", "tests.apps.basic:nothing"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "module 'tests.apps.basic' has no attribute 'nothing'" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "agentexec.cli", "worker", "tests.apps.basic:Echo"],
        capture_output=True,
        text=True,
    )
    assert "not an ax.Pool" in out.stderr


async def test_a_shutdown_that_overruns_its_timeout_kills_the_workers(
    redis_conf: str, caplog: pytest.LogCaptureFixture
) -> None:
    ax.CONF.graceful_shutdown_timeout = 120  # the workers would wait this long for the task
    basic.pool.start()
    try:
        pids = list(basic.pool.worker_pids)
        task = await ax.enqueue("echo", Echo(text="long", delay=600))
        await _wait_running(task.agent_id)
        started = asyncio.get_running_loop().time()
        await asyncio.to_thread(basic.pool.shutdown, 1)
        waited = asyncio.get_running_loop().time() - started
    finally:
        basic.pool.shutdown()
    assert waited < 60, "shutdown(timeout=1) waited for the task instead of killing the workers"
    assert "did not stop within 1s of pool.shutdown()" in caplog.text
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
