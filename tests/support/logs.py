"""Reading the event log as the tests see it: every partition's entries, whatever
`ax.CONF.partitions` is (one log with one partition, the default; P logs in cluster mode, see
tests/support/topology.py)."""

from __future__ import annotations

from typing import Any

from agentexec import runtime
from agentexec.connection import get_redis, get_sync_redis
from agentexec.streams import Keys


def _order(entry: tuple[Any, Any]) -> tuple[int, int]:
    raw = entry[0].decode() if isinstance(entry[0], bytes) else str(entry[0])
    ms, _, seq = raw.partition("-")
    return int(ms), int(seq or 0)


def partition_keys() -> list[Keys]:
    """The key names of each partition of the test's namespace."""
    partitions = runtime.current().partitions
    return [partitions.keys(p) for p in partitions]


def event_logs() -> list[str]:
    """The log stream of each partition (one name with one partition)."""
    return [keys.events for keys in partition_keys()]


async def log_entries() -> list[tuple[Any, Any]]:
    """XRANGE of every partition's log, merged in id order (time order across partitions;
    with one partition exactly the single log's XRANGE)."""
    client = get_redis()
    entries = [entry for log in event_logs() for entry in await client.xrange(log)]
    return sorted(entries, key=_order)


def log_entries_sync() -> list[tuple[Any, Any]]:
    """`log_entries` with the blocking client."""
    client = get_sync_redis()
    entries = [entry for log in event_logs() for entry in client.xrange(log)]
    return sorted(entries, key=_order)


async def log_length() -> int:
    """The entries of every partition's log."""
    client = get_redis()
    return sum([await client.xlen(log) for log in event_logs()])


def keys_of(agent_id: Any) -> Keys:
    """The key names of the partition `agent_id` lives in (every key of that task)."""
    return runtime.current().partitions.keys_of(agent_id)
