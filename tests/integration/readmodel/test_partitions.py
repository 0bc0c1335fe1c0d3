"""The projector with AGENTEXEC_PARTITIONS=3: each partition's log projected exactly, with
its own checkpoint, archive rows, trim and owner; two projector processes share the
partitions and one takes the other's over when it dies; a rebuild gives the same tables."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import timedelta

import msgspec
import pytest
from sqlalchemy import Engine, func, select

import agentexec as ax
from agentexec import events
from agentexec.activity.models import Activity, ActivityLog, ArchivedEvent, Checkpoint
from agentexec.connection import close_redis, get_sync_redis
from agentexec.events import Event, TaskCompleted, TaskQueued, TaskStarted
from agentexec.partitions import Partitions
from agentexec.projector import Projector
from agentexec.projector.rebuild import rebuild
from agentexec.projector.replay import replay
from agentexec.projector.retention import prune_archive
from agentexec.runtime import current
from agentexec.streams import PROJECTOR_GROUP
from tests.support.waiting import scaled

from .conftest import database_url
from .test_faults import ProjectorProcess, count
from .workload import snapshot, traffic, wait_until

P = 3


@pytest.fixture
def partitions(redis_conf: str, monkeypatch: pytest.MonkeyPatch) -> Partitions:
    """Three partitions, here and in the processes the test starts."""
    ax.CONF.partitions = P
    monkeypatch.setenv("AGENTEXEC_PARTITIONS", str(P))
    return current().partitions


def placed(evs: list[Event], partitions: Partitions) -> list[Event]:
    """`evs` with each agent moved into a partition, round robin over the agents."""
    moved: dict[uuid.UUID, uuid.UUID] = {}
    for e in evs:
        if e.agent_id not in moved:
            moved[e.agent_id] = partitions.place(e.agent_id, len(moved) % len(partitions))
    return [msgspec.structs.replace(e, agent_id=moved[e.agent_id]) for e in evs]


def append(evs: list[Event], partitions: Partitions) -> dict[int, str]:
    """XADD each event to its partition's log, the n-th of every partition at id
    `base + n`-0 (so the partitions share ids), `base` a minute back (so that a hot window of 0
    keeps none of them) or above the last `append`; returns each partition's last id."""
    base = max(int(time.time() * 1000) - 60_000, _top[0])
    pipe = get_sync_redis().pipeline(transaction=False)
    appended: Counter[int] = Counter()
    last: dict[int, str] = {}
    for e in evs:
        p = partitions.of(e.agent_id)
        appended[p] += 1
        last[p] = f"{base + appended[p]}-0"
        pipe.xadd(partitions.keys(p).events, events.entry(e), id=last[p])
    pipe.execute()
    _top[0] = base + max(appended.values(), default=0)
    return last


_top = [0]
"""The highest id's milliseconds `append` used: the next one appends above it."""


def checkpoints(engine: Engine, partitions: Partitions) -> dict[int, str | None]:
    with engine.connect() as conn:
        found = dict(conn.execute(select(Checkpoint.name, Checkpoint.position)).all())
    return {p: found.get(partitions.keys(p).events) for p in partitions}


def owners(partitions: Partitions) -> list[str | None]:
    client = get_sync_redis()
    held = [client.get(partitions.keys(p).projector_lease) for p in partitions]
    return [h.decode() if isinstance(h, bytes) else None for h in held]


