"""The seed's research_company task end to end: enqueue -> `agentexec worker` process -> spawned
worker -> OpenAIRunner with a scripted model -> result, with the agent's self-reported progress
in the event log.

The pool runs from the command line, as in production, so this test process never imports the
app (and never registers its task). Read-model assertions (the activity's latest message and
percentage, its log rows) are added once the projector lands; until then the event log is the
source of truth checked here.
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

import agentexec as ax
from agentexec import events
from agentexec.connection import get_redis
from agentexec.streams import Keys

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
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print(log.read_text())  # shown by pytest when the test failed


async def test_research_company_runs_in_a_worker_and_reports_progress(
    worker_process: subprocess.Popen[bytes],
) -> None:
    tasks = [
        await ax.enqueue(
            "research_company", ResearchContext(company=name), queue_name="agent_tasks"
        )
        for name in ("Acme", "Globex")
    ]
    results = await asyncio.gather(*(ax.get_result(t, timeout=60) for t in tasks))
    assert results == [
        "Acme makes anvils and sells them to coyotes.",
        "Globex makes anvils and sells them to coyotes.",
    ]
    entries = await get_redis().xrange(Keys(ax.CONF.key_prefix).events)
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
