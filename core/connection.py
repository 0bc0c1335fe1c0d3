"""Redis clients, configured on purpose, and the reconnect policy every process loop shares.

Clients never retry a command by themselves: a blind retry of XADD after a lost reply could
append an event twice. Loops that must survive an outage use `Reconnect`, which waits with
backoff and logs once per outage rather than once per attempt, and background loops run
under `supervise`, which turns any exception of an iteration into such an outage, so that no
loop dies of an error the client library raises (redis-py's reconnect paths raise more than
`ConnectionError`). `check_eviction_policy` refuses a server that may evict the log.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Collection, Coroutine
from typing import TYPE_CHECKING, Any, cast

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import cluster, sentinel
from .credentials import redact_url
from .errors import ConfigurationError

if TYPE_CHECKING:
    from .config import Settings

logger = logging.getLogger(__name__)

_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, aioredis.Redis]] = (
    weakref.WeakKeyDictionary()
)
_sync_clients: dict[str, redis.Redis] = {}
_announced: set[str] = set()


def redacted(url: str) -> str:
    """`url` with its passwords replaced by `***`, for logs."""
    return redact_url(url)


def _announce(url: str) -> None:
    # Once per URL and process: which Redis a process talks to is the first thing to check
    # when a worker, projector or application does not see the others' tasks.
    if url not in _announced:
        _announced.add(url)
        logger.info("Redis at %s", redacted(url))


def _edge_settings() -> Settings:
    # Callers that name no settings (scripts, tests) get the edge's: see `agentexec.runtime`.
    from .runtime import current

    return current().settings


def client_options(settings: Settings) -> dict[str, Any]:
    """Options shared by every client: socket timeouts above the longest blocking read."""
    return {
        "socket_timeout": settings.block_ms / 1000 + 10,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "decode_responses": False,
    }


def get_redis(url: str | None = None, settings: Settings | None = None) -> aioredis.Redis:
    """The asyncio client of the running event loop for `url` (default the settings'
    `redis_url`), made with `settings` (default the edge's, `agentexec.runtime.current()`)."""
    if url is None or settings is None:
        settings = settings or _edge_settings()
        url = url or settings.redis_url
    clients = _async_clients.setdefault(asyncio.get_running_loop(), {})
    client = clients.get(url)
    if client is None:
        options = dict(client_options(settings), retry=AsyncRetry(NoBackoff(), 0))
        if sentinel.is_sentinel_url(url):
            client = sentinel.async_client(
                url, max_connections=settings.redis_max_connections, options=options
            )
        elif cluster.is_cluster_url(url):
            # Duck-typed: every command agentexec sends exists on both clients (see
            # `agentexec.cluster` for what differs: the batcher and the eviction check).
            client = cast(
                aioredis.Redis,
                cluster.async_client(
                    url, max_connections=settings.redis_max_connections, options=options
                ),
            )
        else:
            # A burst of calls waits for a free connection instead of failing with "Too many
            # connections" (the non-blocking pool's behaviour).
            pool = aioredis.BlockingConnectionPool.from_url(
                url, max_connections=settings.redis_max_connections, timeout=None, **options
            )
            client = aioredis.Redis(connection_pool=pool)
        clients[url] = client
        _announce(url)
    return client


def get_sync_redis(url: str | None = None, settings: Settings | None = None) -> redis.Redis:
    """The blocking client for `url`, shared by the process (defaults as `get_redis`)."""
    if url is None or settings is None:
        settings = settings or _edge_settings()
        url = url or settings.redis_url
    client = _sync_clients.get(url)
    if client is None:
        options = dict(client_options(settings), retry=Retry(NoBackoff(), 0))
        if sentinel.is_sentinel_url(url):
            client = sentinel.sync_client(url, options=options)
        elif cluster.is_cluster_url(url):
            client = cast(redis.Redis, cluster.sync_client(url, options=options))
        else:
            client = redis.Redis.from_url(url, **options)
        _sync_clients[url] = client
        _announce(url)
    return client


async def ready(client: aioredis.Redis) -> aioredis.Redis:
    """`client`, with its map of a Redis Cluster's slots loaded afresh (other clients need
    nothing): a cluster pub/sub picks its node from that map, by its first channel's slot;
    redis-py fails with a KeyError when the map was not loaded yet, and after a failover only a
    reload names the new primary (pub/sub commands do not follow MOVED, so a listener that
    reconnects with the old map retries the dead primary for as long as nothing else in the
    process reloads it). Called before each pub/sub connection is made."""
    cluster_client: Any = client
    if isinstance(cluster_client, aiocluster.RedisCluster):
        await cluster_client.initialize()  # the first load (once per client)
        await cluster.refresh_slots(cluster_client)
    return client


async def close_redis(*, sync: bool = True) -> None:
    """Close the clients of the running loop (and, with `sync`, the process's blocking ones,
    which other threads may be using): call before the loop ends."""
    clients = _async_clients.pop(asyncio.get_running_loop(), {})
    for client in clients.values():
        await client.aclose()
    if sync:
        reset_sync_clients()


def reset_sync_clients() -> None:
    for client in _sync_clients.values():
        client.close()
    _sync_clients.clear()


class Reconnect:
    """Backoff for a loop that must outlive Redis outages.

    Call `await failed(error)` after a connection error and `succeeded()` after a good round
    trip; the first failure of an outage is logged at WARNING, recovery at INFO.
    """

    def __init__(self, what: str, *, initial: float = 0.05, maximum: float = 5.0) -> None:
        self.what = what
        self.initial = initial
        self.maximum = maximum
        self._delay = initial
        self._down_since: float | None = None

    @property
    def down(self) -> bool:
        return self._down_since is not None

    async def failed(self, error: BaseException) -> None:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # The client turned our cancellation into another error (a read's timeout firing
            # with the cancel): stop as asked instead of looping on.
            raise asyncio.CancelledError from error
        if self._down_since is None:
            self._down_since = time.monotonic()
            # A known outage needs no traceback; anything else does, once.
            logger.warning(
                "%s: %s; retrying with backoff",
                self.what,
                describe(error),
                exc_info=None if isinstance(error, REDIS_ERRORS) else error,
            )
        await asyncio.sleep(self._delay * random.uniform(0.5, 1.0))
        self._delay = min(self._delay * 2, self.maximum)

    def succeeded(self) -> None:
        if self._down_since is not None:
            logger.info(
                "%s: Redis is back after %.1fs", self.what, time.monotonic() - self._down_since
            )
            self._down_since = None
        self._delay = self.initial


REDIS_ERRORS = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.AskError,
    redis.exceptions.RedisClusterException,
)
"""Errors that mean Redis cannot serve us for now: unreachable, too slow, out of memory (with
`maxmemory-policy noeviction` it refuses writes until memory is freed), or a replica (a former
primary demoted by a failover refuses writes). Sentinel's "no primary found"
(`MasterNotFoundError`, during a failover) is a `ConnectionError`. A Redis Cluster that is
down, resharding or failing over answers CLUSTERDOWN, TRYAGAIN, MOVED or ASK (`AskError` covers
`MovedError`) when its client could not follow the redirection in time; its client raises
`RedisClusterException` when no node tells it the slots (or one is not covered). Callers
wait them out like any outage; none of them means the command ran."""


