"""Redis Cluster, first step of issue 14: every key in one hash slot (the key prefix's hash
tag), so that every process works through a `redis+cluster://` URL. One primary serves all of
agentexec's keys; partitions across the primaries are the follow-up."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import agentexec as ax
from agentexec import events
from agentexec.connection import check_eviction_policy_at_start
from agentexec.errors import ConfigurationError
from agentexec.streams import Keys
from tests.faults.checker import check
from tests.faults.cluster import Cluster, wait_for_event
from tests.support.cluster import RedisClusterSetup
from tests.support.topology import single_log_only
from tests.support.waiting import scaled

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        shutil.which("redis-server") is None,
        reason="Redis Cluster tests start redis-server processes: install Redis 7 (redis-server)",
    ),
]


single_slot = single_log_only(
    "one partition (the prefix's slot) on a cluster of the test's own; 24 and 25 run with three"
)
"""Faults 21 to 23 tag the prefix: with AGENTEXEC_TEST_TOPOLOGY=cluster (three partitions)
they do not apply."""


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


@single_slot
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


@pytest.fixture
def replicated_cluster() -> Iterator[RedisClusterSetup]:
    setup = RedisClusterSetup(replicas=True).start()
    try:
        yield setup
    finally:
        setup.stop()


def _unexpected(cluster: Cluster) -> list[str]:
    """Lines of the processes' logs that report an error nobody expected (a traceback)."""
    logs = [pool.output() for pool in cluster.pools]
    logs += [Path(p.log.name).read_text() for p in cluster.projectors]
    return [line for text in logs for line in text.splitlines() if "unexpected" in line]


@single_slot
@pytest.mark.fault("22. Redis Cluster: SIGKILL of the slot's primary while tasks run")
async def test_primary_killed_while_tasks_flow(
    replicated_cluster: RedisClusterSetup, cluster: Cluster
) -> None:
    """No CLUSTER FAILOVER: the primary dies, the others mark it failed after the node timeout
    (2 s) and elect its replica. Its writes were fenced first (see `fence`): the invariants
    hold when the replica has what the primary acknowledged."""
    _use(cluster, replicated_cluster)
    projector = cluster.start_projector()
    # A lease longer than the election: a run outlives the outage instead of being taken over.
    cluster.start_pool(workers=2, concurrency=4, AGENTEXEC_LEASE_SECONDS="10")
    tasks = await cluster.enqueue_jobs(16, work=0.6, steps=3)
    waiters = [asyncio.ensure_future(ax.get_result(t, timeout=180)) for t in tasks[:8]]
    await wait_for_event(tasks[0].agent_id, events.TaskProgress)

    slot = redis.crc.key_slot(ax.CONF.key_prefix.encode())
    primary = replicated_cluster.primary_of_slot(slot)
    cluster.fault("SIGKILL of the slot's primary while tasks run")
    promoted = await asyncio.to_thread(replicated_cluster.kill_primary, primary)
    tasks += await cluster.enqueue_jobs(8, work=0.1)

    await asyncio.wait_for(asyncio.gather(*waiters), scaled(180))
    cluster.recovered()
    assert projector.process.poll() is None, "the projector exited during the election"
    await check(cluster, tasks)
    assert replicated_cluster.primary_of_slot(slot) is promoted
    assert not _unexpected(cluster), _unexpected(cluster)[:5]


@single_slot
@pytest.mark.fault("23. Redis Cluster: the slot migrated to another primary while tasks run")
async def test_slot_migrated_while_tasks_flow(
    redis_cluster: RedisClusterSetup, cluster: Cluster
) -> None:
    """A resharding of the prefix's slot, one key per MIGRATE, while tasks are enqueued, run
    and projected: the clients meet ASK, TRYAGAIN (a script whose keys are split between the
    two primaries) and then MOVED; each is an outage that passes."""
    _use(cluster, redis_cluster)
    projector = cluster.start_projector()
    cluster.start_pool(workers=2, concurrency=4)
    tasks = await cluster.enqueue_jobs(30, work=0.3, steps=3)
    await wait_for_event(tasks[0].agent_id, events.TaskProgress)

    slot = redis.crc.key_slot(ax.CONF.key_prefix.encode())
    source = redis_cluster.primary_of_slot(slot)
    target = next(node for node in redis_cluster.nodes if node is not source)
    migration = asyncio.ensure_future(
        asyncio.to_thread(redis_cluster.migrate_slot, slot, target, batch=1)
    )
    cluster.fault("slot migrated while tasks run")
    while not migration.done():
        tasks += await cluster.enqueue_jobs(1, work=0.05)
    await migration
    tasks += await cluster.enqueue_jobs(10, work=0.05)

    assert projector.process.poll() is None, "the projector exited during the migration"
    await check(cluster, tasks)
    assert redis_cluster.primary_of_slot(slot) is target
    assert not source.client.keys(ax.CONF.key_prefix + "*")
    assert not _unexpected(cluster), _unexpected(cluster)[:5]


