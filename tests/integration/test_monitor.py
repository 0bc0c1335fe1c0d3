"""`agentexec monitor`: its table built from real events, from the log and from the read model,
and short runs of the command itself."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from sqlalchemy import create_engine

import agentexec as ax
from agentexec.activity.models import Base
from agentexec.monitor import Board, load_board
from agentexec.projector import Projector
from tests.apps.workflows import InputContext, pipeline
from tests.support.waiting import scaled

AGENTEXEC = [sys.executable, "-m", "agentexec.cli"]


def render(board: Board) -> str:
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(board.table())
    return console.export_text()


async def some_activity() -> tuple[object, object, object]:
    """A running agent at 40 %, a finished one, and a queued pipeline run with its first step."""
    running = ax.activity.create("research_company", message="Waiting to start.")
    ax.activity.update(running, "Gathering financials", percentage=40)
    finished = ax.activity.create("summarise")
    ax.activity.complete(finished, message="Summary written")
    run = await pipeline.enqueue(context=InputContext(company="Acme"))
    return running, finished, run.agent_id


async def test_the_table_follows_the_event_log(redis_conf: str) -> None:
    running, finished, run = await some_activity()
    board = Board(limit=10)
    load_board(board)
    assert board.active == 3  # the running agent, the run and its queued first step
    assert board.rows[running].percentage == 40  # type: ignore[index]
    assert board.rows[finished].status == "COMPLETE"  # type: ignore[index]
    assert board.rows[run].task == "ResearchPipeline"  # type: ignore[index]
    text = render(board)
    assert "Active Agents: 3" in text
    assert "Gathering financials" in text and "40%" in text
    assert "└ ResearchPipeline.gather_data" in text
    # Active agents come first; finished ones follow.
    assert text.index("research_company") < text.index("summarise")
    assert "complete" in text and "Summary written" in text
    ax.activity.complete(running)
    board_after = Board(limit=2)
    load_board(board_after)
    assert board_after.active == 2 and len(board_after.shown()) == 2


async def test_initial_state_from_the_read_model_then_the_log(
    redis_conf: str, tmp_path: Path
) -> None:
    running, _, _ = await some_activity()
    engine = create_engine(f"sqlite:///{tmp_path / 'agents.db'}")
    Base.metadata.create_all(engine)
    await Projector(engine, lease_seconds=5).catch_up()
    ax.activity.update(running, "Writing the report", percentage=90)  # after the checkpoint
    board = Board()
    load_board(board, database_url=str(engine.url))
    row = board.rows[running]  # type: ignore[index]
    assert (row.message, row.percentage, row.status) == ("Writing the report", 90, "RUNNING")
    assert board.active == 3
    engine.dispose()


async def test_the_command_runs_once_and_for_a_duration(redis_conf: str) -> None:
    await some_activity()
    env = {
        **os.environ,
        "AGENTEXEC_REDIS_URL": redis_conf,
        "AGENTEXEC_KEY_PREFIX": ax.CONF.key_prefix,
        "COLUMNS": "160",
    }
    once = subprocess.run(
        [*AGENTEXEC, "monitor", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert once.returncode == 0, once.stderr
    assert "Active Agents: 3" in once.stdout and "Gathering financials" in once.stdout
    timed = subprocess.run(
        [*AGENTEXEC, "monitor", "--duration", "0.5", "--limit", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert timed.returncode == 0, timed.stderr
    assert "Active Agents: 3" in timed.stdout