async def test_three_partitions_are_projected_exactly(
    engine: Engine, partitions: Partitions
) -> None:
    evs = placed(traffic(900, seed=5), partitions)
    last = append(evs, partitions)
    projector = Projector(engine, batch_size=100, lease_seconds=5)
    assert await projector.catch_up() == len(evs)

    assert checkpoints(engine, partitions) == last
    assert count(engine, ArchivedEvent) == len(evs)
    assert count(engine, ActivityLog) == len(evs)
    with engine.connect() as conn:
        per_partition = Counter(conn.execute(select(ArchivedEvent.partition)).scalars())
        shared = conn.execute(
            select(ArchivedEvent.stream_ms, ArchivedEvent.stream_seq)
            .group_by(ArchivedEvent.stream_ms, ArchivedEvent.stream_seq)
            .having(func.count() == P)
        ).all()
        rows = {a.agent_id: a for a in conn.execute(select(Activity)).all()}
    assert per_partition == Counter(partitions.of(e.agent_id) for e in evs)
    assert shared, "the same entry id is archived once per partition"
    ends = {e.agent_id: e for e in evs}
    assert set(rows) == set(ends)
    for agent_id, end in ends.items():
        assert rows[agent_id].status == type(end).status
    for p in partitions:
        pending = get_sync_redis().xpending(partitions.keys(p).events, PROJECTOR_GROUP)
        assert pending["pending"] == 0  # type: ignore[index]

    live = snapshot(engine, checkpoint=True)
    assert await rebuild(engine) == len(evs)
    assert snapshot(engine, checkpoint=True) == live

    # Replay merges the partitions in time order, each agent's events in its log order.
    replayed = list(replay(engine))
    assert len(replayed) == len(evs)
    assert [r.position for r in replayed] == sorted(r.position for r in replayed)
    for agent_id in list(ends)[:5]:
        mine = [r.event for r in replayed if r.event.agent_id == agent_id]
        assert mine == [e for e in evs if e.agent_id == agent_id]
    await close_redis()


async def test_each_partitions_log_is_trimmed_below_its_checkpoint(
    engine: Engine, partitions: Partitions
) -> None:
    ax.CONF.log_hot_window = 0
    evs = placed(traffic(300, seed=6), partitions)
    append(evs, partitions)
    projector = Projector(engine, batch_size=50, lease_seconds=5)
    projector.retention.interval = 0
    assert await projector.catch_up() == len(evs)
    more = placed(traffic(30, seed=8), partitions)
    last = append(more, partitions)
    assert await projector.catch_up() == len(more)

    client = get_sync_redis()
    for p in partitions:
        kept = [i.decode() for i, _ in client.xrange(partitions.keys(p).events)]
        assert kept == [last[p]], p  # everything below the partition's checkpoint went
    assert projector.retention.trimmed == len(evs) + len(more) - P
    assert count(engine, ArchivedEvent) == len(evs) + len(more)
    await close_redis()


async def test_two_projector_processes_share_the_partitions_and_take_over(
    engine: Engine, partitions: Partitions, processes: list[ProjectorProcess]
) -> None:
    url = database_url(engine)
    processes.extend([ProjectorProcess(url), ProjectorProcess(url)])
    pids = {str(p.process.pid) for p in processes}

    def holders() -> set[str]:
        return {o.split(":")[1] for o in owners(partitions) if o is not None}

    # Both hold a share: two partitions and one.
    await wait_until(lambda: holders() == pids, timeout=30)

    evs = placed(traffic(1500, seed=9), partitions)
    last = append(evs, partitions)
    await wait_until(lambda: checkpoints(engine, partitions) == last, timeout=30)

    # The one holding two dies; the other takes every partition over.
    held = Counter(o.split(":")[1] for o in owners(partitions) if o is not None)
    [(victim, _)] = held.most_common(1)
    dead = next(p for p in processes if str(p.process.pid) == victim)
    dead.kill()
    more = placed(traffic(600, seed=10), partitions)
    last = append(more, partitions)
    await wait_until(lambda: holders() == pids - {victim} and None not in owners(partitions))
    await wait_until(lambda: checkpoints(engine, partitions) == last, timeout=30)
    assert [p.stop() for p in processes if p is not dead] == [0]

    assert count(engine, ArchivedEvent) == len(evs) + len(more)
    assert count(engine, ActivityLog) == len(evs) + len(more)
    live = snapshot(engine, checkpoint=True)
    await rebuild(engine)
    assert snapshot(engine, checkpoint=True) == live
    await close_redis()