def describe(error: BaseException) -> str:
    """What an outage error means, with the fix when there is one."""
    if isinstance(error, redis.exceptions.OutOfMemoryError):
        return (
            f"Redis is out of memory and refuses writes ({error}); free memory or raise "
            "maxmemory (redis-cli CONFIG SET maxmemory <bytes>)"
        )
    if isinstance(error, redis.exceptions.ReadOnlyError):
        return (
            f"Redis is a read-only replica ({error}); point AGENTEXEC_REDIS_URL at the primary, "
            "or at its Sentinels (redis+sentinel://...) to follow failovers"
        )
    if isinstance(error, REDIS_ERRORS):
        return f"Redis unreachable ({error})"
    return f"unexpected error from the Redis client ({type(error).__name__}: {error})"


async def supervise(
    reconnect: Reconnect,
    step: Callable[[], Awaitable[object]],
    *,
    until: asyncio.Event | None = None,
) -> None:
    """Run `step` again and again until `until` is set (forever when None).

    Any exception `step` raises is an outage: logged once (with its traceback unless it is a
    known outage error), then `step` runs again after a backoff. A step that returns counts as
    a good round trip. Only cancellation ends the loop early.
    """
    while until is None or not until.is_set():
        try:
            await step()
        except Exception as e:
            await reconnect.failed(e)
        else:
            reconnect.succeeded()
        stop_if_cancelled()


async def cancel_all(
    tasks: Collection[asyncio.Task[Any]], timeout: float
) -> set[asyncio.Task[Any]]:
    """Cancel `tasks` and wait up to `timeout` seconds for them to end, cancelling again each
    second those still running (a cancel the client library swallowed is sent anew); the
    tasks that did not end."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = {task for task in tasks if not task.done()}
    while pending and (left := deadline - loop.time()) > 0:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(1.0, left))
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: an error on the way out is not logged as lost
    return pending


def stop_if_cancelled() -> None:
    """Raise `CancelledError` when the current task was asked to stop, also when the client
    library swallowed the `CancelledError` it was sent (redis-py has done so around its
    timeouts: a loop cancelled inside a command then ran on for good)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


