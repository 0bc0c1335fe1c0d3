"""Fixtures of the read-model suite: a database per backend (SQLite and PostgreSQL) and a
projector on the test's Redis namespace. Tests taking `engine` run once per backend."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import Engine, create_engine, text

from agentexec.activity.models import Base
from agentexec.connection import close_redis
from agentexec.projector import Projector

if TYPE_CHECKING:
    from .test_faults import ProjectorProcess

POSTGRES_URL = os.environ.get(
    "AGENTEXEC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def truncate_tables(engine: Engine) -> None:
    """Empty every read-model table of a PostgreSQL database (identities restart)."""
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


class PostgresSchema:
    """A schema of its own on the test server for this run, dropped at the end."""

    def __init__(self) -> None:
        self.name = f"axtest_{uuid.uuid4().hex[:10]}"
        self.admin = create_engine(POSTGRES_URL)
        with self.admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.name}"'))
        self.url = POSTGRES_URL
        self.engine = self.connect()
        Base.metadata.create_all(self.engine)

    @property
    def schema_url(self) -> str:
        """The server's URL with this schema first on the search path."""
        return f"{self.url}?options=-csearch_path%3D{self.name}"

    def connect(self, **kwargs: Any) -> Engine:
        return create_engine(self.schema_url, pool_pre_ping=True, **kwargs)

    def truncate(self) -> None:
        truncate_tables(self.engine)

    def drop(self) -> None:
        self.engine.dispose()
        with self.admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{self.name}" CASCADE'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresSchema]:
    try:
        schema = PostgresSchema()
    except Exception as e:  # no server: the PostgreSQL half of the contract cannot run
        pytest.fail(
            f"PostgreSQL at {POSTGRES_URL} is not usable ({e}); start it or set "
            "AGENTEXEC_TEST_POSTGRES_URL"
        )
    yield schema
    schema.drop()


def database_url(engine: Engine) -> str:
    """The URL a subprocess can reach `engine`'s database with."""
    return engine.url.render_as_string(hide_password=False)


def sqlite_engine(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    return engine


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty read model on SQLite or PostgreSQL."""
    if request.param == "sqlite":
        engine = sqlite_engine(tmp_path / "agents.db")
        yield engine
        engine.dispose()
    else:
        schema: PostgresSchema = request.getfixturevalue("postgres")
        schema.truncate()
        yield schema.engine


@pytest.fixture
async def projector(redis_conf: str, engine: Engine) -> AsyncIterator[Projector]:
    """A projector on the test's namespace; `await projector.catch_up()` applies the log."""
    yield Projector(engine, lease_seconds=5)
    await close_redis()


@pytest.fixture
def processes() -> Iterator[list[ProjectorProcess]]:
    """The `agentexec projector` processes a test starts, closed when it ends."""
    started: list[ProjectorProcess] = []
    yield started
    for process in started:
        process.close()
