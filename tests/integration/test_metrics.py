"""Prometheus metrics scraped from real processes: the projector's task counters and durations
checked against what ran and against the read model, a worker pool's queue gauges while its
tasks wait, a pool that runs its projector, the log's lag, `agentexec api --metrics`, and the
collectors registered as docs/metrics.md shows. The tests that project run on SQLite and on
PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.activity.models import Activity
from agentexec.connection import close_redis, get_sync_redis
from agentexec.metrics import LogCollector
from agentexec.projector import Projector
from agentexec.runtime import current
from agentexec.streams import Keys
from tests.apps import basic, metered
from tests.integration.readmodel.conftest import database_url, engine, postgres
from tests.support.metrics import Samples, free_port, scrape
from tests.support.waiting import scaled, wait_for

AGENTEXEC = str(Path(sys.executable).parent / "agentexec")
ROOT = Path(__file__).resolve().parents[2]

__all__ = ["engine", "postgres"]  # the read model on each backend


def cli_env(redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "AGENTEXEC_REDIS_URL": redis_url,
        "AGENTEXEC_KEY_PREFIX": ax.CONF.key_prefix,
        "AGENTEXEC_PARTITIONS": str(ax.CONF.partitions),
    }


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts: stopped (SIGTERM, then killed) when it ends."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(scaled(30))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def scraped(url: str, what: str, check: object, headers: dict[str, str] | None = None) -> Samples:
    """Scrape `url` until `check(samples)` is true; the samples that passed it."""

    def attempt() -> Samples | None:
        try:
            samples = scrape(url, headers)
        except Exception:  # not listening yet
            return None
        return samples if check(samples) else None  # type: ignore[operator]

    return wait_for(attempt, timeout=60, what=what)


def test_the_projector_counts_each_task_once_with_its_durations(
    running_pool: ax.Pool, redis_conf: str, engine: Engine, started: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    database = database_url(engine)
    command = [AGENTEXEC, "projector", "--database-url", database, "--create-tables"]
    started.append(
        subprocess.Popen([*command, "--metrics-port", str(port)], env=cli_env(redis_conf))
    )
    url = f"http://127.0.0.1:{port}/metrics"

    async def enqueue() -> None:
        for i in range(5):
            await ax.enqueue("echo", basic.Echo(text=f"echo {i}", delay=0.1))
        for i in range(2):
            await ax.enqueue("boom", basic.Echo(text=f"boom {i}"))
        await close_redis()

    asyncio.run(enqueue())

    def all_ended(s: Samples) -> bool:
        return (
            s.get("agentexec_tasks_total", task_name="echo", status="complete") == 5
            and s.get("agentexec_tasks_total", task_name="boom", status="error") == 2
            and s["agentexec_projector_lag_entries"] == 0
        )

    samples = scraped(url, "7 tasks counted by the projector", all_ended)
    assert samples.get("agentexec_tasks_total", task_name="echo", status="queued") == 5
    assert samples.get("agentexec_tasks_total", task_name="boom", status="queued") == 2
    assert samples.get("agentexec_tasks_total", task_name="echo", status="error") is None
    assert samples.get("agentexec_task_attempts_total", task_name="echo", outcome="complete") == 5
    assert samples.get("agentexec_task_attempts_total", task_name="boom", outcome="error") == 2
    for name, count in (("echo", 5), ("boom", 2)):
        assert samples.get("agentexec_task_run_seconds_count", task_name=name) == count
        assert samples.get("agentexec_task_queue_wait_seconds_count", task_name=name) == count
        inf = samples.get("agentexec_task_run_seconds_bucket", task_name=name, le="+Inf")
        assert inf == count
    # Each echo slept 0.1 s: none ran in 50 ms or less.
    assert samples.get("agentexec_task_run_seconds_bucket", task_name="echo", le="0.05") == 0
    # The sums are those of the read model, which the same events built.
    with Session(engine) as session:
        rows = session.execute(select(Activity.agent_type, Activity.run_seconds)).all()
    for name in ("echo", "boom"):
        total = sum(seconds or 0.0 for task, seconds in rows if task == name)
        run_sum = samples.get("agentexec_task_run_seconds_sum", task_name=name)
        assert run_sum == pytest.approx(total, abs=1e-6)
    assert samples.get("agentexec_task_run_seconds_sum", task_name="echo") >= 0.5  # type: ignore[operator]
    assert samples["agentexec_dead_letters"] == 0
    assert samples["agentexec_projector_lag_seconds"] == 0

    # An entry that is no event: the projector dead-letters it, and the gauge says so.
    get_sync_redis().xadd(Keys(ax.CONF.key_prefix).events, {"junk": "1"})
    samples = scraped(url, "the dead letter", lambda s: s["agentexec_dead_letters"] == 1)
    assert samples.get("agentexec_tasks_total", task_name="echo", status="complete") == 5


def test_a_worker_process_exports_its_queue_while_tasks_wait(
    redis_conf: str, tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    command = [AGENTEXEC, "worker", "tests.apps.metered:pool", "--metrics-port", str(port)]
    started.append(subprocess.Popen(command, env=cli_env(redis_conf), cwd=ROOT))
    url = f"http://127.0.0.1:{port}/metrics"
    gate = tmp_path / "open"

    async def enqueue() -> None:
        for _ in range(5):  # two run (concurrency 2), three wait
            await ax.enqueue("held", metered.Gate(path=str(gate)))
        await ax.enqueue("held", metered.Gate(path=str(gate)), delay=3600)
        await close_redis()

    asyncio.run(enqueue())
    queue = {"queue": metered.QUEUE}

    def holding(s: Samples) -> bool:
        return (
            s.get("agentexec_queue_waiting", **queue),
            s.get("agentexec_queue_pending", **queue),
            s.get("agentexec_queue_delayed", **queue),
        ) == (3, 2, 1)

    samples = scraped(url, "3 waiting, 2 running and 1 delayed task", holding)
    assert samples.get("agentexec_pool_workers", **queue) == 1
    assert samples.get("process_cpu_seconds_total") is not None  # the pool's own process
    # Task counters are the projector's: a worker pool exports none (no double counting).
    assert not any(name.startswith("agentexec_tasks") for name, _ in samples.values)
    gate.touch()

    def drained(s: Samples) -> bool:
        return (
            s.get("agentexec_queue_waiting", **queue),
            s.get("agentexec_queue_pending", **queue),
            s.get("agentexec_queue_delayed", **queue),
        ) == (0, 0, 1)

    scraped(url, "the queue drained", drained)


def test_a_pool_running_its_projector_exports_both(
    redis_conf: str, engine: Engine, tmp_path: Path
) -> None:
    pool = metered.pool
    pool.engine, pool.metrics_port = engine, 0
    gate = tmp_path / "open"
    gate.touch()
    try:
        pool.start()
        assert pool.metrics_url is not None

        async def run() -> None:
            tasks = [await ax.enqueue("held", metered.Gate(path=str(gate))) for _ in range(3)]
            for task in tasks:
                await ax.get_result(task, timeout=scaled(30))
            await close_redis()

        asyncio.run(run())

        def counted(s: Samples) -> bool:
            return s.get("agentexec_tasks_total", task_name="held", status="complete") == 3

        samples = scraped(pool.metrics_url, "3 tasks counted by the pool's projector", counted)
        assert samples.get("agentexec_queue_waiting", queue=metered.QUEUE) == 0
        assert samples.get("agentexec_task_run_seconds_count", task_name="held") == 3
    finally:
        pool.shutdown()
        pool.engine, pool.metrics_port = None, None
    assert pool.metrics_url is None


async def test_the_lag_counts_what_the_read_model_lacks(redis_conf: str, engine: Engine) -> None:
    agent = ax.activity.create("research")
    ax.activity.update(agent, "step", percentage=50)
    registry = CollectorRegistry()
    registry.register(LogCollector(current()))
    # No projector ever ran: both events are behind, the oldest for 0 s or more.
    assert registry.get_sample_value("agentexec_projector_lag_entries") == 2
    assert registry.get_sample_value("agentexec_projector_lag_seconds") is not None
    await Projector(engine, lease_seconds=5).catch_up()
    assert registry.get_sample_value("agentexec_projector_lag_entries") == 0
    assert registry.get_sample_value("agentexec_projector_lag_seconds") == 0
    ax.activity.update(agent, "later", percentage=60)
    assert registry.get_sample_value("agentexec_projector_lag_entries") == 1


def test_a_taken_metrics_port_is_refused_at_start(redis_conf: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [AGENTEXEC, "worker", "tests.apps.metered:pool", "--metrics-port", str(port)]
        done = subprocess.run(
            command, env=cli_env(redis_conf), cwd=ROOT, capture_output=True, text=True, timeout=90
        )
    assert done.returncode != 0
    assert f"Pool(metrics_port={port})" in done.stderr and "pick a free port" in done.stderr


def test_the_api_command_serves_metrics_when_asked(
    redis_conf: str, tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """`agentexec api --metrics`: /metrics beside the API, guarded by the API's token (without
    the flag there is no such route: tests/integration/api/test_metrics.py)."""
    token = "metrics-token-0123456789"
    env = {**cli_env(redis_conf), "AGENTEXEC_API_TOKEN": token}
    port = free_port()
    database = f"sqlite:///{tmp_path / 'agents.db'}"
    command = [AGENTEXEC, "api", "--port", str(port), "--database-url", database, "--metrics"]
    started.append(subprocess.Popen(command, env=env))
    url = f"http://127.0.0.1:{port}/metrics"
    samples = scraped(
        url, "the API's /metrics", lambda s: True, {"Authorization": f"Bearer {token}"}
    )
    assert (samples["agentexec_sse_feeds_open"], samples["agentexec_sse_feeds_limit"]) == (
        0,
        ax.CONF.api_max_feeds,
    )
    assert httpx.get(url).status_code == 401


def test_the_collectors_register_in_your_own_registry_as_documented(redis_conf: str) -> None:
    """docs/metrics.md, "In your own process": the block as written, in a fresh interpreter,
    then a scrape of the default registry it registered into."""
    page = (ROOT / "docs" / "metrics.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    agent = ax.activity.create("research")
    ax.activity.update(agent, "step", percentage=50)
    scrape_default = (
        "\nfrom prometheus_client import generate_latest\n"
        "print(generate_latest(REGISTRY).decode())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", block + scrape_default],
        env=cli_env(redis_conf),
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert done.returncode == 0, done.stderr
    samples = Samples(done.stdout)
    assert samples.get("agentexec_queue_waiting", queue="default") == 0
    assert samples.get("agentexec_queue_waiting", queue="reports") == 0
    assert samples["agentexec_projector_lag_entries"] == 2  # no projector ran
