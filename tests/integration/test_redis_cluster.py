"""Suites of the single server run again on a real 3-primary Redis Cluster (issue 14, first
step: every key in the prefix's slot): each Broker verb and script, trackers, a pipeline's
steps, delayed tasks, and the task flow through a pool (pickup pushed, not polled),
unchanged, through a `redis+cluster://` URL.

The tests are imported from their modules; this module's `redis_conf` points them at the
cluster, with the key prefix in braces (its hash tag)."""

from __future__ import annotations

import asyncio

import pytest
import redis

import agentexec as ax
from agentexec import cluster
from agentexec.connection import close_redis
from tests.apps.basic import Echo
from tests.integration import test_broker_contract
from tests.integration.test_pipelines import (  # noqa: F401
    cleanup_runs,
    engine,
    postgres,
    test_a_run_chains_its_steps_and_the_read_model_shows_run_and_steps,
)
from tests.integration.test_scheduling import (  # noqa: F401
    test_a_delayed_task_runs_when_due_and_not_before,
)
from tests.integration.test_task_flow import (  # noqa: F401
    test_gather_returns_results_in_order,
    test_get_result_wakes_on_completion_and_after_it,
    test_lifecycle_events_are_appended_in_order,
    test_pickup_is_pushed_not_polled,
)
from tests.integration.test_trackers import (  # noqa: F401
    test_counts_events_and_the_seed_pattern,
    test_the_fan_in_is_queued_once_when_complete_or_at_once_if_already,
)
from tests.support.cluster import (  # noqa: F401
    RedisClusterSetup,
    needs_redis_server,
    redis_cluster,
    redis_conf,
)
from tests.support.waiting import scaled

_OWN_CLIENT = {
    # One makes a client of its own from the URL (redis-py's plain one); the other finds the
    # blocked read through the default client's CLIENT LIST, which a cluster sends to any node.
    "test_log_reads_return_recorded_events_and_skip_foreign_entries",
    "test_unprojected_since_is_the_oldest_event_no_projector_took",
}
for _name in dir(test_broker_contract):
    if _name.startswith("test_") and _name not in _OWN_CLIENT:
        globals()[_name] = getattr(test_broker_contract, _name)

pytestmark = [pytest.mark.usefixtures("redis_conf"), needs_redis_server]


async def test_tasks_flow_on_after_the_slot_moved_to_another_primary(
    redis_cluster: RedisClusterSetup,  # noqa: F811 - the imported fixture
) -> None:
    """A resharding moves the prefix's slot while a pool is idle in its blocking reads: the
    clients meet MOVED (an outage for the batcher, which reloads the slot map), and tasks
    enqueued afterwards run as before."""
    from tests.apps import basic

    slot = redis.crc.key_slot(ax.CONF.key_prefix.encode())
    basic.pool.start()
    try:
        before = await ax.enqueue("sync_echo", Echo(text="before"))
        assert await ax.get_result(before, timeout=scaled(30)) == "BEFORE"
        holder = redis_cluster.node_of_slot(slot)
        target = next(node for node in redis_cluster.nodes if node is not holder)
        await asyncio.to_thread(redis_cluster.migrate_slot, slot, target)
        after = [await ax.enqueue("sync_echo", Echo(text=f"after {i}")) for i in range(5)]
        results = await ax.gather(*after, timeout=scaled(60))
    finally:
        basic.pool.shutdown()
    assert results == [f"AFTER {i}" for i in range(5)]
    assert target.client.dbsize() > 0
    assert not holder.client.keys(ax.CONF.key_prefix + "*")


async def test_tasks_flow_on_after_the_slots_primary_fails_over_to_its_replica() -> None:
    """CLUSTER FAILOVER of the prefix slot's primary while a pool waits: the clients meet
    MOVED from the demoted primary (or lose its connections) and find the promoted replica."""
    from tests.apps import basic

    replicated = RedisClusterSetup(replicas=True).start()
    try:
        ax.CONF.redis_url = replicated.url
        slot = redis.crc.key_slot(ax.CONF.key_prefix.encode())
        basic.pool.start()
        try:
            before = await ax.enqueue("sync_echo", Echo(text="before"))
            assert await ax.get_result(before, timeout=scaled(30)) == "BEFORE"
            promoted = await asyncio.to_thread(replicated.failover, replicated.node_of_slot(slot))
            after = [await ax.enqueue("sync_echo", Echo(text=f"after {i}")) for i in range(5)]
            results = await ax.gather(*after, timeout=scaled(60))
        finally:
            basic.pool.shutdown()
        assert results == [f"AFTER {i}" for i in range(5)]
        assert promoted.client.keys(ax.CONF.key_prefix + "*")
    finally:
        await close_redis()  # this test's clients of this cluster, before it stops
        replicated.stop()


async def test_a_burst_on_a_new_client_waits_for_connections_and_goes_to_the_right_nodes(
    redis_cluster: RedisClusterSetup,  # noqa: F811 - the imported fixture
) -> None:
    """300 commands at once on a new client, over three primaries, with 4 connections per
    node: each waits for a free connection (redis-py's nodes refuse at once when full), and
    none is sent before the slot map is loaded (redis-py sends those to a random node)."""
    client = cluster.async_client(redis_cluster.url, max_connections=4, options={})
    keys = [f"burst:{{{tag}}}" for tag in "abc"]  # slots 15495, 3300, 7365: three primaries
    assert len({redis_cluster.node_of_slot(redis.crc.key_slot(k.encode())) for k in keys}) == 3

    def moved() -> int:  # MOVED replies the nodes sent, as they count them
        stats = [node.client.info("errorstats") for node in redis_cluster.nodes]
        return sum(int(s.get("errorstat_MOVED", {}).get("count", 0)) for s in stats)

    before = moved()
    try:
        counts = await asyncio.gather(*(client.incr(keys[i % 3]) for i in range(300)))
        assert sorted(counts) == sorted([*range(1, 101)] * 3)
        assert moved() == before
    finally:
        for key in keys:
            await client.delete(key)
        await client.aclose()
