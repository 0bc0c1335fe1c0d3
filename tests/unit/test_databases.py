"""Async database URLs and engines map to their sync twins on the same database, and the
ones no twin can reach are refused with the fix."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

import agentexec as ax
from agentexec.databases import create_sync_engine, is_async_engine, sync_engine, sync_url
from agentexec.errors import ConfigurationError


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite+aiosqlite:///agents.db", "sqlite:///agents.db"),
        ("sqlite+aiosqlite:////var/lib/agents.db", "sqlite:////var/lib/agents.db"),
        (
            "postgresql+asyncpg://app:secret@db:5432/agents",
            "postgresql+psycopg://app:secret@db:5432/agents",
        ),
        (
            "postgresql+asyncpg://app@db/agents?ssl=require",
            "postgresql+psycopg://app@db/agents?sslmode=require",
        ),
        ("postgresql+psycopg_async://app@db/agents", "postgresql+psycopg://app@db/agents"),
        ("mysql+aiomysql://app@db/agents", "mysql+pymysql://app@db/agents"),
        # Sync URLs, and psycopg's (sync and async alike), stay as they are.
        ("postgresql+psycopg://app@db/agents", "postgresql+psycopg://app@db/agents"),
        ("sqlite:///agents.db", "sqlite:///agents.db"),
        ("sqlite://", "sqlite://"),
    ],
)
def test_sync_url_names_the_sync_driver_of_the_same_database(given: str, expected: str) -> None:
    assert sync_url(given).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize("url", ["sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:"])
def test_an_async_in_memory_sqlite_database_is_refused_with_the_fix(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"in-memory SQLite.*sqlite\+aiosqlite:///agents"):
        sync_url(url)


def test_a_url_sqlalchemy_cannot_parse_is_named_with_its_password_hidden() -> None:
    with pytest.raises(ConfigurationError, match=r"not a SQLAlchemy URL") as caught:
        sync_url("not a url://app:hunter2@db")
    assert "hunter2" not in str(caught.value)


async def test_an_async_engine_gets_a_sync_engine_on_its_database(tmp_path: Path) -> None:
    database = tmp_path / "agents.db"
    with create_engine(f"sqlite:///{database}").begin() as conn:
        conn.execute(text("CREATE TABLE marks (n INTEGER)"))
        conn.execute(text("INSERT INTO marks VALUES (7)"))
    async_engine = create_async_engine(f"sqlite+aiosqlite:///{database}")
    try:
        assert is_async_engine(async_engine)
        twin = sync_engine(async_engine)
        try:
            assert not is_async_engine(twin)
            assert twin.url.drivername == "sqlite"
            with twin.connect() as conn:
                assert conn.execute(text("SELECT n FROM marks")).scalar_one() == 7
        finally:
            twin.dispose()
    finally:
        await async_engine.dispose()


def test_a_sync_engine_is_its_own_twin() -> None:
    engine = create_engine("sqlite://")
    assert sync_engine(engine) is engine
    assert not is_async_engine(engine)
    engine.dispose()


def test_something_else_than_an_engine_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"got a str where a SQLAlchemy engine"):
        sync_engine("sqlite:///agents.db")  # type: ignore[arg-type]


def test_a_missing_sync_driver_is_named_with_how_to_install_it() -> None:
    if importlib.util.find_spec("pymysql") is not None:
        pytest.skip("pymysql is installed here, so no driver is missing for this URL")
    with pytest.raises(ConfigurationError, match=r"needs the driver 'mysql\+pymysql'.*install"):
        create_sync_engine("mysql+aiomysql://app@db/agents")


async def test_a_pool_takes_an_async_engine_or_url_and_refuses_an_in_memory_one() -> None:
    async_engine = create_async_engine("sqlite+aiosqlite:///agents.db")
    try:
        assert ax.Pool(engine=async_engine, projector=False).engine is async_engine
        ax.Pool(database_url="postgresql+asyncpg://app@db/agents", projector=False)
        memory = create_async_engine("sqlite+aiosqlite://")
        with pytest.raises(ConfigurationError, match="in-memory SQLite"):
            ax.Pool(engine=memory)
        await memory.dispose()
    finally:
        await async_engine.dispose()
