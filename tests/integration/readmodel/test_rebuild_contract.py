"""The rebuild contract of issue 15, on SQLite and on PostgreSQL: real work through a pool and a
projector (tasks that succeed, fail at once, succeed after a retry and fail after retries, a
tree of a parent and the children its handler queued, pipeline runs that complete and fail),
then

- `ax.activity.stats` agrees with statistics computed here from the raw events of the Redis
  log, by the definitions of docs/activity.md (counts, success and retry rates, nearest-rank
  percentiles of the queue wait and the run, normalised errors, buckets of creation time);
- `children` and the tree in `detail` agree with the events' parent ids;
- a rebuild of the read model from the archive gives the very same statistics, children and
  detail, and so does a rebuild of the same archive into the other database;
- an async session reads the same."""

from __future__ import annotations

import re
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec import events
from agentexec.activity.models import ArchivedEvent
from agentexec.projector import Projector
from agentexec.projector.rebuild import rebuild
from tests.apps.basic import Echo, Flaky, Spawn
from tests.apps.workflows import InputContext, pipeline, runs_file
from tests.support.logs import log_entries
from tests.support.waiting import scaled

from .conftest import PostgresSchema, sqlite_engine
from .test_async_reads import async_url

EPOCH = datetime(1970, 1, 1)


async def run_work(tmp_path: Path) -> list[uuid.UUID]:
    """Every kind of task, run to its end; the agent ids of the trees' parents."""
    tasks = [
        await ax.enqueue("echo", Echo(text=str(i)), metadata={"team": "a" if i < 2 else "b"})
        for i in range(4)
    ]
    tasks += [await ax.enqueue("boom", Echo(text=f"item {i}")) for i in range(2)]
    tasks.append(await ax.enqueue("flaky", Flaky(path=str(tmp_path / "once"), failures=1)))
    tasks.append(await ax.enqueue("flaky", Flaky(path=str(tmp_path / "always"), failures=5)))
    parent = await ax.enqueue("spawn", Spawn(children=3))
    runs = [
        await pipeline.enqueue(context=InputContext(company=company))
        for company in ("Acme", "fail-Acme")
    ]
    try:
        for task in [*tasks, *runs]:
            try:
                await ax.get_result(task, timeout=scaled(60))
            except ax.TaskFailedError:
                pass
        for child in await ax.get_result(parent, timeout=scaled(30)):
            await ax.get_result(child, timeout=scaled(30))
    finally:
        for run in runs:
            runs_file(run.agent_id).unlink(missing_ok=True)
    return [parent.agent_id, *(r.agent_id for r in runs)]


# Statistics from the events, by the definitions of docs/activity.md, without the library's
# fold (agentexec.activity.state) or statistics module.


@dataclass
class Told:
    """What the events tell of one task."""

    name: str = ""
    status: str | None = None
    created: datetime = EPOCH
    parent: uuid.UUID | None = None
    retries: int = 0
    due: datetime | None = None
    start: datetime | None = None
    waits: list[float] = field(default_factory=list)
    runs: list[float] = field(default_factory=list)
    error: str | None = None


STATUSES = ("queued", "running", "complete", "error", "canceled")
STATUS_OF = {
    events.TaskQueued: "queued",
    events.TaskRetried: "queued",  # waits for its next attempt
    events.TaskStarted: "running",
    events.TaskProgress: "running",
    events.TaskCompleted: "complete",
    events.TaskFailed: "error",
    events.TaskCanceled: "canceled",
}


