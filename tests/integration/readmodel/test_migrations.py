"""The shipped Alembic migrations, driven by the seed's `env.py`, give exactly the models'
schema: autogenerate finds nothing to add on SQLite or PostgreSQL. And a custom table
prefix works."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

import agentexec as ax

from .conftest import POSTGRES_URL

# Seed 000, "Configure alembic/env.py to include agentexec models", as written.
SEED_ENV = """
# alembic/env.py
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import engine_from_config, pool

# Import your application's models
from myapp.models import Base as AppBase

# Import agentexec
import agentexec as ax

config = context.config

# Get database URL from environment
DATABASE_URL = os.getenv("DATABASE_URL", "sqlite:///agents.db")
config.set_main_option("sqlalchemy.url", DATABASE_URL)

if config.config_file_name is not None:
    fileConfig(config.config_file_name)

# Combine metadata from both your app and agentexec
# This allows Alembic to manage tables from both sources
target_metadata = [AppBase.metadata, ax.Base.metadata]


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
"""

APP_MODELS = """
from sqlalchemy import Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customer"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
"""


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'agents.db'}"
        return
    schema = f"axmig_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        # No %-escapes: the seed env.py passes the URL through ConfigParser interpolation.
        yield f"{POSTGRES_URL}?options=-csearch_path={schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_migrated_database_needs_no_further_migration(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "myapp").mkdir(parents=True)
    (project / "myapp" / "__init__.py").write_text("")
    (project / "myapp" / "models.py").write_text(APP_MODELS)
    (project / "alembic" / "versions").mkdir(parents=True)
    (project / "alembic" / "env.py").write_text(SEED_ENV)
    (project / "alembic" / "script.py.mako").write_text("")
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.setenv("DATABASE_URL", database)
    # The alembic.ini settings, given in code: with no file, env.py leaves logging alone.
    config = Config()
    config.set_main_option("script_location", str(project / "alembic"))
    config.set_main_option("version_locations", f"{project}/alembic/versions agentexec:migrations")
    config.set_main_option("path_separator", "space")

    command.upgrade(config, "heads")
    engine = create_engine(database)
    from myapp.models import Base as AppBase  # type: ignore[import-not-found]

    AppBase.metadata.create_all(engine)  # the app's own migration, in a real project
    with engine.connect() as conn:
        both = [AppBase.metadata, ax.Base.metadata]
        assert compare_metadata(MigrationContext.configure(conn), both) == []  # type: ignore[arg-type]
    command.check(config)  # autogenerate through the seed's env.py: nothing to do

    command.downgrade(config, "agentexec@base")
    assert not [t for t in inspect(engine).get_table_names() if t.startswith("agentexec_")]
    engine.dispose()


def test_custom_table_prefix(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import agentexec as ax
        from sqlalchemy import create_engine, inspect

        engine = create_engine("sqlite:///%s")
        ax.Base.metadata.create_all(engine)
        print(sorted(inspect(engine).get_table_names()))
        """
    ) % (tmp_path / "a.db")
    env = {**os.environ, "AGENTEXEC_TABLE_PREFIX": "myapp_"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == str(
        [
            "myapp_activity",
            "myapp_activity_counts",
            "myapp_activity_log",
            "myapp_checkpoints",
            "myapp_events",
            "myapp_session_items",
        ]
    )
    # Set in code after `import agentexec`, before the models are first used.
    in_code = script.replace(
        "import agentexec as ax\n", "import agentexec as ax\nax.CONF.table_prefix = 'code_'\n"
    ).replace("a.db", "b.db")
    out = subprocess.run(
        [sys.executable, "-c", in_code], capture_output=True, text=True, check=True
    ).stdout
    assert "code_activity" in out


def test_prefix_changed_after_the_models_were_built_is_refused(tmp_path: Path) -> None:
    from agentexec.projector import Projector

    ax.CONF.table_prefix = "other_"
    with pytest.raises(ax.ConfigurationError, match="AGENTEXEC_TABLE_PREFIX is 'other_'"):
        Projector(create_engine(f"sqlite:///{tmp_path / 'c.db'}"))


def test_timing_revision_upgrades_a_database_with_activities(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """agentexec_0002 adds the timing columns to a table that already holds rows (NULL
    until a rebuild, retries 0), and its downgrade removes them again."""
    project = tmp_path / "project"
    (project / "myapp").mkdir(parents=True)
    (project / "myapp" / "__init__.py").write_text("")
    (project / "myapp" / "models.py").write_text(APP_MODELS)
    (project / "alembic" / "versions").mkdir(parents=True)
    (project / "alembic" / "env.py").write_text(SEED_ENV)
    (project / "alembic" / "script.py.mako").write_text("")
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.setenv("DATABASE_URL", database)
    config = Config()
    config.set_main_option("script_location", str(project / "alembic"))
    config.set_main_option("version_locations", f"{project}/alembic/versions agentexec:migrations")
    config.set_main_option("path_separator", "space")

    command.upgrade(config, "agentexec_0001")
    engine = create_engine(database)
    table = f"{ax.CONF.table_prefix}activity"
    agent = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            text(
                f"INSERT INTO {table} (id, agent_id, agent_type, status, attempts, created_at, "
                "updated_at, last_event_id) VALUES (:id, :agent, 'old', 'COMPLETE', 1, "
                "'2026-01-01 00:00:00', '2026-01-01 00:00:01', '1-0')"
            ),
            {"id": uuid.uuid4().hex, "agent": agent.hex},
        )
    command.upgrade(config, "heads")
    with engine.connect() as conn:
        row = conn.execute(text(f"SELECT retries, worker, run_seconds FROM {table}")).one()
    assert tuple(row) == (0, None, None)
    columns = {c["name"] for c in inspect(engine).get_columns(table)}
    assert {"queued_at", "due_at", "queue_wait_seconds", "attempt_history"} <= columns

    command.downgrade(config, "agentexec_0001")
    columns = {c["name"] for c in inspect(engine).get_columns(table)}
    assert "retries" not in columns and "attempt_history" not in columns
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 1
    engine.dispose()


def test_partition_revision_keeps_the_archived_events_in_partition_0(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """agentexec_0006 puts the events archived before it in partition 0 and keys the
    archive by (partition, stream id): one id may then be archived once per partition. Its
    downgrade restores the key by stream id alone."""
    project = tmp_path / "project"
    (project / "myapp").mkdir(parents=True)
    (project / "myapp" / "__init__.py").write_text("")
    (project / "myapp" / "models.py").write_text(APP_MODELS)
    (project / "alembic" / "versions").mkdir(parents=True)
    (project / "alembic" / "env.py").write_text(SEED_ENV)
    (project / "alembic" / "script.py.mako").write_text("")
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.setenv("DATABASE_URL", database)
    config = Config()
    config.set_main_option("script_location", str(project / "alembic"))
    config.set_main_option("version_locations", f"{project}/alembic/versions agentexec:migrations")
    config.set_main_option("path_separator", "space")

    command.upgrade(config, "agentexec_0005")
    engine = create_engine(database)
    table = f"{ax.CONF.table_prefix}events"
    insert = text(
        f"INSERT INTO {table} (stream_ms, stream_seq, type, agent_id, task_name, ts, data) "
        "VALUES (:ms, 0, 'task.queued', :agent, 't', '2026-01-01 00:00:00', '{}')"
    )
    with engine.begin() as conn:
        for ms in (1, 2):
            conn.execute(insert, {"ms": ms, "agent": uuid.uuid4().hex})
    command.upgrade(config, "heads")
    with engine.begin() as conn:
        rows = conn.execute(text(f'SELECT "partition", stream_ms FROM {table} ORDER BY 2')).all()
        assert [tuple(r) for r in rows] == [(0, 1), (0, 2)]
        conn.execute(
            text(
                f'INSERT INTO {table} ("partition", stream_ms, stream_seq, type, agent_id, '
                "task_name, ts, data) VALUES (1, 1, 0, 'task.queued', :agent, 't', "
                "'2026-01-01 00:00:00', '{}')"
            ),
            {"agent": uuid.uuid4().hex},
        )
    key = inspect(engine).get_pk_constraint(table)["constrained_columns"]
    assert key == ["partition", "stream_ms", "stream_seq"]

    with engine.begin() as conn:
        conn.execute(text(f'DELETE FROM {table} WHERE "partition" = 1'))
    command.downgrade(config, "agentexec_0005")
    assert inspect(engine).get_pk_constraint(table)["constrained_columns"] == [
        "stream_ms",
        "stream_seq",
    ]
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 2
    engine.dispose()
