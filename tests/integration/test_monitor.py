"""`agentexec monitor`: its table built from real events, from the log and from the read model
(SQLite and PostgreSQL), short runs of the command itself, and docs/monitor.md's own-monitor
example."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path

from click.testing import CliRunner
from rich.console import Console
from sqlalchemy import Engine

import agentexec as ax
from agentexec.cli import main
from agentexec.events import Status
from agentexec.monitor import Board, load_board, load_partitions
from agentexec.projector import Projector
from agentexec.runtime import current
from tests.apps import basic
from tests.apps.workflows import InputContext, pipeline
from tests.integration.readmodel.conftest import database_url, engine, postgres
from tests.support.waiting import scaled, wait_for

__all__ = ["engine", "postgres"]  # the read model on each backend

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
    redis_conf: str, engine: Engine
) -> None:
    running, _, _ = await some_activity()
    await Projector(engine, lease_seconds=5).catch_up()
    ax.activity.update(running, "Writing the report", percentage=90)  # after the checkpoint
    board = Board()
    load_board(board, database_url=database_url(engine))
    row = board.rows[running]  # type: ignore[index]
    assert (row.message, row.percentage, row.status) == ("Writing the report", 90, "RUNNING")
    assert board.active == 3


async def test_every_partition_is_on_the_board(redis_conf: str, engine: Engine) -> None:
    """With AGENTEXEC_PARTITIONS=3 the board reads the three logs, from their tails and
    from the read model's checkpoints."""
    ax.CONF.partitions = 3
    partitions = current().partitions
    agents = [ax.activity.create("spread", message="Waiting to start.") for _ in range(12)]
    assert {partitions.of(a) for a in agents} == {0, 1, 2}
    board = Board(limit=20)
    assert len(load_partitions(board)) == 3
    assert set(agents) <= set(board.rows) and board.active == 12

    await Projector(engine, lease_seconds=5).catch_up()
    for agent in agents[::2]:
        ax.activity.complete(agent)  # after the checkpoints
    from_database = Board(limit=20)
    load_partitions(from_database, database_url=database_url(engine))
    assert from_database.active == 6
    assert {from_database.rows[a].status for a in agents[::2]} == {Status.COMPLETE}  # type: ignore[index]


async def test_the_command_runs_once_and_for_a_duration(redis_conf: str) -> None:
    await some_activity()
    env = {
        **os.environ,
        "AGENTEXEC_REDIS_URL": redis_conf,
        "AGENTEXEC_KEY_PREFIX": ax.CONF.key_prefix,
        "AGENTEXEC_PARTITIONS": str(ax.CONF.partitions),
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


async def run_tasks(pool: ax.Pool) -> None:
    """5 echo tasks complete and 2 boom tasks fail, on the running pool."""
    tasks = [await ax.enqueue("echo", basic.Echo(text=f"echo {i}")) for i in range(5)]
    tasks += [await ax.enqueue("boom", basic.Echo(text=f"boom {i}")) for i in range(2)]
    for task in tasks:
        with contextlib.suppress(ax.TaskFailedError):
            await ax.get_result(task, timeout=scaled(30))


def last_end(board: Board) -> datetime:
    return max(at for at, _, _ in board.ended)


async def test_counts_and_rates_per_task_name(
    running_pool: ax.Pool, redis_conf: str, engine: Engine
) -> None:
    await run_tasks(running_pool)
    await Projector(engine, lease_seconds=5).catch_up()
    from_log, from_database = Board(), Board()
    load_board(from_log)
    load_board(from_database, database_url=database_url(engine))
    for board in (from_log, from_database):
        assert board.counts["echo"][Status.COMPLETE] == 5
        assert board.counts["boom"][Status.ERROR] == 2
        assert board.counts["boom"][Status.COMPLETE] == 0
        assert board.counts["echo"][Status.RUNNING] == 0
        now = last_end(board) + timedelta(seconds=1)
        assert board.rates(now) == {"echo": (5 / 60, 0.0), "boom": (0.0, 2 / 60)}
        # A minute later, nothing ended in the last minute.
        assert board.rates(now + timedelta(seconds=61)) == {}
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(from_log.totals(now=last_end(from_log)))
    text = console.export_text()
    assert "Completed/s" in text and "Failed/s" in text
    echo = next(line for line in text.splitlines() if "echo" in line)
    assert echo.split("│")[4].strip() == "5" and "0.08" in echo  # complete, 5 per minute
    boom = next(line for line in text.splitlines() if "boom" in line)
    assert boom.split("│")[5].strip() == "2" and "0.03" in boom  # error, 2 per minute


def test_building_your_own_as_documented(redis_conf: str) -> None:
    """docs/monitor.md, "Building your own": the block as written, in a process of its own
    (a terminal, as far as rich knows), shows the activity and follows the log."""
    page = (Path(__file__).parents[2] / "docs" / "monitor.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    agent = ax.activity.create("research_company", message="Waiting to start.")
    ax.activity.update(agent, "Gathering financials", percentage=40)
    env = {
        **os.environ,
        "AGENTEXEC_REDIS_URL": redis_conf,
        "AGENTEXEC_KEY_PREFIX": ax.CONF.key_prefix,
        "AGENTEXEC_PARTITIONS": str(ax.CONF.partitions),
        "TTY_COMPATIBLE": "1",  # rich refreshes its Live display as on a terminal
        "TTY_INTERACTIVE": "1",
        "COLUMNS": "160",
    }
    process = subprocess.Popen(
        [sys.executable, "-c", block], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    shown: list[bytes] = []
    reader = threading.Thread(target=lambda: shown.extend(iter(process.stdout.read1, b"")))  # type: ignore[union-attr]
    reader.start()
    try:
        wait_for(lambda: b"Gathering financials" in b"".join(shown), 30, "the activity shown")
        ax.activity.update(agent, "Writing the report", percentage=90)
        wait_for(lambda: b"Writing the report" in b"".join(shown), 30, "the update followed")
    finally:
        process.terminate()
        try:
            process.wait(scaled(30))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join()
    assert b"research_company" in b"".join(shown)


def test_the_command_refuses_a_database_without_a_read_model(
    redis_conf: str, tmp_path: Path
) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    refused = CliRunner().invoke(main, ["monitor", "--once", "--database-url", empty])
    assert refused.exit_code == 1, refused.output
    assert "has no read model" in refused.output
    assert "agentexec projector --create-tables" in refused.output