def naive(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


def seconds(since: datetime, until: datetime) -> float:
    return max((until - since).total_seconds(), 0.0)


async def told_by_the_log() -> dict[uuid.UUID, Told]:
    entries = await log_entries()
    tasks: defaultdict[uuid.UUID, Told] = defaultdict(Told)
    for _, fields in entries:
        event = events.decode_entry(fields)
        status = STATUS_OF.get(type(event))
        if status is None:
            continue
        task, ts = tasks[event.agent_id], naive(event.ts)
        if task.status in ("complete", "error", "canceled"):
            continue  # the first end is final
        if task.status is None:  # its first event
            task.created = ts
        task.name = task.name or event.task_name
        task.status = status
        if isinstance(event, events.TaskQueued):
            task.parent = event.parent_id
            task.due = task.due or ts
        elif isinstance(event, events.TaskStarted):
            assert task.start is None, "no worker died in this workload: no redelivery"
            assert task.due is not None
            task.waits.append(seconds(task.due, ts))
            task.start = ts
        elif isinstance(event, events.TaskRetried):
            assert task.start is not None
            task.runs.append(seconds(task.start, ts))
            task.retries += 1
            task.start, task.due = None, ts + timedelta(seconds=event.delay)
        elif task.start is not None:  # the end of the attempt that runs
            task.runs.append(seconds(task.start, ts))
            task.start = None
        if isinstance(event, events.TaskFailed):
            task.error = event.error
    return dict(tasks)


def nearest_rank(values: list[float], p: int) -> float:
    return sorted(values)[-(-p * len(values) // 100) - 1]  # rank ceil(p/100 * n), exactly


def durations(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "mean": None, "p50": None, "p95": None, "max": None}
    return {
        "count": len(values),
        "mean": pytest.approx(sum(values) / len(values), abs=2e-6),
        "p50": pytest.approx(nearest_rank(values, 50), abs=2e-6),
        "p95": pytest.approx(nearest_rank(values, 95), abs=2e-6),
        "max": pytest.approx(max(values), abs=2e-6),
    }


def normalised(error: str) -> str:
    """Enough of the documented normalisation for this workload's errors: the first line,
    numbers as `<n>`."""
    return re.sub(r"\d+", "<n>", error.splitlines()[0])


def expected_figures(name: str | None, tasks: list[Told]) -> dict[str, Any]:
    counts = Counter(t.status for t in tasks)
    ended = counts["complete"] + counts["error"] + counts["canceled"]
    errors = Counter(normalised(t.error) for t in tasks if t.error)
    return {
        "task_name": name,
        "total": len(tasks),
        "counts": {s: counts[s] for s in STATUSES},
        "success_rate": pytest.approx(counts["complete"] / ended) if ended else None,
        "retry_rate": pytest.approx(sum(1 for t in tasks if t.retries) / len(tasks)),
        "retries": sum(t.retries for t in tasks),
        "queue_wait": durations([sum(t.waits) for t in tasks if t.waits]),
        "run": durations([sum(t.runs) for t in tasks if t.runs]),
        "errors": sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))[:5],
    }


def figures(row: ax.activity.TaskStatsSchema) -> dict[str, Any]:
    got = row.model_dump(exclude={"errors"})
    got["errors"] = [(e.message, e.count) for e in row.errors]
    return got


def expected_stats(tasks: list[Told]) -> list[dict[str, Any]]:
    """Overall, then per task name (sorted), as `stats` orders them."""
    by_name: defaultdict[str, list[Told]] = defaultdict(list)
    for task in tasks:
        by_name[task.name].append(task)
    return [expected_figures(None, tasks)] + [
        expected_figures(name, by_name[name]) for name in sorted(by_name)
    ]


def bucket_totals(tasks: list[Told]) -> Counter[datetime]:
    """Tasks per second of creation (buckets of one second since the epoch)."""
    return Counter(
        EPOCH + timedelta(seconds=(t.created - EPOCH) // timedelta(seconds=1)) for t in tasks
    )


# The read model's answers, in a comparable form.


def reads(engine: Engine, agent_ids: list[uuid.UUID]) -> dict[str, Any]:
    """Statistics (all, by bucket, by name, by metadata), and the children and detail (log
    rows without their serial id: PostgreSQL sequences may leave gaps) of every task."""
    with Session(engine) as s:
        details = {}
        for agent_id in agent_ids:
            detail = ax.activity.detail(s, agent_id)
            assert detail is not None, agent_id
            details[agent_id] = detail.model_dump(exclude={"logs": {"__all__": {"id"}}})
        return {
            "stats": ax.activity.stats(s),
            "buckets": ax.activity.stats(s, bucket=timedelta(seconds=1)),
            "named": ax.activity.stats(s, task_name=["flaky", "ResearchPipeline"]),
            "team": ax.activity.stats(s, metadata={"team": "a"}),
            "children": {a: ax.activity.children(s, a) for a in agent_ids},
            "details": details,
        }


def the_other_database(engine: Engine, tmp_path: Path, postgres: PostgresSchema) -> Engine:
    """An empty read model on the backend `engine` is not on."""
    if engine.url.get_backend_name() == "sqlite":
        postgres.truncate()
        return postgres.engine
    return sqlite_engine(tmp_path / "other.db")


def copy_archive(source: Engine, target: Engine) -> int:
    with Session(source) as s:
        archived = [
            {c.key: getattr(e, c.key) for c in ArchivedEvent.__mapper__.column_attrs}
            for e in s.scalars(select(ArchivedEvent))
        ]
    with target.begin() as conn:
        conn.execute(insert(ArchivedEvent), archived)
    return len(archived)


@pytest.mark.postgres
async def test_statistics_children_and_detail_survive_a_rebuild(
    fast_retries: None,
    running_pool: ax.Pool,
    pipeline_pool: ax.Pool,
    projector: Projector,
    engine: Engine,
    postgres: PostgresSchema,
    tmp_path: Path,
) -> None:
    parents = await run_work(tmp_path)
    await projector.catch_up()
    told = await told_by_the_log()
    agent_ids = list(told)
    tasks = list(told.values())
    projected = reads(engine, agent_ids)

    # What ran: every kind of task the contract covers.
    stats = projected["stats"]
    by_name = {row.task_name: row for row in stats.tasks}
    assert set(by_name) == {
        "echo",
        "boom",
        "flaky",
        "spawn",
        "ResearchPipeline",
        "ResearchPipeline.gather_data",
        "ResearchPipeline.analyze",
        "ResearchPipeline.report",
    }
    assert by_name["echo"].total == 7  # 4, and the 3 children of the spawn
    assert by_name["flaky"].retries == 3 and by_name["flaky"].counts["error"] == 1
    assert by_name["ResearchPipeline"].counts == {
        "queued": 0,
        "running": 0,
        "complete": 1,
        "error": 1,
        "canceled": 0,
    }

    # Statistics, against the events.
    assert [figures(r) for r in [stats.overall, *stats.tasks]] == expected_stats(tasks)
    examples = {e.message: e.example for r in stats.tasks for e in r.errors}
    oldest: dict[str, str] = {}
    for _, error in sorted((t.created, t.error) for t in tasks if t.error is not None):
        oldest.setdefault(normalised(error), error)
    assert examples == oldest
    named = projected["named"]
    assert [figures(r) for r in [named.overall, *named.tasks]] == expected_stats(
        [t for t in tasks if t.name in ("flaky", "ResearchPipeline")]
    )
    assert projected["team"].overall.total == 2
    buckets = projected["buckets"].buckets
    expected_buckets = bucket_totals(tasks)
    assert {b.start.replace(tzinfo=None): b.overall.total for b in buckets if b.overall.total} == (
        expected_buckets
    )
    assert buckets[0].start.replace(tzinfo=None) == min(expected_buckets)
    assert buckets[-1].start.replace(tzinfo=None) == max(expected_buckets)
    assert all(b.end - b.start == timedelta(seconds=1) for b in buckets)

    # Trees, against the events' parent ids.
    kids: defaultdict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for agent_id, task in told.items():
        if task.parent is not None:
            kids[task.parent].append(agent_id)
    assert set(kids) == set(parents) and all(len(kids[p]) == 3 for p in parents)
    for agent_id, task in told.items():
        tree = projected["children"][agent_id]
        assert tree is not None
        assert [i.agent_id for i in tree.items] == kids[agent_id]  # oldest first
        assert tree.total == len(kids[agent_id])
        counts = dict.fromkeys(STATUSES, 0)
        for kid in kids[agent_id]:
            counts[told[kid].status] += 1  # type: ignore[index]
        assert tree.counts == counts
        detail = projected["details"][agent_id]
        assert [c["agent_id"] for c in detail["children"]] == kids[agent_id]
        assert detail["children_counts"] == tree.counts
        assert (detail["status"], detail["retries"], detail["parent_id"]) == (
            task.status,
            task.retries,
            task.parent,
        )

    # A rebuild from the archive changes nothing, and neither does one into the other database.
    assert await rebuild(engine) > len(agent_ids)
    assert reads(engine, agent_ids) == projected
    other = the_other_database(engine, tmp_path, postgres)
    try:
        copied = copy_archive(engine, other)
        assert await rebuild(other) == copied
        assert reads(other, agent_ids) == projected
    finally:
        if other is not postgres.engine:
            other.dispose()

    async_engine = create_async_engine(async_url(engine))
    try:
        async with AsyncSession(async_engine) as session:
            assert await ax.activity.stats(session) == stats
            assert (
                await ax.activity.children(session, parents[0])
                == (projected["children"][parents[0]])
            )
    finally:
        await async_engine.dispose()
