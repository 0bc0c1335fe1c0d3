"""Partitions: the unit the event log, the work streams and every key of a task are split by.

With `AGENTEXEC_PARTITIONS=P` above 1, agentexec keeps P event logs, and each queue has P pairs
of priority streams. Every key of a task (its log, its queue entries, result, markers, dedup
and cancel keys, locks, sessions, trackers) lives in its partition, under the partition's
Redis Cluster hash tag, so every script touches one slot, and the partitions spread over a
cluster's primaries. With P = 1 (the default, for one server) the keys are the ones a
single-log agentexec has always used.

A task's partition is written into its agent id: `of(agent_id)` reads it back, so anything
that knows an agent id (a result waiter, a cancel, a per-task feed) finds its keys with no
lookup. New ids are `place`d: a task queued by a running task (a child, a pipeline step) takes
its parent's partition, so a task tree lives in one partition; a root task with an idempotency
key or a lock key takes the partition its key hashes to (`of_text`), so that two enqueues of
one key meet in one slot; other root tasks spread at random. Changing P moves every id's
partition: drain the queues and let the projector catch up first (see docs/scaling.md).
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterator
from uuid import UUID, uuid4

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from .streams import Keys

__all__ = ["MAX_PARTITIONS", "Partitions", "hash_tag"]

MAX_PARTITIONS = 256
"""The most partitions a namespace may have: many more than a cluster has primaries."""

_LOW_BITS = (1 << 62) - 1
"""The bits below a UUID4's variant: random, so moving an id within them keeps it a UUID4."""


@functools.lru_cache(maxsize=4 * MAX_PARTITIONS)
def hash_tag(partition: int, count: int) -> str:
    """The Redis Cluster hash tag of `partition` of `count`: the first `"<partition>.<n>"`
    whose slot lies in the partition's even share of the 16384 slots, so P partitions spread
    evenly over primaries that split the slots evenly (as `redis-cli --cluster create` does)."""
    low = partition * REDIS_CLUSTER_HASH_SLOTS // count
    high = (partition + 1) * REDIS_CLUSTER_HASH_SLOTS // count
    n = 0
    while not low <= key_slot(f"{partition}.{n}".encode()) < high:
        n += 1
    return f"{partition}.{n}"


class Partitions:
    """The P partitions of one key prefix: their keys, and which partition an id is in."""

    def __init__(self, prefix: str, count: int = 1) -> None:
        if not 1 <= count <= MAX_PARTITIONS:
            raise ValueError(
                f"AGENTEXEC_PARTITIONS has value {count}; use a whole number from 1 to "
                f"{MAX_PARTITIONS} (1 for one Redis server; a few per Redis Cluster primary)."
            )
        if count > 1 and ("{" in prefix or "}" in prefix):
            raise ValueError(
                f"AGENTEXEC_KEY_PREFIX has value {prefix!r} with a hash tag, but "
                f"AGENTEXEC_PARTITIONS is {count}: a tag in the prefix would put every "
                f"partition in one slot; drop the braces (each partition gets its own tag)."
            )
        self.prefix = prefix
        self.count = count
        self._keys = [
            Keys(prefix) if count == 1 else Keys(f"{prefix}:{{{hash_tag(p, count)}}}", prefix)
            for p in range(count)
        ]

    @classmethod
    def single(cls, keys: Keys) -> Partitions:
        """One partition named by `keys` (for a reader of one partition's log)."""
        one = cls(keys.prefix)
        one._keys = [keys]
        return one

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.count))

    def __repr__(self) -> str:
        return f"Partitions({self.prefix!r}, {self.count})"

    def keys(self, partition: int) -> Keys:
        """The key names of `partition`."""
        return self._keys[partition]

    def of(self, agent_id: UUID | str) -> int:
        """The partition agent id `agent_id` lives in."""
        if self.count == 1:
            return 0
        if isinstance(agent_id, str):
            agent_id = UUID(agent_id)
        return (agent_id.int & _LOW_BITS) % self.count

    def keys_of(self, agent_id: UUID | str) -> Keys:
        """The key names of the partition `agent_id` lives in."""
        return self._keys[self.of(agent_id)]

    def of_text(self, key: str) -> int:
        """The partition a key (an idempotency key, a lock key, a tracker's batch) hashes to:
        the same in every process and every run."""
        if self.count == 1:
            return 0
        return zlib.crc32(key.encode()) % self.count

    def place(self, agent_id: UUID, partition: int) -> UUID:
        """`agent_id` moved into `partition` by changing its lowest bits only (a UUID4 stays
        one; the same id and partition always give the same result)."""
        if self.count == 1:
            return agent_id
        low = agent_id.int & _LOW_BITS
        moved = low - low % self.count + partition
        if moved > _LOW_BITS:
            moved -= self.count
        return UUID(int=agent_id.int - low + moved)

    def task_id(self, parent: UUID | None, key: str | None) -> UUID:
        """A new task's agent id: in the partition of `key` (its dedup name: an idempotency
        key) when given, else of its parent, else in a random one."""
        if key is not None:
            return self.new_id(self.of_text(key))
        return self.new_id(None if parent is None else self.of(parent))

    def new_id(self, partition: int | None = None) -> UUID:
        """A new random agent id in `partition` (a random partition when None: a UUID4's low
        bits are random already)."""
        return uuid4() if partition is None else self.place(uuid4(), partition)
