"""Redis Cluster, first step of issue 14: every key in one hash slot (the key prefix's hash
tag), so that every process works through a `redis+cluster://` URL. One primary serves all of
agentexec's keys; partitions across the primaries are the follow-up."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
import redis

import agentexec as ax
from agentexec.connection import check_eviction_policy_at_start
from agentexec.errors import ConfigurationError
from agentexec.streams import Keys
from tests.faults.checker import check
from tests.faults.cluster import Cluster
from tests.support.cluster import RedisClusterSetup

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        shutil.which("redis-server") is None,
        reason="Redis Cluster tests start redis-server processes: install Redis 7 (redis-server)",
    ),
]


@pytest.fixture
def redis_cluster() -> Iterator[RedisClusterSetup]:
    setup = RedisClusterSetup().start()
    try:
        yield setup
    finally:
        setup.stop()


def _use(cluster: Cluster, redis_cluster: RedisClusterSetup) -> None:
    # Tagged before the URL changes: a cluster refuses an untagged prefix.
    ax.CONF.key_prefix = "{" + ax.CONF.key_prefix + "}"
    cluster.use_redis(redis_cluster.url)
    cluster.keys = Keys(ax.CONF.key_prefix)


@pytest.mark.fault("21. Redis Cluster (3 primaries, one slot): tasks flow through it")
async def test_task_flow_through_redis_cluster(
    redis_cluster: RedisClusterSetup, cluster: Cluster
) -> None:
    _use(cluster, redis_cluster)
    settings = ax.Settings(redis_url=redis_cluster.url, key_prefix=ax.CONF.key_prefix)
    # The start check asks every primary: any of them may come to hold the slot.
    check_eviction_policy_at_start("test", settings)
    other = redis_cluster.nodes[1]
    other.client.config_set("maxmemory-policy", "allkeys-lru")
    with pytest.raises(ConfigurationError, match=f"node 127.0.0.1:{other.port}.*allkeys-lru"):
        check_eviction_policy_at_start("test", settings)
    other.client.config_set("maxmemory-policy", "noeviction")

    cluster.start_projector()
    cluster.start_pool(workers=2, concurrency=4)
    tasks = await cluster.enqueue_jobs(50, work=0.01)
    await check(cluster, tasks)

    # Every key agentexec wrote is on the primary of the prefix's slot.
    slot = redis.crc.key_slot(ax.CONF.key_prefix.encode())
    holder = redis_cluster.node_of_slot(slot)
    for node in redis_cluster.nodes:
        keys = node.client.keys(ax.CONF.key_prefix + "*")
        assert bool(keys) == (node is holder), (node.name, keys[:5])
