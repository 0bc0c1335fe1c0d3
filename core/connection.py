"""Redis clients, configured on purpose, and the reconnect policy every process loop shares.

Clients never retry a command by themselves: a blind retry of XADD after a lost reply could
append an event twice. Loops that must survive an outage use `Reconnect`, which waits with
backoff and logs once per outage rather than once per attempt.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
import weakref
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from .config import CONF

logger = logging.getLogger(__name__)

_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, aioredis.Redis]] = (
    weakref.WeakKeyDictionary()
)
_sync_clients: dict[str, redis.Redis] = {}
_announced: set[str] = set()


def redacted(url: str) -> str:
    """`url` with its password replaced by `***`, for logs."""
    password = urlsplit(url).password
    if password:
        url = url.replace(f":{password}@", ":***@", 1)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url)


def _announce(url: str) -> None:
    # Once per URL and process: which Redis a process talks to is the first thing to check
    # when a worker, projector or application does not see the others' tasks.
    if url not in _announced:
        _announced.add(url)
        logger.info("Redis at %s", redacted(url))


def client_options() -> dict[str, Any]:
    """Options shared by every client: socket timeouts above the longest blocking read."""
    return {
        "socket_timeout": CONF.block_ms / 1000 + 10,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "decode_responses": False,
    }


def get_redis(url: str | None = None) -> aioredis.Redis:
    """The asyncio client of the running event loop for `url` (default `CONF.redis_url`)."""
    url = url or CONF.redis_url
    clients = _async_clients.setdefault(asyncio.get_running_loop(), {})
    client = clients.get(url)
    if client is None:
        # A burst of calls waits for a free connection instead of failing with "Too many
        # connections" (the non-blocking pool's behaviour).
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=CONF.redis_max_connections,
            timeout=None,
            retry=AsyncRetry(NoBackoff(), 0),
            **client_options(),
        )
        client = aioredis.Redis(connection_pool=pool)
        clients[url] = client
        _announce(url)
    return client


def get_sync_redis(url: str | None = None) -> redis.Redis:
    """The blocking client for `url` (default `CONF.redis_url`), shared by the process."""
    url = url or CONF.redis_url
    client = _sync_clients.get(url)
    if client is None:
        client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **client_options())
        _sync_clients[url] = client
        _announce(url)
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
        if self._down_since is None:
            self._down_since = time.monotonic()
            logger.warning(
                "%s: Redis unreachable (%s); reconnecting with backoff", self.what, error
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


REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError)
