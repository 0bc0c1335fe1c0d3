"""`Runtime`: the settings a call runs with, read once from `CONF` at the edge.

`ax.CONF` is the user-facing, mutable object. Code below the edge never reads it: it gets a
`Runtime` (a private snapshot of the settings, the key names, the Redis clients and the
`Broker` for them) as a parameter or attribute. The edge is `current()`: the public calls of
the facade (`ax.enqueue`, `ax.cancel`, `ax.get_result`, `ax.activity.*`, `Pipeline`, `Tracker`,
the runners) call it once per call; `Pool`, `Projector` and `router()` once when built; the CLI
builds one from `CONF`. Inside a worker process `current()` is the worker's runtime (from the
settings its pool started it with); elsewhere it is a snapshot of `CONF` as it is now, rebuilt
when a setting was assigned since (a counter comparison, not a copy, per call).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from . import cluster, config
from .config import Settings
from .connection import get_redis, get_sync_redis

if TYPE_CHECKING:
    import redis as sync_redis
    import redis.asyncio as aioredis

    from .broker import Broker
    from .partitions import Partitions
    from .streams import Keys

__all__ = ["Runtime", "current", "using"]


@dataclass(frozen=True, eq=False)
class Runtime:
    """One namespace's settings, key names, Redis clients and `Broker`."""

    settings: Settings
    """A private snapshot: never assigned to (make a new `Runtime` for other settings)."""
    partitions: Partitions
    """The namespace's partitions: `partitions.keys_of(agent_id)` names a task's keys."""

    @property
    def keys(self) -> Keys:
        """The key names of partition 0: all of them with one partition (the default)."""
        return self.partitions.keys(0)

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        """A runtime of a copy of `settings` (later assignments to `settings` do not reach it)."""
        # Imported here: `streams` imports `events`, whose `limits` imports this module.
        from .partitions import Partitions

        snapshot = settings.model_copy()
        count = snapshot.partitions
        prefix = cluster.key_prefix(snapshot.redis_url, snapshot.key_prefix, count)
        return cls(snapshot, Partitions(prefix, count))

    def redis(self) -> aioredis.Redis:
        """The asyncio client of the running event loop for these settings' Redis."""
        return get_redis(self.settings.redis_url, self.settings)

    def sync_redis(self) -> sync_redis.Redis:
        """The process's blocking client for these settings' Redis."""
        return get_sync_redis(self.settings.redis_url, self.settings)

    @cached_property
    def broker(self) -> Broker:
        from .broker import Broker

        return Broker(self)


_inside: ContextVar[Runtime | None] = ContextVar("agentexec_runtime", default=None)
_edge: tuple[int, Settings, Runtime] | None = None


def current() -> Runtime:
    """The runtime of the calling code: the worker's inside a worker (see `using`), else one
    built from `CONF` as it is now."""
    inside = _inside.get()
    if inside is not None:
        return inside
    global _edge
    edge, conf, count = _edge, config.CONF, config.assignments()
    if edge is None or edge[0] != count or edge[1] is not conf:
        edge = _edge = (count, conf, Runtime.from_settings(conf))
    return edge[2]


@contextlib.contextmanager
def using(runtime: Runtime) -> Iterator[Runtime]:
    """Make `runtime` what `current()` returns in this context (and the tasks it starts)."""
    token = _inside.set(runtime)
    try:
        yield runtime
    finally:
        _inside.reset(token)
