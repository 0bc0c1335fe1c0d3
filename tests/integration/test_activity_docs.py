"""docs/activity.md's Python examples, extracted from the page and run as written: the scripts
(`# name.py` blocks) with `python name.py` against a real Redis, checking what they print; the
table-prefix block in a fresh interpreter; and the fragments, in page order, in one namespace
holding what the page says they assume (`engine`, an `agent_id`, `get_db`, `since`, Alembic's
`context`). Every Python block of the page is one of these, or the test fails."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.connection import close_redis
from agentexec.migrations import process_revision_directives
from agentexec.projector import Projector
from tests.support.docs import (
    DOCS,
    doc_files,
    namespace_env,
    python_blocks,
    run_to_end,
    script_name,
    write_files,
)
from tests.support.waiting import scaled

PAGE = "activity.md"
SCRIPTS = ("timing.py", "trees.py", "stats.py")
PREFIX_BLOCK = "ax.CONF.table_prefix"


def blocks() -> list[str]:
    return python_blocks(PAGE)


def fragments() -> list[str]:
    return [b for b in blocks() if script_name(b) is None and PREFIX_BLOCK not in b]


def test_every_block_is_run_by_this_module() -> None:
    named = [script_name(b) for b in blocks() if script_name(b)]
    assert sorted(named) == sorted(SCRIPTS), "a new script on the page: run it here"
    assert sum(PREFIX_BLOCK in b for b in blocks()) == 1
    assert len(fragments()) == len(blocks()) - len(SCRIPTS) - 1


def run_script(name: str, redis_url: str, tmp_path: Path) -> list[str]:
    write_files(tmp_path, doc_files(PAGE), name)
    done = run_to_end(tmp_path / name, namespace_env(redis_url), timeout=scaled(180))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()


def test_timing_py_runs_as_written(redis_url: str, tmp_path: Path) -> None:
    lines = run_script("timing.py", redis_url, tmp_path)
    attempts, retries, worker = lines[0].split()
    assert (attempts, retries) == ("3", "2") and re.fullmatch(r"[^:]+:\w+:\d+", worker)
    wait, run = (float(v) for v in lines[1].split())
    assert wait >= 0 and run >= 0
    assert [line.split()[:2] for line in lines[2:]] == [
        ["1", "retried"],
        ["2", "retried"],
        ["3", "complete"],
    ]
    assert lines[2].endswith("ConnectionError: run 1 failed") and lines[4].endswith("None")


def test_trees_py_runs_as_written(redis_url: str, tmp_path: Path) -> None:
    lines = run_script("trees.py", redis_url, tmp_path)
    assert lines[0].startswith("3 {")  # three children, counted by status
    children = [line.split() for line in lines[1:4]]
    assert all(uuid.UUID(c[0]) and c[1] in ("queued", "running") for c in children)
    complete = {"queued": 0, "running": 0, "complete": 3, "error": 0, "canceled": 0}
    assert lines[4] == str(complete)
    assert lines[5] == str([("research", "complete")] * 3)
    assert lines[6] == "3"


def test_stats_py_runs_as_written(redis_url: str, tmp_path: Path) -> None:
    lines = run_script("stats.py", redis_url, tmp_path)
    assert lines[0] == "checkout 20 15 0.75"
    p50, p95, most = (float(v) for v in lines[1].split())
    assert 0.02 <= p50 <= p95 <= most  # each order sleeps 0 to 40 ms
    assert lines[2] == "[('ValueError: order <n> has no address', 5)]"
    assert sum(map(int, re.findall(r", (\d+)\)", lines[3]))) == 20  # per minute: the 20 orders
    assert lines[4] == "10"


def test_the_table_prefix_block_runs_as_written() -> None:
    block = next(b for b in blocks() if PREFIX_BLOCK in b)
    done = subprocess.run(
        [sys.executable, "-c", block], capture_output=True, text=True, timeout=scaled(60)
    )
    assert done.returncode == 0, done.stderr
    assert "myapp_activity" in done.stdout and "agentexec_" not in done.stdout


class AlembicContext:
    """Alembic's `context` in an env.py, recording what `configure` is given."""

    def __init__(self) -> None:
        self.configured: dict[str, Any] = {}

    def configure(self, **options: Any) -> None:
        self.configured = options


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # the page's `sqlite:///agents.db`
    return tmp_path


async def test_the_fragments_run_in_page_order(redis_conf: str, in_tmp: Path) -> None:
    pieces = fragments()
    namespace: dict[str, Any] = {"__name__": "activity_docs"}

    def run(marker: str) -> None:
        """Run the next fragments up to the one containing `marker`."""
        while pieces:
            block = pieces.pop(0)
            exec(compile(block, f"{DOCS / PAGE}:{marker}", "exec"), namespace)
            if marker in block:
                return
        raise AssertionError(f"no fragment contains {marker!r}")

    engine = create_engine("sqlite:///agents.db")
    ax.Base.metadata.create_all(engine)
    try:
        # "Writing" comes after the polling loop on the page, which needs its agent id: the
        # polling loop runs once the writes are projected.
        polling = pieces.pop(0)
        assert "ax.Status.TERMINAL" in polling
        run('ax.activity.create("custom_task"')
        agent_id = namespace["agent_id"]
        await Projector(engine, lease_seconds=5).catch_up()
        namespace.update(engine=engine, Session=Session)
        exec(compile(polling, f"{DOCS / PAGE}:polling", "exec"), namespace)
        assert namespace["activity"].status == "complete"

        run("ax.activity.list(session, page=1, page_size=20)")
        assert namespace["page"].total == 1

        def get_db() -> Iterator[Session]:
            with Session(engine) as db:
                yield db

        namespace["get_db"] = get_db
        run('@router.get("/research/{agent_id}")')
        with TestClient(namespace["app"]) as client:
            assert client.get(f"/research/{agent_id}").json()["status"] == "complete"
            assert client.get(f"/research/{uuid.uuid4()}").status_code == 404

        run("ever_failed")
        assert [a.agent_id for a in namespace["recent"]] == [agent_id]

        namespace["since"] = datetime.now(UTC) - timedelta(hours=1)
        run("running_longer_than=timedelta(minutes=10)")
        assert namespace["failed"].total == 0 and namespace["page"].next_cursor is None

        run("ax.activity.prune(")
        assert namespace["removed"] == 0  # nothing ended 30 days ago

        alembic = AlembicContext()
        namespace.update(context=alembic, connection=object(), target_metadata=ax.Base.metadata)
        run("process_revision_directives=process_revision_directives")
        assert alembic.configured["process_revision_directives"] is process_revision_directives
        assert not pieces, "a fragment this test does not know: run it here"
    finally:
        engine.dispose()
        if namespace.get("engine") is not None:  # the page's own
            namespace["engine"].dispose()
        await close_redis()