_background: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, object], what: str) -> asyncio.Task[Any]:
    """Start `coro` as a task that is kept alive until it ends and whose exception, if any,
    is logged with its traceback (never "Task exception was never retrieved")."""
    task = asyncio.get_running_loop().create_task(coro)
    _background.add(task)

    def done(task: asyncio.Task[Any]) -> None:
        _background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s failed", what, exc_info=task.exception())

    task.add_done_callback(done)
    return task


NOEVICTION = "noeviction"


def _policy_problem(reply: Any) -> str | None:
    """Why a `CONFIG GET maxmemory-policy` reply is not acceptable, or None."""
    values = list(reply.values()) if isinstance(reply, dict) else []
    if not values:
        return None
    policy = values[0].decode() if isinstance(values[0], bytes) else str(values[0])
    if policy == NOEVICTION:
        return None
    return (
        f"Redis has maxmemory-policy {policy!r}: it may evict the event log, queued tasks and "
        "leases when memory runs out, losing tasks and history. Run it with "
        f"`redis-cli CONFIG SET maxmemory-policy {NOEVICTION}` (and `maxmemory-policy "
        f"{NOEVICTION}` in redis.conf), or set AGENTEXEC_ALLOW_EVICTION=1 to run anyway"
    )


def _judge(what: str, reply: Any, allow_eviction: bool) -> None:
    problem = _policy_problem(reply)
    if problem is None:
        return
    if allow_eviction:
        logger.warning("%s: %s (allowed by AGENTEXEC_ALLOW_EVICTION)", what, problem)
        return
    raise ConfigurationError(f"{what}: {problem}.")


def _unchecked(what: str, error: Exception) -> None:
    logger.warning(
        "%s: could not check Redis's maxmemory-policy (%s); make sure it is %r",
        what,
        error,
        NOEVICTION,
    )


_checked: set[str] = set()


def _is_cluster(client: Any) -> bool:
    return isinstance(client, (redis.cluster.RedisCluster, aiocluster.RedisCluster))


def _judge_all(what: str, replies: dict[str, Any], allow_eviction: bool) -> None:
    """`_judge` each reply: {"": the server's} or, on a Redis Cluster, {node: its reply} for
    every primary (each holds slots: any one of them may come to hold agentexec's)."""
    for node, reply in sorted(replies.items()):
        _judge(f"{what} (Redis Cluster node {node})" if node else what, reply, allow_eviction)


async def check_eviction_policy(client: aioredis.Redis, what: str, *, allow_eviction: bool) -> None:
    """Raise `ConfigurationError` unless Redis runs with `maxmemory-policy noeviction`
    (a warning instead with `AGENTEXEC_ALLOW_EVICTION`); on a Redis Cluster, every primary.
    Checked once per URL and process; a server that refuses CONFIG (managed services often
    do) is logged as unchecked. Lets connection errors through: callers decide how to wait
    for Redis."""
    cluster_client: Any = client
    if _is_cluster(cluster_client):
        key = repr(cluster_client.get_default_node())
    else:
        pool = client.connection_pool
        # A Sentinel pool's repr names only its service: add the Sentinels' addresses.
        key = repr(pool) + repr(getattr(pool, "sentinel_manager", ""))
    if key in _checked:
        return
    try:
        if _is_cluster(cluster_client):
            replies = {
                node.name: await cluster_client.config_get("maxmemory-policy", target_nodes=node)
                for node in cluster_client.get_primaries()
            }
        else:
            replies = {"": await client.config_get("maxmemory-policy")}
    except redis.ResponseError as e:
        _unchecked(what, e)
    else:
        _judge_all(what, replies, allow_eviction)
    _checked.add(key)


def check_eviction_policy_at_start(what: str, settings: Settings) -> None:
    """`check_eviction_policy` for a process starting with `settings` (blocking): a Redis that
    cannot be reached now is logged as unchecked, since the process waits for it anyway."""
    try:
        client: Any = get_sync_redis(settings.redis_url, settings)
        if _is_cluster(client):
            replies = {
                node.name: client.config_get("maxmemory-policy", target_nodes=node)
                for node in client.get_primaries()
            }
        else:
            replies = {"": client.config_get("maxmemory-policy")}
    except (*REDIS_ERRORS, redis.ResponseError) as e:
        _unchecked(what, e)
        return
    _judge_all(what, replies, settings.allow_eviction)
