"""Fixtures of the agentexec 0.3.0 compatibility suite: an empty PostgreSQL schema (no
tables: `agentexec run --create-tables` makes them) and `tests.apps.program030` run by
`agentexec run` against the test's Redis namespace."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

import agentexec as ax
from tests.integration.readmodel.conftest import POSTGRES_URL, engine, postgres, projector

__all__ = ["engine", "postgres", "projector"]  # the read-model suite's fixtures, used here
from tests.support.processes import stop

ROOT = Path(__file__).parents[3]


@pytest.fixture
def empty_database() -> Iterator[str]:
    """The URL of a PostgreSQL schema of its own with no tables, dropped afterwards."""
    name = f"axcompat_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
    except Exception as e:  # no server: these tests cannot run
        admin.dispose()
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is not usable ({e}); start it")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{name}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


@pytest.fixture
def database(empty_database: str) -> Iterator[Engine]:
    created = create_engine(empty_database)
    yield created
    created.dispose()


def program_env(database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "AGENTEXEC_REDIS_URL": ax.CONF.redis_url,
        "AGENTEXEC_KEY_PREFIX": ax.CONF.key_prefix,
        "AGENTEXEC_PARTITIONS": str(ax.CONF.partitions),
        "AGENTEXEC_DATABASE_URL": database_url,
    }


@pytest.fixture
def pool030(redis_conf: str) -> Iterator[ax.Pool]:
    """`tests.apps.program030`'s pool started in this process (one worker process, no
    database: results only)."""
    from tests.apps import program030

    saved, program030.pool.num_workers = program030.pool.num_workers, 1
    program030.pool.start()
    try:
        yield program030.pool
    finally:
        program030.pool.shutdown()
        program030.pool.num_workers = saved


@pytest.fixture
def program(redis_conf: str, empty_database: str) -> Iterator[subprocess.Popen[str]]:
    """`agentexec run tests.apps.program030:pool --workers 2 --create-tables`, as a 0.3.0
    user starts it; stopped with SIGTERM (then killed) at the end."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentexec.cli",
            "run",
            "tests.apps.program030:pool",
            "--workers",
            "2",
            "--create-tables",
        ],
        cwd=ROOT,
        env=program_env(empty_database),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        stop(process)
