"""Crash-resumable agent runs that keep their conversation in an `ax.AgentSession`: a worker
dies after turn 2 of a 4-turn scripted run, in a real pool against a real Redis. The worker
that takes the task over removes what the dead one added to the session after its last
checkpoint and resumes, so the model is asked for turns 3 and 4 only, the tools of turns 1
and 2 are not called again, and the session (in Redis and as projected) holds each item once,
as after a run that was not interrupted; a later run on the session continues from there. A
worker that dies in turn 1 leaves nothing behind either: its run starts again from the
session as it was before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec import events
from agentexec.activity.models import SessionItem
from agentexec.projector import Projector
from tests.apps import resumable
from tests.integration.test_agent_resume import (  # noqa: F401 (a fixture)
    calls,
    log_of,
    resumable_pool,
)
from tests.support.waiting import scaled

ANSWER = "The answer, after three lookups, is 42."


def shape(item: dict[str, Any]) -> tuple[Any, ...]:
    """What an item says, without the ids that differ from one model call to the next."""
    content = item.get("content")
    if isinstance(content, list):
        content = " ".join(str(part.get("text", "")) for part in content)
    return (
        item.get("type", "message"),
        item.get("role"),
        item.get("name"),
        item.get("arguments"),
        item.get("output"),
        content,
    )


def model_inputs(path: Path) -> list[tuple[int, list[dict[str, Any]]]]:
    """(turn, input) of each model call written to the inputs file."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [(line["turn"], line["input"]) for line in lines]


async def run_task(tmp_path: Path, name: str, **options: Any) -> tuple[ax.Task, Path]:
    """Enqueue a resumable run named `name` and wait for its answer: (task, calls file)."""
    path = tmp_path / f"{name}.calls"
    task = await ax.enqueue(
        "resumable_research",
        resumable.Run(
            calls=str(path),
            marker=str(tmp_path / f"{name}.died"),
            inputs=str(tmp_path / f"{name}.inputs"),
            **options,
        ),
        queue_name="resumable",
    )
    assert await ax.get_result(task, timeout=scaled(60)) == ANSWER
    return task, path


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
@pytest.mark.parametrize(
    "die_in_session",
    [False, True],
    ids=["died-asking-turn-3", "died-after-turn-3-reached-the-session"],
)
async def test_a_session_run_taken_over_resumes_with_each_session_item_once(
    resumable_pool: ax.Pool,  # noqa: F811
    tmp_path: Path,
    streamed: bool,
    die_in_session: bool,
) -> None:
    # The same run, not interrupted, on a session of its own: what the session should hold.
    await run_task(tmp_path, "whole", session_id="whole", streamed=streamed)
    expected = [shape(i) for i in await ax.AgentSession("whole").get_items()]
    assert len(expected) == 8  # question, 3 x (tool call, its output), answer

    task, path = await run_task(
        tmp_path,
        "crashed",
        session_id="crashed",
        die_after_turn=2,
        die_in_session=die_in_session,
        streamed=streamed,
    )
    assert (tmp_path / "crashed.died").exists(), "the first worker did not die"

    made = calls(path)
    first, second = made[0][2], made[-1][2]
    assert first != second, f"one process ran the whole task: {made}"
    # Without a checkpoint after turn 3, the turn that reached the session is run again.
    lost = [("model", 3), ("tool", 3)] if die_in_session else []
    assert [(kind, n) for kind, n, pid in made if pid == first] == [
        ("model", 1),
        ("tool", 1),
        ("model", 2),
        ("tool", 2),
        *lost,
    ]
    assert [(kind, n) for kind, n, pid in made if pid == second] == [
        ("model", 3),
        ("tool", 3),
        ("model", 4),
    ]
    # The resumed model call was given the conversation after turn 2, once.
    inputs = model_inputs(tmp_path / "crashed.inputs")
    resumed = [items for turn, items in inputs if turn == 3][-1]
    assert [shape(i) for i in resumed] == expected[:5]

    session = ax.AgentSession("crashed")
    items = await session.get_items()
    assert [shape(i) for i in items] == expected

    log = await log_of(task.agent_id)
    assert [e.turn for e in log if isinstance(e, events.AgentCheckpoint)] == [0, 1, 2, 3]
    resumes = [e.message for e in log if isinstance(e, events.TaskProgress) and e.message]
    removed = "2 session item(s) it added after that were removed"
    assert sum("after turn 2" in m and (removed in m) == die_in_session for m in resumes) == 1
    popped = [e for e in await log_of(session.agent_id) if isinstance(e, events.SessionItemPopped)]
    assert len(popped) == (2 if die_in_session else 0)

    # A second run on the session continues the conversation: its model is given the first
    # run's items once, then the new question.
    await run_task(tmp_path, "next", session_id="crashed", question="And the next one?")
    first_call = model_inputs(tmp_path / "next.inputs")[0][1]
    assert [shape(i) for i in first_call] == [
        *expected,
        ("message", "user", None, None, None, "And the next one?"),
    ]
    assert len(await session.get_items()) == 16

    # The projected table holds the session as Redis does.
    engine = create_engine(f"sqlite:///{tmp_path / 'sessions.db'}")
    ax.Base.metadata.create_all(engine)
    await Projector(engine).catch_up()
    with Session(engine) as db:
        rows = db.scalars(
            select(SessionItem.item)
            .where(SessionItem.session_id == "crashed")
            .order_by(SessionItem.position)
        ).all()
    engine.dispose()
    assert list(rows) == await session.get_items()


async def test_a_session_run_whose_worker_died_in_turn_1_starts_again_from_the_session_before(
    resumable_pool: ax.Pool,  # noqa: F811
    tmp_path: Path,
) -> None:
    await run_task(tmp_path, "whole", session_id="whole-1")
    expected = [shape(i) for i in await ax.AgentSession("whole-1").get_items()]

    # The worker dies just after the session stored turn 1 (the question, the tool call and
    # its output), before any checkpoint but the one of turn 0, saved before the run.
    task, path = await run_task(
        tmp_path, "crashed", session_id="crashed-1", die_after_turn=0, die_in_session=True
    )
    made = calls(path)
    first, second = made[0][2], made[-1][2]
    assert first != second, f"one process ran the whole task: {made}"
    assert [(kind, n) for kind, n, pid in made if pid == first] == [("model", 1), ("tool", 1)]
    assert [(kind, n) for kind, n, pid in made if pid == second] == [
        ("model", 1),
        ("tool", 1),
        ("model", 2),
        ("tool", 2),
        ("model", 3),
        ("tool", 3),
        ("model", 4),
    ]
    session = ax.AgentSession("crashed-1")
    assert [shape(i) for i in await session.get_items()] == expected
    log = await log_of(task.agent_id)
    assert [e.turn for e in log if isinstance(e, events.AgentCheckpoint)] == [0, 1, 2, 3]
    assert any(
        isinstance(e, events.TaskProgress)
        and e.message
        == "Starting Resumable Agent again: the earlier attempt did not complete turn 1; "
        "the 3 session item(s) it added were removed."
        for e in log
    )
