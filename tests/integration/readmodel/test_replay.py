"""`agentexec replay`: the audited history, from the archive and then the log beyond it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

from sqlalchemy import Engine

import agentexec as ax
from agentexec.events import TaskCompleted, TaskProgress
from agentexec.projector import Projector
from agentexec.projector.replay import replay
from agentexec.runtime import current
from tests.integration.readmodel.conftest import database_url
from tests.integration.readmodel.workload import append_all, lifecycle


async def test_replay_reads_the_archive_then_the_log_in_order(
    projector: Projector, engine: Engine
) -> None:
    # In the log append_all writes (partition 0's), as their ids say.
    research, email = current().partitions.new_id(0), current().partitions.new_id(0)
    append_all(lifecycle(research, "research", steps=2)[:-1] + lifecycle(email, "email", steps=1))
    await projector.catch_up()
    # Appended after the projector's last batch: only in the Redis log so far.
    late = TaskCompleted(agent_id=research, task_name="research", message="Done late.")
    append_all([late])

    history = list(replay(engine, agent_id=research))
    assert [type(r.event).__name__ for r in history] == [
        "TaskQueued",
        "TaskStarted",
        "TaskProgress",
        "TaskProgress",
        "TaskCompleted",
    ]
    assert [r.source for r in history] == ["archive"] * 4 + ["log"]
    assert history[-1].event.message == "Done late."
    ids = [tuple(map(int, r.event_id.split("-"))) for r in history]
    assert ids == sorted(ids)

    by_task = list(replay(engine, task_name="email"))
    assert {r.event.agent_id for r in by_task} == {email} and len(by_task) == 4

    everything = list(replay(engine))
    assert len(everything) == 9
    # Times select by when Redis appended the event (the stream id's milliseconds).
    cut_ms = int(everything[-1].event_id.split("-")[0])
    since = list(replay(engine, since=datetime.fromtimestamp(cut_ms / 1000, UTC)))
    assert since and all(int(r.event_id.split("-")[0]) >= cut_ms for r in since)
    assert since[-1].event_id == everything[-1].event_id
    until = list(replay(engine, until=datetime.fromtimestamp(cut_ms / 1000 - 0.001, UTC)))
    assert all(int(r.event_id.split("-")[0]) < cut_ms for r in until)
    assert len(until) + len(since) == len(everything)

    # Without a database, only the Redis log is read: the same events, all from the log.
    assert [r.event_id for r in replay(None, agent_id=research)] == [r.event_id for r in history]


async def test_the_replay_command_prints_text_or_json_lines(
    projector: Projector, engine: Engine
) -> None:
    agent = current().partitions.new_id(0)  # in the log append_all writes (partition 0's)
    append_all(lifecycle(agent, "research", steps=1))
    await projector.catch_up()
    env = {
        **os.environ,
        "AGENTEXEC_REDIS_URL": ax.CONF.redis_url,
        "AGENTEXEC_KEY_PREFIX": ax.CONF.key_prefix,
        "AGENTEXEC_PARTITIONS": str(ax.CONF.partitions),
        "AGENTEXEC_DATABASE_URL": database_url(engine),
    }
    base = [sys.executable, "-m", "agentexec.cli", "--log-level", "WARNING", "replay"]
    text = subprocess.run(
        [*base, "--agent-id", str(agent)], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert len(text) == 4 and "task.queued" in text[0] and str(agent) in text[0]
    lines = subprocess.run(
        [*base, "--agent-id", str(agent), "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["type"] for r in records][:2] == ["task.queued", "task.started"]
    assert all(r["agent_id"] == str(agent) and r["source"] == "archive" for r in records)
    assert any(r["type"] == TaskProgress.__struct_config__.tag for r in records)