async def test_projectors_hand_partitions_over_as_they_come_and_go(
    engine: Engine, partitions: Partitions
) -> None:
    """In one process: a projector alone holds the three partitions; a second one that
    starts gets its share handed over; when the first stops, the second holds all three."""
    first = Projector(engine, batch_size=100, lease_seconds=0.6, name="first")
    second = Projector(engine, batch_size=100, lease_seconds=0.6, name="second")
    stops = {"first": asyncio.Event(), "second": asyncio.Event()}
    runs = {"first": asyncio.create_task(first.run(stops["first"]))}
    try:
        await wait_until(lambda: owners(partitions) == ["first"] * P)
        runs["second"] = asyncio.create_task(second.run(stops["second"]))
        await wait_until(lambda: set(owners(partitions)) == {"first", "second"})
        evs = placed(traffic(600, seed=11), partitions)
        last = append(evs, partitions)
        await wait_until(lambda: checkpoints(engine, partitions) == last)
        stops["first"].set()
        await runs["first"]
        await wait_until(lambda: owners(partitions) == ["second"] * P)
        more = placed(traffic(300, seed=12), partitions)
        last = append(more, partitions)
        await wait_until(lambda: checkpoints(engine, partitions) == last)
    finally:
        for stop in stops.values():
            stop.set()
        await asyncio.gather(*runs.values())
    assert first.applied > 0 and second.applied > 0
    assert first.applied + second.applied == len(evs) + len(more)
    assert count(engine, ArchivedEvent) == len(evs) + len(more)
    await close_redis()


async def test_redis_flushed_each_partition_restores_its_own_tasks(
    engine: Engine, partitions: Partitions
) -> None:
    """Redis comes back empty: each partition's queued tasks are queued again in that
    partition, and its results stored again, once."""
    queued = [
        TaskQueued(
            agent_id=partitions.new_id(p),
            task_name="research",
            queue="q",
            context=msgspec.Raw(b"{}"),
            message="Waiting to start.",
        )
        for p in partitions
    ]
    done = [msgspec.structs.replace(e, agent_id=partitions.new_id(p)) for p, e in enumerate(queued)]
    ends: list[Event] = [
        TaskStarted(agent_id=e.agent_id, task_name="research", message="Task started.")
        for e in done
    ]
    ends += [
        TaskCompleted(
            agent_id=e.agent_id, task_name="research", message="done", result=msgspec.Raw(b"7")
        )
        for e in done
    ]
    append([*queued, *done, *ends], partitions)
    assert await Projector(engine, lease_seconds=5).catch_up() == 4 * P
    get_sync_redis().flushall()

    assert await Projector(engine, lease_seconds=5).catch_up() == P  # the queued again
    client = get_sync_redis()
    for p in partitions:
        entries = [
            events.decode_entry(fields).agent_id
            for stream in partitions.keys(p).queues("q")
            for _, fields in client.xrange(stream)
        ]
        assert entries == [queued[p].agent_id], p
    for e in done:
        assert await ax.get_result(e.agent_id, timeout=scaled(2)) == 7
    assert await Projector(engine, lease_seconds=5).catch_up() == 0  # restored once
    await close_redis()


async def test_prune_removes_each_partitions_events_below_its_checkpoint(
    engine: Engine, partitions: Partitions
) -> None:
    ax.CONF.result_ttl = 1
    evs = placed(traffic(300, seed=14), partitions)
    append(evs, partitions)
    projector = Projector(engine, batch_size=100, lease_seconds=5)
    assert await projector.catch_up(partitions=[0, 2]) == sum(
        1 for e in evs if partitions.of(e.agent_id) != 1
    )
    # Each partition's events go below its own checkpoint (partition 1 has none yet).
    archived = count(engine, ArchivedEvent)
    assert prune_archive(engine, timedelta(0)) == archived
    assert count(engine, ArchivedEvent) == 0
    await projector.catch_up()
    assert prune_archive(engine, timedelta(0)) == sum(
        1 for e in evs if partitions.of(e.agent_id) == 1
    )
    await close_redis()
