"""Starting a projector on an empty database, and reading a read model that no projector
keeps up to date: both say what is wrong and how to fix it, at once."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.activity import freshness
from agentexec.activity.models import Activity
from agentexec.connection import close_redis
from agentexec.projector import Projector
from tests.support.waiting import wait_for

from .conftest import sqlite_engine

AGENTEXEC = str(Path(sys.executable).parent / "agentexec")


def cli_env(redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "AGENTEXEC_REDIS_URL": redis_url,
        "AGENTEXEC_KEY_PREFIX": ax.CONF.key_prefix,
        "AGENTEXEC_PARTITIONS": str(ax.CONF.partitions),
    }


def test_projector_on_an_empty_database_fails_at_once_naming_the_fix(
    redis_conf: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    done = subprocess.run(
        [AGENTEXEC, "projector", "--database-url", url],
        env=cli_env(redis_conf),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode != 0
    assert "agentexec_checkpoints" in done.stderr and "--create-tables" in done.stderr
    assert "alembic upgrade heads" in done.stderr


def test_projector_create_tables_then_projects(redis_conf: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'agents.db'}"
    process = subprocess.Popen(
        [AGENTEXEC, "projector", "--database-url", url, "--create-tables"], env=cli_env(redis_conf)
    )
    engine = create_engine(url)
    try:
        agent_id = ax.activity.create("research_company")

        def projected() -> bool:
            try:
                with Session(engine) as session:
                    return ax.activity.detail(session, agent_id) is not None
            except Exception:  # the tables appear when the projector has started
                return False

        wait_for(projected, timeout=60, what="the activity projected")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        engine.dispose()


@pytest.fixture
def fresh_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(freshness, "STALE_AFTER", 0.0)
    monkeypatch.setattr(freshness, "_next_look", 0.0)
    monkeypatch.setattr(freshness, "_done", False)


async def test_reading_a_read_model_nobody_projects_warns_once(
    redis_conf: str, tmp_path: Path, fresh_check: None, caplog: pytest.LogCaptureFixture
) -> None:
    engine = sqlite_engine(tmp_path / "agents.db")
    caplog.set_level(logging.WARNING, logger="agentexec.activity.freshness")
    try:
        # Projected: nothing waits, no warning.
        ax.activity.create("research_company")
        await Projector(engine).catch_up()
        with Session(engine) as session:
            assert ax.activity.list(session).total == 1
        assert caplog.records == []

        # Seed style, no projector running: the app reads "Total: 1" forever, and is told why.
        freshness._next_look = 0.0
        ax.activity.create("research_company")
        with Session(engine) as session:
            for _ in range(3):
                assert ax.activity.list(session).total == 1
                ax.activity.active_count(session)
            assert session.scalar(select(func.count()).select_from(Activity)) == 1
        [warning] = caplog.records
        assert "no projector is running" in warning.getMessage()
        assert "agentexec projector --database-url" in warning.getMessage()
        assert "ax.Pool(engine=engine)" in warning.getMessage()
    finally:
        engine.dispose()
        await close_redis()
