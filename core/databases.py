"""SQL databases given as URLs or engines, sync or async.

The projector, the API and the CLI read and write the read model through a sync `Engine`.
An application that only has an `AsyncEngine` or an async URL (`sqlite+aiosqlite:///...`,
`postgresql+asyncpg://...`) gives that; they open its sync twin: the same database through
the sync driver of the same family (`sync_url`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy import URL, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["SYNC_DRIVERS", "create_sync_engine", "is_async_engine", "sync_engine", "sync_url"]

SYNC_DRIVERS = {
    "sqlite+aiosqlite": "sqlite",
    "postgresql+asyncpg": "postgresql+psycopg",
    "postgresql+psycopg_async": "postgresql+psycopg",
    "mysql+aiomysql": "mysql+pymysql",
    "mysql+asyncmy": "mysql+pymysql",
}
"""The sync driver that reaches the database of each async one. `postgresql+psycopg` serves
both (psycopg 3 is sync and async), so its URLs stay as they are."""

_QUERY_RENAMES = {"postgresql+asyncpg": {"ssl": "sslmode"}}
"""URL options the async driver spells differently from its sync twin."""


def sync_url(url: str | URL) -> URL:
    """`url` with its async driver replaced by the sync one of `SYNC_DRIVERS` (a sync URL is
    returned as it is). Raises `ConfigurationError` for a URL SQLAlchemy cannot parse, and for
    an in-memory SQLite database, which only the engine that made it can see."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise ConfigurationError(
            f"database URL {_shown(url)!r} is not a SQLAlchemy URL ({e}); use e.g. "
            "sqlite:///agents.db or postgresql+psycopg://user@host/db"
        ) from e
    driver = parsed.drivername
    if driver not in SYNC_DRIVERS:
        return parsed
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigurationError(
            f"database URL {_shown(parsed)!r} is an in-memory SQLite database, which only its "
            "own engine sees: the projector needs to reach it too. Use a file, e.g. "
            "sqlite+aiosqlite:///agents.db"
        )
    query = dict(parsed.query)
    for old, new in _QUERY_RENAMES.get(driver, {}).items():
        if old in query and new not in query:
            query[new] = query.pop(old)
    return parsed.set(drivername=SYNC_DRIVERS[driver], query=query)


def is_async_engine(value: object) -> bool:
    """True for a SQLAlchemy `AsyncEngine` (told apart without importing SQLAlchemy's asyncio
    extension, which needs greenlet: whoever made one has imported it)."""
    extension = sys.modules.get("sqlalchemy.ext.asyncio")
    return extension is not None and isinstance(value, extension.AsyncEngine)


def create_sync_engine(url: str | URL, **kwargs: Any) -> Engine:
    """A sync `Engine` on the database of `url`, sync or async (see `sync_url`); `kwargs` go
    to `create_engine`. Raises `ConfigurationError` when the sync driver is not installed."""
    from sqlalchemy import create_engine

    target = sync_url(url)
    try:
        return create_engine(target, **kwargs)
    except ModuleNotFoundError as e:
        raise ConfigurationError(
            f"database URL {_shown(url)!r} needs the driver {target.drivername!r} here "
            f"({e}); install it, e.g. `pip install agentexec[postgres]` for PostgreSQL"
        ) from e


def sync_engine(engine: Engine | AsyncEngine, **kwargs: Any) -> Engine:
    """`engine` itself when it is a sync `Engine`; for an `AsyncEngine`, a new sync `Engine`
    on its database (`create_sync_engine`, `kwargs` to `create_engine`), which the caller
    disposes of. Raises `ConfigurationError` for anything else."""
    from sqlalchemy import Engine

    if isinstance(engine, Engine):
        return engine
    if is_async_engine(engine):
        return create_sync_engine(engine.url.render_as_string(hide_password=False), **kwargs)
    raise ConfigurationError(
        f"got a {type(engine).__name__} where a SQLAlchemy engine was expected; pass "
        "create_engine(...) or create_async_engine(...), or a database URL."
    )


def _shown(url: object) -> str:
    from .credentials import redact_url

    return redact_url(str(url))  # a URL object's str() hides its password already