def _partitioned(
    cluster: Cluster, setup: RedisClusterSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three partitions, one on each primary: the prefix stays untagged (each partition has a
    tag of its own), every process started from now on gets `AGENTEXEC_PARTITIONS=3`."""
    monkeypatch.setenv("AGENTEXEC_PARTITIONS", "3")
    ax.CONF.partitions = 3
    cluster.use_redis(setup.url)
    cluster.keys = Keys(ax.CONF.key_prefix)
    slots = [_partition_slot(p) for p in range(3)]
    assert len({setup.primary_of_slot(slot).name for slot in slots}) == 3, slots


def _partition_slot(partition: int) -> int:
    return int(redis.crc.key_slot(ax.runtime.current().partitions.keys(partition).events.encode()))


async def _enqueue_in(
    cluster: Cluster, partition: int, count: int, **fields: object
) -> list[ax.Task]:
    """`count` jobs whose agent ids are in `partition` (placed by their idempotency keys)."""
    partitions = ax.runtime.current().partitions
    tasks: list[ax.Task] = []
    while len(tasks) < count:  # a third of the keys fit
        key = uuid.uuid4().hex
        # An idempotency key's dedup name is "key:<key>" (agentexec.queue).
        if partitions.of_text(f"key:{key}") == partition:
            tasks.append(await ax.enqueue("fault_job", cluster.job(**fields), idempotency_key=key))
    assert {partitions.of(t.agent_id) for t in tasks} == {partition}
    return tasks


@pytest.mark.fault("24. Redis Cluster, 3 partitions: SIGKILL of one partition's primary")
async def test_one_partitions_primary_killed_while_tasks_flow(
    replicated_cluster: RedisClusterSetup, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The primary of one partition dies while tasks run in every partition: until its replica
    is elected, the other partitions' tasks are enqueued, run and end; then its own go on. The
    partition killed is the one whose primary also serves this process's result waiter (its
    pub/sub connection, placed by the slot of its first channel): the waiter must find the
    elected replica although nothing else this process sends goes to that slot."""
    _partitioned(cluster, replicated_cluster, monkeypatch)
    projector = cluster.start_projector()
    cluster.start_pool(workers=2, concurrency=4, AGENTEXEC_LEASE_SECONDS="10")
    tasks = await cluster.enqueue_jobs(24, work=0.6, steps=3)
    assert {ax.runtime.current().partitions.of(t.agent_id) for t in tasks} == {0, 1, 2}
    waiters = [asyncio.ensure_future(ax.get_result(t, timeout=180)) for t in tasks]
    await wait_for_event(tasks[0].agent_id, events.TaskProgress)

    waiter_slot = redis.crc.key_slot(cluster.keys.waiter_channel.encode())
    primary = replicated_cluster.primary_of_slot(waiter_slot)
    killed = next(
        p for p in range(3) if replicated_cluster.primary_of_slot(_partition_slot(p)) is primary
    )
    replica = replicated_cluster.replicas[replicated_cluster.nodes.index(primary)]
    killing = asyncio.ensure_future(asyncio.to_thread(replicated_cluster.kill_primary, primary))
    cluster.fault("SIGKILL of one partition's primary while tasks run")
    # Tasks of the other partitions end while that partition has no primary.
    others = []
    for p in range(3):
        if p != killed:
            others += await _enqueue_in(cluster, p, 3)
    await ax.gather(*others, timeout=scaled(60))
    during = not killing.done()
    promoted = await killing
    cluster.figures.notes.append(
        "other partitions' tasks ended " + ("before" if during else "after") + " the election"
    )
    tasks += others + await _enqueue_in(cluster, killed, 4, work=0.1)

    await asyncio.wait_for(asyncio.gather(*waiters), scaled(180))
    cluster.recovered()
    assert projector.process.poll() is None, "the projector exited during the election"
    await check(cluster, tasks)
    assert promoted is replica
    assert not _unexpected(cluster), _unexpected(cluster)[:5]


@pytest.mark.fault("25. Redis Cluster, 3 partitions: one partition's slot migrated")
async def test_one_partitions_slot_migrated_while_tasks_flow(
    redis_cluster: RedisClusterSetup, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Partition 1's slot moves to the primary of partition 2, one key per MIGRATE, while tasks
    are enqueued in every partition, run and projected."""
    _partitioned(cluster, redis_cluster, monkeypatch)
    projector = cluster.start_projector()
    cluster.start_pool(workers=2, concurrency=4)
    tasks = await cluster.enqueue_jobs(30, work=0.3, steps=3)
    await wait_for_event(tasks[0].agent_id, events.TaskProgress)

    slot = _partition_slot(1)
    source = redis_cluster.primary_of_slot(slot)
    target = redis_cluster.primary_of_slot(_partition_slot(2))
    migration = asyncio.ensure_future(
        asyncio.to_thread(redis_cluster.migrate_slot, slot, target, batch=1)
    )
    cluster.fault("partition 1's slot migrated while tasks run")
    while not migration.done():
        tasks += await _enqueue_in(cluster, 1, 1, work=0.05)
    await migration
    tasks += await cluster.enqueue_jobs(10, work=0.05)

    assert projector.process.poll() is None, "the projector exited during the migration"
    await check(cluster, tasks)
    assert redis_cluster.primary_of_slot(slot) is target
    assert not any(
        redis.crc.key_slot(key) == slot for key in source.client.keys(ax.CONF.key_prefix + "*")
    )
    assert not _unexpected(cluster), _unexpected(cluster)[:5]
