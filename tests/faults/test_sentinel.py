"""Redis behind Sentinel (issue 14): every process reaches the primary through a
`redis+sentinel://` URL and follows it through failovers.

The failovers here lose no acknowledged write (see `SentinelSetup.fence`): Redis replicates
asynchronously, and what an old primary acknowledged without sending it to its replica is
lost whatever the client does (docs/operations.md, "Sentinel"). Given that, the checker's
invariants must hold: every task completes exactly once, every result is retrievable, and
the projector goes on.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import agentexec as ax
from agentexec import events
from agentexec.connection import check_eviction_policy_at_start
from agentexec.errors import ConfigurationError
from tests.faults.checker import check
from tests.faults.cluster import Cluster, wait_for_event
from tests.support.sentinel import SentinelSetup

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        shutil.which("redis-server") is None,
        reason="Sentinel tests start redis-server processes: install Redis 7 (redis-server)",
    ),
]


@pytest.fixture
def sentinels() -> Iterator[SentinelSetup]:
    setup = SentinelSetup().start()
    try:
        yield setup
    finally:
        setup.stop()


async def _primary_port() -> int:
    info = await ax.runtime.current().redis().info("server")
    return int(info["tcp_port"])


@pytest.mark.fault("19. Redis behind Sentinel: tasks flow through the primary it names")
async def test_task_flow_through_sentinel(sentinels: SentinelSetup, cluster: Cluster) -> None:
    cluster.use_redis(sentinels.url)
    assert await _primary_port() == sentinels.primary_port()
    # The start check asks the primary: an evicting replica does not matter, an evicting
    # primary does.
    primary = sentinels.server(sentinels.primary_port())
    replica = next(node for node in sentinels.servers if node is not primary)
    settings = ax.Settings(redis_url=sentinels.url)
    replica.client.config_set("maxmemory-policy", "allkeys-lru")
    check_eviction_policy_at_start("test", settings)
    primary.client.config_set("maxmemory-policy", "allkeys-lru")
    with pytest.raises(ConfigurationError, match="allkeys-lru"):
        check_eviction_policy_at_start("test", settings)
    for node in sentinels.servers:
        node.client.config_set("maxmemory-policy", "noeviction")

    cluster.start_projector()
    cluster.start_pool(workers=1, concurrency=4)
    tasks = await cluster.enqueue_jobs(12, work=0.05)
    await check(cluster, tasks)


@pytest.mark.fault("20. Sentinel failover (SENTINEL FAILOVER, then SIGKILL of the primary)")
async def test_failovers_while_tasks_flow(sentinels: SentinelSetup, cluster: Cluster) -> None:
    cluster.use_redis(sentinels.url)
    projector = cluster.start_projector()
    # A lease longer than a failover (about 3 s after a crash): a run outlives the outage
    # instead of being taken over and run again by another worker.
    cluster.start_pool(workers=2, concurrency=4, AGENTEXEC_LEASE_SECONDS="10")
    tasks = await cluster.enqueue_jobs(16, work=0.6, steps=3)
    waiters = [asyncio.ensure_future(ax.get_result(t, timeout=180)) for t in tasks[:8]]
    await wait_for_event(tasks[0].agent_id, events.TaskProgress)

    first = sentinels.primary_port()
    promoted = await asyncio.to_thread(sentinels.failover)
    cluster.fault("SENTINEL FAILOVER while tasks run")
    assert promoted != first
    tasks += await cluster.enqueue_jobs(8, work=0.3, steps=2)
    assert await _primary_port() == promoted

    await wait_for_event(tasks[-1].agent_id, events.TaskStarted)
    again = await asyncio.to_thread(sentinels.kill_primary)
    cluster.fault("SIGKILL of the primary while tasks run")
    assert again == first
    tasks += await cluster.enqueue_jobs(8, work=0.1)

    await asyncio.wait_for(asyncio.gather(*waiters), 180)
    cluster.recovered()
    assert projector.process.poll() is None, "the projector exited during a failover"
    await check(cluster, tasks)
    assert await _primary_port() == first
    # Every error the failovers caused was a known outage (no "unexpected error" with its
    # traceback), and the processes did see them.
    logs = [pool.output() for pool in cluster.pools]
    logs += [Path(p.log.name).read_text() for p in cluster.projectors]
    unexpected = [line for text in logs for line in text.splitlines() if "unexpected" in line]
    assert not unexpected, unexpected[:5]
    assert "Redis unreachable" in logs[0]
