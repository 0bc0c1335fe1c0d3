"""The feeds over three partitions (tests/integration/api/test_partitioned_feeds.py), imported
unchanged, on a real 3-primary Redis Cluster: one partition on each primary, so the hub waits
on each partition's log with a blocking read of its own, concurrently."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

import agentexec as ax
from tests.integration.api.test_partitioned_feeds import (  # noqa: F401
    P,
    append_in,
    blocked_reads,
    test_a_partition_trimmed_past_a_cursor_gets_a_reset_of_that_partition,
    test_a_task_feed_reads_only_its_partition_and_its_events,
    test_a_tenants_feed_by_token_merges_its_events_of_every_partition,
    test_a_trimmed_partition_resumes_from_its_archive,
    test_after_the_projector_trimmed_every_partition_feeds_resume_from_the_archive,
    test_resuming_mid_stream_while_every_partition_grows_loses_and_repeats_nothing,
    test_the_global_feed_merges_every_partition_once_each,
    test_the_read_models_position_is_a_cursor_to_resume_from,
    three_partitions,
)
from tests.support.cluster import RedisClusterSetup, needs_redis_server, redis_cluster  # noqa: F401
from tests.support.sse import open_stream
from tests.support.waiting import async_wait_for

pytestmark = [needs_redis_server]


@pytest.fixture
def redis_conf(redis_cluster: RedisClusterSetup) -> str:  # noqa: F811
    """agentexec pointed at the cluster, with the test's key prefix as it is: with several
    partitions each partition's keys carry a hash tag of their own (set first: the settings
    refuse an untagged prefix for a cluster of one partition)."""
    ax.CONF.partitions = P
    ax.CONF.redis_url = redis_cluster.url
    return redis_cluster.url


async def test_the_hub_waits_on_each_partition_with_a_read_of_its_own(
    redis_cluster: RedisClusterSetup,  # noqa: F811
    db: Engine,
    serve: Any,
    http: httpx.AsyncClient,
) -> None:
    server = await serve(db)
    async with open_stream(http, f"{server.url}/api/events") as feed:
        append_in(1, 1)
        await feed.take(1)

        async def one_read_per_primary() -> bool:
            return all(blocked_reads([node.client]) == 1 for node in redis_cluster.nodes)

        await async_wait_for(one_read_per_primary, what="one blocking XREAD on each primary")
