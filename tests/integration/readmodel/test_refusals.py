"""Batches the database refuses: never skipped, never retried forever (issue 12, items 1-2).

A value the database cannot store (a NUL in text on PostgreSQL, a string longer than its
column, an integer beyond the column's range) must neither make the projector move its
checkpoint past a batch that did not commit nor hold every later event back: the batch is
split until the offending event is isolated, that event is stored in a safe form or
dead-lettered with its id and the reason, and everything else is applied.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine, func, select

from agentexec import events
from agentexec.activity.models import Activity, ActivityLog, ArchivedEvent
from agentexec.connection import close_redis, get_sync_redis
from agentexec.events import Event, Status, TaskProgress
from agentexec.projector import Projector, projection
from agentexec.projector.rebuild import rebuild
from agentexec.runtime import current
from agentexec.streams import PROJECTOR_GROUP

from .conftest import PostgresSchema, database_url
from .test_faults import ProjectorProcess
from .workload import append_all, checkpoint_position, lifecycle, snapshot, wait_until

LONG_NAME = "n" * 300
"""Longer than the 255 characters of the task-name columns."""


def workload() -> tuple[list[Event], dict[str, uuid.UUID]]:
    """Ten interleaved tasks; three of them carry a value a database may refuse."""
    tasks = [uuid.UUID(int=i + 1, version=4) for i in range(10)]
    lives = [lifecycle(aid, steps=2) for aid in tasks]
    nul, long, huge = tasks[2], tasks[5], tasks[8]
    lives[2][2] = TaskProgress(agent_id=nul, task_name="", message="half\x00way", percentage=50)
    lives[5] = lifecycle(long, task_name=LONG_NAME, steps=2)
    lives[8][2] = TaskProgress(agent_id=huge, task_name="", message="big", percentage=2**63)
    # After its end a task's row keeps its state: only the log row holds this one (COPY).
    lives[0].append(TaskProgress(agent_id=tasks[0], task_name="", message="late\x00"))
    out: list[Event] = []
    for step in range(max(len(life) for life in lives)):
        out += [life[step] for life in lives if step < len(life)]
    return out, {"nul": nul, "long": long, "huge": huge}


def count(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


async def test_a_refused_batch_is_isolated_never_skipped(
    engine: Engine, projector: Projector, caplog: pytest.LogCaptureFixture
) -> None:
    evs, bad = workload()
    last = append_all(evs, foreign=True)
    projector.batch_size = 7  # the bad events fall in several batches, with good ones
    await projector.catch_up(timeout=60)

    keys = current().keys  # partition 0's: the log append_all writes
    client = get_sync_redis()
    assert checkpoint_position(engine) == last
    assert client.xpending(keys.events, PROJECTOR_GROUP)["pending"] == 0  # type: ignore[index]
    with engine.connect() as conn:
        rows = {r.agent_id: r for r in conn.execute(select(Activity))}
        progress = dict(
            conn.execute(
                select(ActivityLog.message, ActivityLog.percentage).where(
                    ActivityLog.activity_id.in_([rows[bad["nul"]].id])
                )
            ).all()
        )
    # Nothing lost: every task is there and ended.
    assert len(rows) == 10
    assert all(r.status in (Status.COMPLETE, Status.ERROR) for r in rows.values())
    # Only the event no safe form makes storable is left out, and it is dead-lettered.
    letters = client.xrange(keys.dead_letters)
    assert len(letters) == 1
    fields = letters[0][1]
    assert events.decode_entry(fields).percentage == 2**63  # type: ignore[union-attr]
    assert fields[b"id"].decode() in {i.decode() for i, _ in client.xrange(keys.events)}  # type: ignore[union-attr]
    assert fields[b"reason"]  # type: ignore[index]
    assert count(engine, ArchivedEvent) == len(evs) - 1
    assert "dead-lettering" in caplog.text
    if engine.dialect.name == "postgresql":
        # Stored in a safe form: the NUL escaped, the name cut to its column with a marker.
        assert "half\\x00way" in progress
        assert len(rows[bad["long"]].agent_type) == 255
        assert rows[bad["long"]].agent_type.endswith("[truncated]")
        assert "stored in a safe form" in caplog.text
    else:
        # SQLite stores both as they are.
        assert "half\x00way" in progress
        assert rows[bad["long"]].agent_type == LONG_NAME

    # The read model equals a rebuild from the archive.
    live = snapshot(engine, checkpoint=True)
    await rebuild(engine)
    assert snapshot(engine, checkpoint=True) == live
    await close_redis()


async def test_an_unexpected_error_never_skips_a_batch(
    engine: Engine,
    projector: Projector,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    evs = [e for aid in range(10) for e in lifecycle(uuid.UUID(int=aid + 1, version=4), steps=1)]
    last = append_all(evs, foreign=True)
    projector.batch_size = 10
    failures = iter([RuntimeError("a defect in the batch path"), KeyError("another")])
    real = projection.apply

    def failing(*args: object, **kwargs: object) -> None:
        error = next(failures, None)
        if error is not None:
            raise error
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(projection, "apply", failing)
    await projector.catch_up(timeout=60)
    assert checkpoint_position(engine) == last
    assert count(engine, ArchivedEvent) == len(evs)
    assert count(engine, Activity) == 10
    # Retried as an outage, with the traceback of what failed; nothing dead-lettered.
    assert "a defect in the batch path" in caplog.text
    assert "Traceback" in caplog.text
    assert not get_sync_redis().xrange(current().keys.dead_letters)
    await close_redis()


async def test_the_rebuild_command_goes_past_a_refused_event(
    engine: Engine, redis_conf: str
) -> None:
    evs, _ = workload()
    half = len(evs) // 2
    append_all(evs[:half], foreign=True)
    await Projector(engine, batch_size=7).catch_up(timeout=60)  # an archive to rebuild
    last = append_all(evs[half:], foreign=True)
    process = ProjectorProcess(database_url(engine), "--rebuild", "--batch-size", "7")
    try:
        await wait_until(lambda: checkpoint_position(engine) == last, timeout=60)
        assert process.stop() == 0
    finally:
        process.close()
    assert count(engine, Activity) == 10
    assert count(engine, ArchivedEvent) == len(evs) - 1
    await close_redis()


@pytest.mark.postgres
async def test_an_error_from_below_sqlalchemy_never_skips_a_batch(
    postgres: PostgresSchema, redis_conf: str
) -> None:
    """Issue 12's reproduction: a task name longer than its column fails the COPY of the
    archive rows with psycopg's own error; the whole batch (7 of 10 tasks) was skipped."""
    postgres.truncate()
    tasks = [uuid.UUID(int=i + 1, version=4) for i in range(10)]
    lives = [
        lifecycle(aid, task_name=LONG_NAME if i == 3 else "research") for i, aid in enumerate(tasks)
    ]
    evs = [life[step] for step in range(5) for life in lives if step < len(life)]
    last = append_all(evs, foreign=True)
    await Projector(postgres.engine, batch_size=7).catch_up(timeout=60)
    assert checkpoint_position(postgres.engine) == last
    with postgres.engine.connect() as conn:
        assert set(conn.execute(select(Activity.agent_id)).scalars()) == set(tasks)
    assert count(postgres.engine, ArchivedEvent) == len(evs)
    await close_redis()
