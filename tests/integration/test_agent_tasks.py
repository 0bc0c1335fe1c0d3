"""The seed's research_company task end to end: enqueue -> `agentexec worker` process -> spawned
worker -> OpenAIRunner with a scripted model -> result, with the agent's self-reported progress
in the event log.

The pool runs from the command line, as in production, so this test process never imports the
app (and never registers its task). The event log is checked, then the read model a projector
builds from it: the progress and what the agent did are in the activity's log.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec import events
from agentexec.projector import Projector
from tests.support.logs import log_entries
from tests.support.waiting import scaled

ROOT = Path(__file__).resolve().parents[2]


class ResearchContext(BaseModel):
    """The same shape as the app's context; the worker validates it as its own."""

    company: str


@pytest.fixture
def worker_process(redis_conf: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`agentexec worker tests.apps.agents:pool`, whose workers use the scripted model for the
    task's "gpt-4o" through AGENTEXEC_MODEL_OVERRIDE."""
    env = {
        **os.environ,
        "AGENTEXEC_REDIS_URL": redis_conf,
        "AGENTEXEC_KEY_PREFIX": ax.CONF.key_prefix,
        "AGENTEXEC_PARTITIONS": str(ax.CONF.partitions),
        "AGENTEXEC_MODEL_OVERRIDE": "tests.apps.agents:SCRIPT",
        "AGENTEXEC_GRACEFUL_SHUTDOWN_TIMEOUT": "10",
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "agentexec.cli", "worker", "tests.apps.agents:pool"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=scaled(30))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print(log.read_text())  # shown by pytest when the test failed


async def test_research_company_runs_in_a_worker_and_reports_progress(
    worker_process: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    tasks = [
        await ax.enqueue(
            "research_company", ResearchContext(company=name), queue_name="agent_tasks"
        )
        for name in ("Acme", "Globex")
    ]
    results = await asyncio.gather(*(ax.get_result(t, timeout=scaled(60)) for t in tasks))
    assert results == [
        "Acme makes anvils and sells them to coyotes.",
        "Globex makes anvils and sells them to coyotes.",
    ]
    entries = await log_entries()
    log = [events.decode_entry(fields) for _, fields in entries]
    for task in tasks:
        mine = [e for e in log if e.agent_id == task.agent_id]
        kinds = [type(e).__name__ for e in mine]
        assert kinds[:2] == ["TaskQueued", "TaskStarted"] and kinds[-1] == "TaskCompleted"
        progress = [(e.message, e.percentage) for e in mine if isinstance(e, events.TaskProgress)]
        assert progress == [
            ("Gathering company data", 30),
            ("Analyzing financials", 60),
            ("Writing the summary", 90),
        ]
        turns = [e.turn for e in mine if isinstance(e, events.AgentTurn)]
        assert turns == [1, 2, 3, 4]
        assert sum(1 for e in mine if isinstance(e, events.AgentUsage)) == 4
        # report_status shows as progress, not as a tool call.
        assert not [e for e in mine if isinstance(e, events.AgentToolCall)]
    assert worker_process.poll() is None  # the pool is still serving

    engine = create_engine(f"sqlite:///{tmp_path / 'agents.db'}")
    ax.Base.metadata.create_all(engine)
    await Projector(engine).catch_up()
    with Session(engine) as db:
        for task in tasks:
            detail = ax.activity.detail(db, task.agent_id)
            assert detail is not None and detail.status == "COMPLETE"
            assert detail.latest_percentage == 100
            running = [log for log in detail.logs if log.status == "RUNNING"]
            assert [(log.message, log.percentage) for log in running if log.percentage] == [
                ("Gathering company data", 30),
                ("Analyzing financials", 60),
                ("Writing the summary", 90),
            ]
            # What the agent did (its model turns) is in the log too, as RUNNING entries.
            turns = [log for log in running if log.percentage is None and "turn" in log.message]
            assert len(turns) == 4
    engine.dispose()
