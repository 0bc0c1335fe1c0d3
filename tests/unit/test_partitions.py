"""Partitions: which partition an id or key is in, the keys of each, and how tags spread."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from redis.crc import key_slot

import agentexec as ax
from agentexec.partitions import MAX_PARTITIONS, Partitions, hash_tag
from agentexec.streams import Keys


def test_one_partition_keeps_the_single_log_keys() -> None:
    one = Partitions("app")
    assert len(one) == 1
    aid = uuid.uuid4()
    assert one.of(aid) == 0
    assert one.of_text("anything") == 0
    assert one.place(aid, 0) == aid
    keys, plain = one.keys(0), Keys("app")
    assert (keys.events, keys.queue("q", ax.Priority.HIGH), keys.result(aid)) == (
        plain.events,
        plain.queue("q", ax.Priority.HIGH),
        plain.result(aid),
    )


def test_a_placed_id_stays_a_uuid4_and_reads_back_its_partition() -> None:
    parts = Partitions("app", 7)
    for partition in range(7):
        for _ in range(200):
            aid = parts.new_id(partition)
            assert aid.version == 4 and aid.variant == uuid.RFC_4122
            assert parts.of(aid) == partition
            assert parts.of(str(aid)) == partition
    fixed = uuid.uuid5(uuid.NAMESPACE_URL, "tracker/batch")
    assert parts.place(fixed, 3) == parts.place(fixed, 3)
    assert parts.of(parts.place(fixed, 3)) == 3
    edge = uuid.UUID(int=(uuid.uuid4().int | ((1 << 62) - 1)))
    assert parts.of(parts.place(edge, 6)) == 6


def test_task_ids_follow_their_key_then_their_parent() -> None:
    parts = Partitions("app", 5)
    parent = parts.new_id(2)
    assert {parts.of(parts.task_id(parent, None)) for _ in range(50)} == {2}
    keyed = parts.of_text("key:order-42")
    assert {parts.of(parts.task_id(parent, "key:order-42")) for _ in range(50)} == {keyed}
    assert Partitions("other", 5).of_text("key:order-42") == keyed  # stable, not hash()
    spread = Counter(parts.of(parts.task_id(None, None)) for _ in range(5000))
    assert set(spread) == set(range(5)) and min(spread.values()) > 800


@pytest.mark.parametrize("count", [2, 3, 4, 6, 16])
def test_each_partition_gets_a_tag_in_its_even_share_of_slots(count: int) -> None:
    parts = Partitions("app", count)
    for partition in range(count):
        keys = parts.keys(partition)
        slots = {
            key_slot(k.encode())
            for k in (
                keys.events,
                keys.queue("q", ax.Priority.LOW),
                keys.result(uuid.uuid4()),
                keys.tracker("t", "b"),
                keys.session_items(uuid.uuid4()),
                keys.dead_letters,
            )
        }
        assert len(slots) == 1, "every key of a partition is in one slot"
        (slot,) = slots
        assert partition * 16384 // count <= slot < (partition + 1) * 16384 // count
        assert keys.cancel_channel == "app:cancel"  # channels are shared by all partitions
    assert hash_tag(MAX_PARTITIONS - 1, MAX_PARTITIONS)


def test_bad_counts_and_tagged_prefixes_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="AGENTEXEC_PARTITIONS has value 0"):
        Partitions("app", 0)
    with pytest.raises(ValueError, match=f"from 1 to {MAX_PARTITIONS}"):
        Partitions("app", MAX_PARTITIONS + 1)
    with pytest.raises(ValueError, match="drop the braces"):
        Partitions("{app}", 3)
    with pytest.raises(ValueError, match="drop the braces"):
        ax.Settings(key_prefix="{app}", partitions=3)


def test_a_cluster_with_partitions_keeps_the_plain_default_prefix() -> None:
    settings = ax.Settings(redis_url="redis+cluster://127.0.0.1:7000", partitions=3)
    runtime = ax.runtime.Runtime.from_settings(settings)
    assert runtime.partitions.prefix == "agentexec"
    single = ax.runtime.Runtime.from_settings(
        ax.Settings(redis_url="redis+cluster://127.0.0.1:7000")
    )
    assert single.partitions.prefix == "{agentexec}"


def test_a_cluster_needs_connections_for_a_blocking_read_per_partition() -> None:
    url = "redis+cluster://127.0.0.1:7000"
    with pytest.raises(ValueError) as refused:
        ax.Settings(redis_url=url, partitions=40, redis_max_connections=64)
    assert "AGENTEXEC_REDIS_MAX_CONNECTIONS has value 64" in str(refused.value)
    assert "AGENTEXEC_PARTITIONS=40" in str(refused.value) and "at least 88" in str(refused.value)
    assert ax.Settings(redis_url=url, partitions=40, redis_max_connections=88).partitions == 40
    # One server: a worker makes one blocking read over every partition.
    assert ax.Settings(partitions=40, redis_max_connections=64).partitions == 40
