"""The projector with AGENTEXEC_PARTITIONS=3 on a 3-primary Redis Cluster: one partition's
log on each primary, each projected exactly, with its own checkpoint and owner."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

import agentexec as ax
from agentexec.activity.models import ActivityLog, ArchivedEvent
from agentexec.connection import close_redis
from agentexec.projector import Projector
from agentexec.projector.rebuild import rebuild
from agentexec.runtime import current
from tests.support.cluster import RedisClusterSetup, needs_redis_server, redis_cluster  # noqa: F401

from .conftest import sqlite_engine
from .test_partitions import P, append, checkpoints, placed
from .workload import snapshot, traffic

pytestmark = [needs_redis_server, pytest.mark.timeout(120)]


async def test_three_partitions_on_three_primaries(
    redis_cluster: RedisClusterSetup,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    ax.CONF.partitions = P  # first: a cluster refuses a prefix with no tag of one partition
    ax.CONF.redis_url = redis_cluster.url
    monkeypatch.setenv("AGENTEXEC_PARTITIONS", str(P))
    partitions = current().partitions
    engine = sqlite_engine(tmp_path / "agents.db")
    try:
        evs = placed(traffic(600, seed=13), partitions)
        last = append(evs, partitions)
        projector = Projector(engine, batch_size=100, lease_seconds=5)
        assert await projector.catch_up() == len(evs)

        assert checkpoints(engine, partitions) == last
        with engine.connect() as conn:
            for model in (ArchivedEvent, ActivityLog):
                assert conn.execute(select(func.count()).select_from(model)).scalar() == len(evs)
        served = {
            redis_cluster.node_of_slot(redis.crc.key_slot(partitions.keys(p).events.encode()))
            for p in partitions
        }
        assert len(served) == P, "one partition's log on each primary"
        live = snapshot(engine, checkpoint=True)
        await rebuild(engine)
        assert snapshot(engine, checkpoint=True) == live
    finally:
        await close_redis()
        engine.dispose()
