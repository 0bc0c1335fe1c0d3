"""Redis Cluster: the URL form that names one, its clients, and the key prefix it needs.

`redis+cluster://[[user]:password@]host[:port][,host[:port]...][/]` lists some of the
cluster's nodes (port 6379 when left out); the clients learn the rest, and which node serves
which slot, from them. `rediss+cluster://` speaks TLS. A cluster has only database 0.

Every key agentexec uses must live in one hash slot, since its scripts touch several keys at
once: the key prefix carries a hash tag (`{agentexec}` by default with a cluster URL, see
`key_prefix`). One slot means one primary serves all of agentexec's keys: a cluster gives high
availability through its replicas and failover, and more throughput than one server only with
`AGENTEXEC_PARTITIONS` above 1, where each partition has a tag of its own (see
`agentexec.partitions`).
Redirections (MOVED, ASK) are followed by the clients; a cluster that is down or resharding
is an outage like any other (see `agentexec.connection.REDIS_ERRORS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio.cluster as aiocluster
import redis.cluster

from .credentials import redact_url
from .hosts import split_hosts

SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
"""URL schemes that select Redis Cluster, and whether each speaks TLS."""
DEFAULT_PORT = 6379
DEFAULT_PREFIX = "agentexec"
"""The settings' default key prefix: with a cluster URL it becomes `{agentexec}`."""
_FORM = "redis+cluster://[[user]:password@]host[:port][,host[:port]...]"
_TAGGED = re.compile(r"[^{}]*\{[^{}]+\}[^{}]*")


@dataclass(frozen=True)
class ClusterURL:
    """The parts of a `redis+cluster://` URL."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    ssl: bool = False


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SCHEMES


def _bad(url: str, why: str) -> ValueError:
    return ValueError(f"Redis URL {redact_url(url)!r}: {why}; use the form {_FORM}")


def parse(url: str) -> ClusterURL:
    """The parts of `url`; `ValueError` naming what is wrong (never the password)."""
    found = split_hosts(url, SCHEMES, DEFAULT_PORT, "node", _bad)
    if found.parts.path.strip("/") not in ("", "0"):
        raise _bad(url, f"path {found.parts.path!r}: a cluster has only database 0")
    if found.parts.query:
        raise _bad(url, f"unknown parameters {found.parts.query!r} (a cluster URL takes none)")
    return ClusterURL(
        nodes=found.addresses,
        username=found.username,
        password=found.password,
        ssl=SCHEMES[found.scheme],
    )


def key_prefix(url: str, prefix: str, partitions: int = 1) -> str:
    """The key prefix to use with Redis at `url` for the configured `prefix`: `prefix` itself,
    except that a cluster with one partition needs a hash tag in it (`{name}`), which the
    default prefix gets; `ValueError` with the fix for any other prefix without one. (With
    several partitions each partition's keys carry a tag of their own.)"""
    if not is_cluster_url(url) or partitions > 1 or _TAGGED.fullmatch(prefix):
        return prefix
    if prefix == DEFAULT_PREFIX:
        return f"{{{DEFAULT_PREFIX}}}"
    raise ValueError(
        f"AGENTEXEC_KEY_PREFIX has value {prefix!r}, but AGENTEXEC_REDIS_URL names a Redis "
        f"Cluster, where all of agentexec's keys must share one hash slot; put the name in "
        f"braces, e.g. AGENTEXEC_KEY_PREFIX={{{prefix}}}"
    )


def _options(parsed: ClusterURL, options: dict[str, Any]) -> dict[str, Any]:
    out = dict(options, username=parsed.username, password=parsed.password)
    if parsed.ssl:
        out["ssl"] = True
    return out


_holding: contextvars.ContextVar[bool] = contextvars.ContextVar("holding", default=False)
"""Whether the running task holds one of its cluster client's permits (a command sent from
within a command, or a pipeline, takes no second one: no deadlock on the last permits)."""


class _Cluster(aiocluster.RedisCluster):
    """redis-py's asyncio cluster client, with two mends for many concurrent commands:

    - A burst waits for a free connection instead of failing: the nodes' pools raise
      `MaxConnectionsError` at once when full (redis/redis-py#3135), where the plain client's
      `BlockingConnectionPool` waits. At most `max_connections` commands and pipelines are
      in flight, so no node's pool, which holds as many, is ever full. (Pub/sub connections
      are apart from the pools.)
    - No command is sent before the map of the slots is loaded: redis-py routes one that
      comes while another loads it (the client's first commands, and after it closed its
      connections on a redirection or a failover) to a random node. Each is then MOVED,
      and every fifth MOVED makes the client close every connection, also those of the
      commands in flight, which fail, and so on: 200 feeds opened at once failed that way.
    """

    def __init__(self, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections, **kwargs)
        self._permits = asyncio.Semaphore(max_connections)

    @contextlib.asynccontextmanager
    async def _permit(self) -> AsyncIterator[None]:
        if _holding.get():
            yield
            return
        async with self._permits:
            token = _holding.set(True)
            try:
                await self.initialize()  # when due, one at a time: the others wait for it
                yield
            finally:
                _holding.reset(token)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self._permit():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused, as redis-py words it
        # As redis-py's own `pipeline()` makes one; its typing marks `_event_dispatcher` abstract.
        return _Pipeline(self, transaction)  # type: ignore[abstract]


class _Pipeline(aiocluster.ClusterPipeline):
    """A pipeline that holds one of its client's permits while it runs: it takes at most one
    connection of each node it sends to."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        client = self.cluster_client
        assert isinstance(client, _Cluster)
        async with client._permit():
            return await super().execute(raise_on_error, allow_redirections)


def async_client(
    url: str, *, max_connections: int, options: dict[str, Any]
) -> aiocluster.RedisCluster:
    """An asyncio cluster client for `url` (`options` as for a plain URL, including `retry`:
    no blind retries, also not of the cluster client's own) that waits for a free connection
    when `max_connections` commands are in flight."""
    parsed = parse(url)
    return _Cluster(
        startup_nodes=[aiocluster.ClusterNode(host, port) for host, port in parsed.nodes],
        max_connections=max_connections,
        **_options(parsed, options),
    )


def sync_client(url: str, *, options: dict[str, Any]) -> redis.cluster.RedisCluster:
    """A blocking cluster client for `url`. It asks the nodes for the slots as it is made:
    `redis.ConnectionError` (an outage) when none of them answers."""
    parsed = parse(url)
    try:
        return redis.cluster.RedisCluster(
            startup_nodes=[
                redis.cluster.ClusterNode(host, port)  # type: ignore[no-untyped-call]
                for host, port in parsed.nodes
            ],
            **_options(parsed, options),
        )
    except redis.exceptions.RedisClusterException as e:
        raise redis.ConnectionError(f"Redis Cluster at {redact_url(url)}: {e}") from e


async def refresh_slots(client: aiocluster.RedisCluster) -> None:
    """Have `client` ask the nodes for the slots again (after a redirection, or a node lost);
    a failure is left to the next command to report."""
    try:
        await client.nodes_manager.initialize()
    except Exception:  # the next command reports the outage
        pass
