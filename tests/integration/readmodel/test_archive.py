"""The Archive's contract, on SQLite and PostgreSQL: what is inserted is read back in log order,
filtered and paged as asked, and pruned without the events restore still needs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from agentexec import events
from agentexec.errors import EventDecodeError
from agentexec.eventlog import Recorded as Applied
from agentexec.events import (
    Event,
    TaskCompleted,
    TaskFailed,
    TaskProgress,
    TaskQueued,
    TaskStarted,
)
from agentexec.projector import projection
from agentexec.projector.archive import Archive
from tests.integration.readmodel.workload import lifecycle

_T0 = 1_700_000_000_000


def _applied(evs: list[Event], start: int = _T0) -> list[Applied]:
    """`evs` at consecutive ids, two to a millisecond, from `start`."""
    return [
        Applied(f"{start + i // 2}-{i % 2}", e, events.encode(e))  # type: ignore[arg-type]
        for i, e in enumerate(evs)
    ]


def _flat(pages: Iterator[list[Applied]]) -> list[str]:
    return [a.event_id for page in pages for a in page]


def test_an_empty_archive_has_no_bounds_and_reads_nothing(engine: Engine) -> None:
    archive = Archive(engine)
    assert archive.bounds() is None
    assert archive.last() is None
    assert list(archive.read()) == []
    assert archive.archived(["1-0", "2-0"]) == set()


def test_inserted_events_read_back_in_log_order_in_pages(engine: Engine) -> None:
    evs = lifecycle(uuid.uuid4(), steps=2) + lifecycle(uuid.uuid4(), steps=3)
    batch = _applied(evs)
    archive = Archive(engine, page=3)
    archive.insert(batch)

    pages = list(archive.read())
    assert [len(p) for p in pages] == [3, 3, 3, 2]
    read = [a for p in pages for a in p]
    assert [a.event_id for a in read] == [a.event_id for a in batch]
    assert [a.event for a in read] == [a.event for a in batch]
    assert [a.data for a in read] == [a.data for a in batch]
    assert archive.bounds() == (batch[0].position, batch[-1].position)
    assert archive.last() == batch[-1].position


def test_read_is_bounded_by_after_exclusive_and_until_inclusive(engine: Engine) -> None:
    batch = _applied(lifecycle(uuid.uuid4(), steps=6))
    archive = Archive(engine, page=2)
    archive.insert(batch)
    ids = [a.event_id for a in batch]

    assert _flat(archive.read(batch[2].position)) == ids[3:]
    assert _flat(archive.read(until=batch[4].position)) == ids[:5]
    assert _flat(archive.read(batch[1].position, batch[5].position)) == ids[2:6]
    assert _flat(archive.read(batch[-1].position)) == []
    # A position between two ids (as a feed's resume point may be) bounds the same way.
    ms, _ = batch[3].position
    assert _flat(archive.read((ms, -1), (ms, 2**63 - 1))) == [
        a.event_id for a in batch if a.position[0] == ms
    ]


def test_read_by_agent_and_by_task_name(engine: Engine) -> None:
    research, email, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    # Progress events carry no task name; they belong to the task of their agent.
    evs = (
        lifecycle(research, "research", steps=2)
        + lifecycle(email, "email", steps=1)
        + lifecycle(other, "research", steps=1)
    )
    batch = _applied(evs)
    archive = Archive(engine, page=2)
    archive.insert(batch)

    assert _flat(archive.read(agent_id=email)) == [
        a.event_id for a in batch if a.event.agent_id == email
    ]
    assert _flat(archive.read(task_name="research")) == [
        a.event_id for a in batch if a.event.agent_id in (research, other)
    ]
    assert _flat(archive.read(task_name="research", agent_id=other)) == [
        a.event_id for a in batch if a.event.agent_id == other
    ]
    assert _flat(archive.read(task_name="nothing")) == []


def test_an_agents_earlier_unnamed_events_match_its_task_name(engine: Engine) -> None:
    agent = uuid.uuid4()
    evs: list[Event] = [
        TaskProgress(agent_id=agent, task_name="", message="before the name"),
        TaskQueued(agent_id=agent, task_name="late", queue="q", message="queued"),
    ]
    archive = Archive(engine)
    archive.insert(_applied(evs))
    assert [a.event.message for p in archive.read(task_name="late") for a in p] == [
        "before the name",
        "queued",
    ]


def test_read_agents_keeps_the_kinds_asked_in_log_order(engine: Engine) -> None:
    agents = [uuid.uuid4() for _ in range(3)]
    batch = _applied([e for agent in agents for e in lifecycle(agent, steps=2)])
    archive = Archive(engine, page=2)
    archive.insert(batch)

    kinds = (TaskQueued, TaskStarted, TaskCompleted, TaskFailed)
    read = [a for page in archive.read_agents(agents[:2], kinds) for a in page]
    assert sorted(a.event_id for a in read) == sorted(
        a.event_id
        for a in batch
        if a.event.agent_id in agents[:2] and not isinstance(a.event, TaskProgress)
    )
    for agent in agents[:2]:
        mine = [a.position for a in read if a.event.agent_id == agent]
        assert mine == sorted(mine) and len(mine) == 3


def test_unarchived_and_archived_tell_which_events_are_kept(engine: Engine) -> None:
    batch = _applied(lifecycle(uuid.uuid4(), steps=4))
    archive = Archive(engine)
    archive.insert(batch[::2])

    assert archive.unarchived(batch) == batch[1::2]
    assert archive.unarchived([]) == []
    ids = [a.event_id for a in batch] + [f"{_T0 + 100}-0"]
    assert archive.archived(ids) == {a.event_id for a in batch[::2]}


def test_an_event_is_archived_once(engine: Engine) -> None:
    batch = _applied(lifecycle(uuid.uuid4(), steps=1))
    archive = Archive(engine)
    archive.insert(batch)
    with pytest.raises(IntegrityError):
        archive.insert(batch[1:2])
    assert _flat(archive.read()) == [a.event_id for a in batch]


def test_bound_to_a_connection_it_writes_in_the_callers_transaction(engine: Engine) -> None:
    batch = _applied(lifecycle(uuid.uuid4(), steps=1))
    with engine.connect() as conn, conn.begin() as transaction:
        archive = Archive(conn)
        archive.insert(batch)
        assert archive.last() == batch[-1].position
        transaction.rollback()
    assert Archive(engine).last() is None


def test_undecodable_events_raise_or_are_skipped(engine: Engine) -> None:
    batch = _applied(lifecycle(uuid.uuid4(), steps=1))
    broken = Applied(batch[1].event_id, batch[1].event, b'{"not": "an event"}')
    archive = Archive(engine)
    archive.insert([batch[0], broken, *batch[2:]])

    with pytest.raises(EventDecodeError):
        list(archive.read())
    read = _flat(archive.read(skip_undecodable=True))
    assert read == [a.event_id for a in batch if a.event_id != broken.event_id]


def test_prune_removes_in_batches_and_keeps_tasks_not_ended(engine: Engine) -> None:
    ended = [uuid.UUID(int=i + 1, version=4) for i in range(4)]
    running = uuid.uuid4()
    evs = [e for agent in ended for e in lifecycle(agent, steps=1)]
    evs += lifecycle(running, steps=1)[:-1]  # no end: its activity stays RUNNING
    batch = _applied(evs)
    with engine.begin() as conn:
        projection.apply(conn, batch)
    archive = Archive(engine)
    below = batch[-2].position  # everything but the last two events is older

    counts = list(archive.prune(below, batch_size=3))
    assert all(0 < c <= 3 for c in counts[:-1]) and counts[-1] <= 3
    kept = [a for page in archive.read() for a in page]
    assert {a.event_id for a in kept} == {
        a.event_id for a in batch if a.event.agent_id == running or a.position >= below
    }
    assert sum(counts) == len(batch) - len(kept)
    assert list(archive.prune(below, batch_size=3)) == [0]


def test_positions_read_back_as_the_stream_ids_inserted(engine: Engine) -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    agent = uuid.uuid4()
    event = TaskQueued(agent_id=agent, task_name="t", queue="q", message="m", ts=at)
    big = Applied("9999999999999-12345", event, events.encode(event))
    archive = Archive(engine)
    archive.insert([big])
    (read,) = [a for page in archive.read() for a in page]
    assert read.position == (9999999999999, 12345)
    assert read.ts == at.replace(tzinfo=None)


def test_partitions_keep_the_same_ids_apart(engine: Engine) -> None:
    """An entry id is unique within its partition's log only: the same ids in two
    partitions are archived twice, and each partition reads, bounds and prunes its own."""
    a, b = uuid.uuid4(), uuid.uuid4()
    first = _applied(lifecycle(a, steps=2))
    second = _applied(lifecycle(b, steps=1))  # the same ids as the start of `first`
    zero, two = Archive(engine, page=2), Archive(engine, page=2, partition=2)
    zero.insert(first)
    two.insert(second)

    assert _flat(zero.read()) == [r.event_id for r in first]
    assert {r.event.agent_id for p in two.read() for r in p} == {b}
    assert _flat(two.read(agent_id=a)) == []
    assert two.bounds() == (second[0].position, second[-1].position)
    assert zero.last() == first[-1].position
    assert two.archived([r.event_id for r in first]) == {r.event_id for r in second}
    assert two.unarchived(first) == first[len(second) :]
    assert zero.partitions() == [0] and two.partitions() == [2]
    with pytest.raises(IntegrityError):
        two.insert(second[:1])

    every = Archive(engine, page=3, partition=None)
    assert every.partitions() == [0, 2]
    assert every.bounds() == (first[0].position, first[-1].position)
    merged = [(r.position, r.event.agent_id) for p in every.read() for r in p]
    assert merged == sorted(
        [(r.position, a) for r in first] + [(r.position, b) for r in second],
        key=lambda t: (t[0], t[1] != a),  # time, then partition (a's is 0)
    )
    assert all(len(p) == 3 for p in list(every.read())[:-1])
    assert _flat(every.read(agent_id=b)) == [r.event_id for r in second]
    kinds = (TaskQueued, TaskStarted, TaskCompleted, TaskFailed)
    both = [(r.event.agent_id, r.event_id) for p in every.read_agents([a, b], kinds) for r in p]
    assert sorted(both) == sorted(
        [(a, r.event_id) for r in first if not isinstance(r.event, TaskProgress)]
        + [(b, r.event_id) for r in second if not isinstance(r.event, TaskProgress)]
    )
    with pytest.raises(ValueError, match="name a partition"):
        every.insert(first)

    # Pruning partition 2 leaves partition 0's events with the same ids alone.
    assert sum(two.prune(second[-1].position.after(), batch_size=10)) == len(second)
    assert list(two.read()) == []
    assert _flat(zero.read()) == [r.event_id for r in first]
