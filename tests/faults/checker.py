"""The invariants every fault test ends with, checked the same way for every fault.

1. Every enqueued task reaches exactly one terminal status: in the read model, and by exactly
   one terminal event (task.completed, task.failed or task.canceled) in the log (the SQL
   archive, which holds every projected event, and the Redis log, all of which is projected
   by then). No duplicate is allowed: the finish script refuses a second outcome. No event
   is in the log twice (byte for byte): scripts run again after a lost reply do not append.
   No entry of the Redis log was skipped: each is archived or dead-lettered with its id.
2. No task ran to completion twice: the ledger (one line per handler run that reached its
   end) has one line per completed task, except where the test says the fault allows a
   rerun (a worker killed or frozen after its handler returned: delivery is at least once).
3. Every result is retrievable with `ax.get_result` (or raises `TaskFailedError` for the
   tasks expected to fail), and agrees with the read model.
4. The read model equals a rebuild from the log: the archive is replayed into a copy of the
   database by the projector's `rebuild`, and every table compares equal.
5. Nothing is left QUEUED or RUNNING in the read model, nothing pending or queued in Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from uuid import UUID

from sqlalchemy import Engine, select

import agentexec as ax
from agentexec import events
from agentexec.activity.models import Activity, ArchivedEvent, Checkpoint
from agentexec.connection import get_redis
from agentexec.events import ACTIVE, TERMINAL, Status
from agentexec.projector.rebuild import rebuild
from agentexec.streams import WORKERS_GROUP
from tests.faults.cluster import Cluster
from tests.integration.readmodel.workload import snapshot, wait_until
from tests.support.waiting import scaled

TERMINAL_EVENTS = (events.TaskCompleted, events.TaskFailed, events.TaskCanceled)


async def _outcome(task: ax.Task, timeout: float) -> tuple[UUID, Status | None, object]:
    try:
        return task.agent_id, Status.COMPLETE, await ax.get_result(task, timeout=timeout)
    except ax.TaskFailedError as e:
        status = Status.CANCELED if e.error == "canceled" else Status.ERROR
        return task.agent_id, status, e.error
    except TimeoutError:
        return task.agent_id, None, None


def _checkpoint(engine: Engine, log: str) -> str | None:
    """How far the projector has applied the log `log` (one partition's), by its checkpoint."""
    with engine.connect() as conn:
        return conn.execute(select(Checkpoint.position).where(Checkpoint.name == log)).scalar()


def _last_entry(stream_entries: list[tuple[bytes, object]]) -> str | None:
    return stream_entries[-1][0].decode() if stream_entries else None


async def check(
    cluster: Cluster,
    tasks: list[ax.Task],
    *,
    statuses: dict[UUID, Status] | None = None,
    reruns: dict[UUID, int] | None = None,
    lost: set[UUID] | None = None,
    timeout: float = 90,
) -> None:
    """Wait for `tasks` to end, then assert the invariants and record the figures.

    `statuses` gives the terminal status expected of some tasks (default COMPLETE);
    `reruns`, how many extra completed runs the fault allows a task; `lost`, tasks the fault
    is documented to lose (FLUSHALL): they must be exactly the tasks that did not end, and
    they count as lost in the figures.
    """
    lost = lost or set()
    statuses = statuses or {}
    reruns = reruns or {}
    figures = cluster.figures
    figures.tasks = len(tasks)
    agent_ids = {t.agent_id for t in tasks}
    assert len(agent_ids) == len(tasks), "a task was enqueued twice under one agent id"

    # 3. Every result is retrievable.
    outcomes = list(
        await asyncio.gather(
            *(_outcome(t, scaled(timeout)) for t in tasks if t.agent_id not in lost)
        )
    )
    cluster.recovered()
    outcomes += await asyncio.gather(*(_outcome(t, 0.5) for t in tasks if t.agent_id in lost))
    ended = {aid: status for aid, status, _ in outcomes if status is not None}
    figures.tasks_lost = len(agent_ids) - len(ended)
    missing = agent_ids - set(ended)
    assert missing == lost, (
        f"the tasks that did not end are not the ones expected: {len(missing - lost)} did not "
        f"end ({sorted(map(str, missing - lost))[:5]}...), {len(lost - missing)} expected "
        "lost ended"
    )
    agent_ids -= lost
    for aid, status, value in outcomes:
        if status is Status.COMPLETE:
            assert getattr(value, "agent_id", aid) == aid, f"{aid} got another task's result"

    # The projector has applied the whole Redis log: every partition's.
    client = get_redis()
    partitions = [ax.runtime.current().partitions.keys(p) for p in ax.runtime.current().partitions]
    for keys in partitions:
        last = _last_entry(await client.xrevrange(keys.events, count=1))
        if last is not None:
            await wait_until(
                lambda keys=keys, last=last: _checkpoint(cluster.engine, keys.events) == last,
                timeout=timeout,
            )
    await cluster.stop_projectors()

    # 1. Exactly one terminal status, and exactly one terminal event, per task.
    with cluster.engine.connect() as conn:
        rows = {r.agent_id: r for r in conn.execute(select(Activity))}
        archived_data = [
            data
            for (data,) in conn.execute(
                select(ArchivedEvent.data).order_by(
                    ArchivedEvent.stream_ms, ArchivedEvent.stream_seq
                )
            )
        ]
    archived = [events.decode(data.encode()) for data in archived_data]
    terminal_events = Counter(e.agent_id for e in archived if isinstance(e, TERMINAL_EVENTS))
    in_log = {e.agent_id for e in archived if isinstance(e, events.TaskQueued)}
    problems: list[str] = []
    for aid in agent_ids:
        expected = statuses.get(aid, Status.COMPLETE)
        row = rows.get(aid)
        if aid not in ended:
            problems.append(f"{aid}: no result (lost)")
        elif ended[aid] is not expected:
            problems.append(f"{aid}: ended {ended[aid]}, expected {expected}")
        if aid not in in_log:
            problems.append(f"{aid}: its task.queued event is not in the archive")
        if row is None or row.status not in TERMINAL:
            problems.append(f"{aid}: read model says {row.status if row else 'nothing'}")
        elif aid in ended and row.status != ended[aid]:
            problems.append(f"{aid}: read model says {row.status}, result says {ended[aid]}")
        if terminal_events[aid] != 1:
            problems.append(f"{aid}: {terminal_events[aid]} terminal events in the log")
    # Nothing the Redis log holds was skipped by the projector: every entry is archived, or
    # dead-lettered with its id (an entry id is unique within its partition only).
    with cluster.engine.connect() as conn:
        archived_ids = {
            (partition, f"{ms}-{seq}")
            for partition, ms, seq in conn.execute(
                select(ArchivedEvent.partition, ArchivedEvent.stream_ms, ArchivedEvent.stream_seq)
            )
        }
    skipped = []
    for partition, keys in enumerate(partitions):
        letters = {
            (partition, fields[b"id"].decode())
            for _, fields in await client.xrange(keys.dead_letters)
            if b"id" in fields
        }
        known = archived_ids | letters
        skipped += [
            f"{partition}/{entry_id.decode()}"
            for entry_id, _ in await client.xrange(keys.events)
            if (partition, entry_id.decode()) not in known
        ]
    if skipped:
        problems.append(
            f"{len(skipped)} log entries neither archived nor dead-lettered: {skipped[:5]}"
        )
    # No event was appended twice: a script run again after its reply was lost finds the
    # event its first run appended (the same bytes: encoded once) instead of appending it.
    for data, count in Counter(archived_data).items():
        if count > 1:
            problems.append(f"appended {count} times: {data[:120]}")

    # 2. No task ran to completion twice (beyond what its fault allows): of the runs that
    # reached the end of the handler, one recorded the outcome (its pid is in the result);
    # any other must have been in a process the test killed or froze before it could record
    # it, or be allowed by `reruns`.
    ledger = Path(cluster.ledger)
    lines = ledger.read_text().splitlines() if ledger.exists() else []
    completions: dict[UUID, list[int]] = {}
    for line in lines:
        aid, pid = line.split()
        completions.setdefault(UUID(aid), []).append(int(pid))
    assert set(completions) <= agent_ids | lost, "the ledger names a task nobody enqueued"
    results = {aid: value for aid, status, value in outcomes if status is Status.COMPLETE}
    for aid in agent_ids:
        pids = list(completions.get(aid, []))
        if aid in results:
            recorded = getattr(results[aid], "pid", None)
            if recorded not in pids:
                problems.append(f"{aid}: COMPLETE, but no run of its handler reached its end")
            else:
                pids.remove(recorded)
        unexplained = [p for p in pids if p not in cluster.killed_pids]
        if len(unexplained) > reruns.get(aid, 0):
            figures.completed_twice += 1
            problems.append(f"{aid}: ran to completion again in live process(es) {unexplained}")
        elif pids:
            figures.reruns += 1

    # 5. Nothing left QUEUED or RUNNING, nothing held or waiting in Redis.
    active = [
        f"{aid} {r.status}" for aid, r in rows.items() if r.status in ACTIVE and aid not in lost
    ]
    if active:
        problems.append(f"left active in the read model: {active}")
    for keys in partitions:
        for stream in keys.queues(ax.CONF.queue_name):
            if await client.exists(stream):
                pending = await client.xpending(stream, WORKERS_GROUP)
                if pending["pending"] or await client.xlen(stream):
                    problems.append(f"{stream}: {pending['pending']} pending, entries left")
        if await client.zcard(keys.delayed(ax.CONF.queue_name)):
            problems.append(f"tasks left in the delayed set of {keys.prefix}")

    assert not problems, "\n".join(problems[:30])

    # 4. The read model equals a rebuild from the log, in a fresh copy of the database.
    fresh, dispose = cluster.copy_database()
    try:
        started = time.monotonic()
        limit = scaled(60)
        await rebuild(fresh, timeout=limit)
        assert snapshot(fresh, checkpoint=True) == snapshot(cluster.engine, checkpoint=True)
        assert time.monotonic() - started < limit
    finally:
        dispose()
    cluster.finish()
