"""Crash-resumable agent runs: a worker dies after turn 2 of a 4-turn scripted run, in a real
pool against a real Redis; the worker that takes the task over resumes after turn 2, so the
model is asked for turns 3 and 4 only and the tools of turns 1 and 2 are not called again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec import events
from agentexec.connection import get_redis
from agentexec.projector import Projector
from agentexec.streams import Keys
from tests.apps import resumable
from tests.support.waiting import scaled


@pytest.fixture
def resumable_pool(redis_conf: str) -> Iterator[ax.Pool]:
    ax.CONF.lease_seconds = 1.5  # a dead worker's task is taken over within seconds
    resumable.pool.start()
    try:
        yield resumable.pool
    finally:
        resumable.pool.shutdown()


async def log_of(agent_id: object) -> list[events.AnyEvent]:
    entries = await get_redis().xrange(Keys(ax.CONF.key_prefix).events)
    return [e for e in (events.decode_entry(f) for _, f in entries) if e.agent_id == agent_id]


def calls(path: Path) -> list[tuple[str, int, int]]:
    """(kind, turn or tool argument, pid) of each line of the calls file."""
    lines = path.read_text().split("\n") if path.exists() else []
    return [(kind, int(n), int(pid)) for kind, n, pid in (line.split() for line in lines if line)]


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
async def test_a_run_taken_over_after_its_worker_died_resumes_after_the_last_turn(
    resumable_pool: ax.Pool, tmp_path: Path, streamed: bool
) -> None:
    path, marker = tmp_path / "calls", tmp_path / "died"
    task = await ax.enqueue(
        "resumable_research",
        resumable.Run(calls=str(path), marker=str(marker), die_after_turn=2, streamed=streamed),
        queue_name="resumable",
    )
    result = await ax.get_result(task, timeout=scaled(60))
    assert result == "The answer, after three lookups, is 42."
    assert marker.exists(), "the first worker did not die"

    made = calls(path)
    first, second = made[0][2], made[-1][2]
    assert first != second, f"one process ran the whole task: {made}"
    assert [(kind, n) for kind, n, pid in made if pid == first] == [
        ("model", 1),
        ("tool", 1),
        ("model", 2),
        ("tool", 2),
    ]
    # The worker that took over asked the model for turns 3 and 4 only, and called the tool
    # of turn 3 only: turns 1 and 2 were not run again.
    assert [(kind, n) for kind, n, pid in made if pid == second] == [
        ("model", 3),
        ("tool", 3),
        ("model", 4),
    ]

    log = await log_of(task.agent_id)
    saved = [e.turn for e in log if isinstance(e, events.AgentCheckpoint)]
    assert saved == [1, 2, 3]
    turns = [e.turn for e in log if isinstance(e, events.AgentTurn)]
    assert turns == [1, 2, 3, 3, 4]  # turn 3 began (and was saved before) the first worker died
    assert any(isinstance(e, events.TaskProgress) and "after turn 2" in e.message for e in log), (
        "no event says the run resumed"
    )

    # The read model tells the story: one activity, complete, whose log says where it resumed.
    engine = create_engine(f"sqlite:///{tmp_path / 'agents.db'}")
    ax.Base.metadata.create_all(engine)
    await Projector(engine).catch_up()
    with Session(engine) as db:
        detail = ax.activity.detail(db, task.agent_id)
        assert detail is not None and detail.status == "COMPLETE"
        messages = [log.message for log in detail.logs]
        assert sum("Resuming Resumable Agent after turn 2" in m for m in messages) == 1
        assert [m for m in messages if "checkpoint" in m] == [
            f"Resumable Agent: checkpoint {n} saved" for n in (1, 2, 3)
        ]
    engine.dispose()


async def test_a_run_that_was_not_interrupted_saves_its_turns_and_runs_each_once(
    resumable_pool: ax.Pool, tmp_path: Path
) -> None:
    path = tmp_path / "calls"
    task = await ax.enqueue(
        "resumable_research",
        resumable.Run(calls=str(path), marker=str(tmp_path / "unused")),
        queue_name="resumable",
    )
    assert await ax.get_result(task, timeout=scaled(60)) == (
        "The answer, after three lookups, is 42."
    )
    assert [(kind, n) for kind, n, _ in calls(path)] == [
        ("model", 1),
        ("tool", 1),
        ("model", 2),
        ("tool", 2),
        ("model", 3),
        ("tool", 3),
        ("model", 4),
    ]
    log = await log_of(task.agent_id)
    assert [e.turn for e in log if isinstance(e, events.AgentCheckpoint)] == [1, 2, 3]
