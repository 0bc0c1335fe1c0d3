"""Redis behind Sentinel: the URL form that names it, and clients that follow its primary.

`redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]` lists the
Sentinels (port 26379 when left out) and names the monitored service; the user and password
are the Redis servers'. Sentinels that require a password of their own take it as the query
parameters `sentinel_username` and `sentinel_password`. `rediss+sentinel://` speaks TLS to the
servers and the Sentinels. Every connection a client opens asks the Sentinels for the current
primary, so that after a failover reconnects go to the new one; the outage in between is
handled as any other (see `agentexec.connection.REDIS_ERRORS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.sentinel import Sentinel

from .credentials import redact_url
from .hosts import split_hosts

SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
"""URL schemes that select Sentinel, and whether each speaks TLS."""
DEFAULT_PORT = 26379
SENTINEL_TIMEOUT = 5.0
"""Seconds a question to one Sentinel may take before the next one is asked."""
_QUERY = ("sentinel_username", "sentinel_password")
_FORM = "redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]"


@dataclass(frozen=True)
class SentinelURL:
    """The parts of a `redis+sentinel://` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False


def is_sentinel_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SCHEMES


def _bad(url: str, why: str) -> ValueError:
    return ValueError(f"Redis URL {redact_url(url)!r}: {why}; use the form {_FORM}")


def parse(url: str) -> SentinelURL:
    """The parts of `url`; `ValueError` naming what is wrong (never the password)."""
    found = split_hosts(url, SCHEMES, DEFAULT_PORT, "Sentinel", _bad)
    parts = found.parts
    path = [segment for segment in parts.path.split("/") if segment]
    if not path or len(path) > 2:
        raise _bad(url, "the path must be the service name and, optionally, the database")
    service = unquote(path[0])
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise _bad(url, f"database {path[1]!r} is not a number")
        db = int(path[1])
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(_QUERY))
    if unknown:
        raise _bad(url, f"unknown parameter {unknown[0]!r} (known: {', '.join(_QUERY)})")
    return SentinelURL(
        sentinels=found.addresses,
        service=service,
        db=db,
        username=found.username,
        password=found.password,
        sentinel_username=query.get("sentinel_username", [None])[-1],
        sentinel_password=query.get("sentinel_password", [None])[-1],
        ssl=SCHEMES[found.scheme],
    )


def _sentinel_options(parsed: SentinelURL, options: dict[str, Any]) -> dict[str, Any]:
    # Not the data connections' socket timeout, which outlasts the longest blocking read: a
    # Sentinel that does not answer within seconds is skipped for the next one.
    out: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT,
        "socket_connect_timeout": min(options.get("socket_connect_timeout", 5), SENTINEL_TIMEOUT),
        "socket_keepalive": options.get("socket_keepalive", False),
        "retry": options["retry"],
    }
    if parsed.sentinel_username:
        out["username"] = parsed.sentinel_username
    if parsed.sentinel_password:
        out["password"] = parsed.sentinel_password
    if parsed.ssl:
        out["ssl"] = True
    return out


def _server_options(parsed: SentinelURL, options: dict[str, Any]) -> dict[str, Any]:
    out = dict(options, db=parsed.db, username=parsed.username, password=parsed.password)
    if parsed.ssl:
        out["ssl"] = True
    return out


class _BlockingSentinelPool(AsyncSentinelPool, aioredis.BlockingConnectionPool):
    """A Sentinel pool that makes a burst of callers wait for a free connection, like the
    blocking pool of a plain URL, instead of failing with "Too many connections"."""


def async_client(url: str, *, max_connections: int, options: dict[str, Any]) -> aioredis.Redis:
    """An asyncio client of the primary of `url`'s service (`options` as for a plain URL,
    including `retry`)."""
    parsed = parse(url)
    sentinel = AsyncSentinel(  # type: ignore[no-untyped-call]
        list(parsed.sentinels), sentinel_kwargs=_sentinel_options(parsed, options)
    )
    client: aioredis.Redis = sentinel.master_for(
        parsed.service,
        connection_pool_class=_BlockingSentinelPool,
        max_connections=max_connections,
        timeout=None,
        **_server_options(parsed, options),
    )
    return client


def sync_client(url: str, *, options: dict[str, Any]) -> redis.Redis:
    """A blocking client of the primary of `url`'s service."""
    parsed = parse(url)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(parsed.sentinels), sentinel_kwargs=_sentinel_options(parsed, options)
    )
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        parsed.service, **_server_options(parsed, options)
    )
    return client
