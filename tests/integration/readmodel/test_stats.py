"""Statistics and failure views against a real pool and projector: the same events projected
into SQLite and PostgreSQL give identical statistics (a contract), each figure agrees with one
computed here from the events themselves, a rebuild changes nothing, and the list's filters
and keyset cursor select what they say on both databases."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec import events
from agentexec.activity.models import Activity, ActivityCount, ArchivedEvent
from agentexec.activity.statistics import normalise_error, percentile
from agentexec.api import create_app
from agentexec.cli import main
from agentexec.events import Status
from agentexec.projector import Projector
from agentexec.projector.rebuild import rebuild
from tests.apps.basic import Echo, Flaky
from tests.support.logs import log_entries
from tests.support.waiting import scaled

from .conftest import PostgresSchema, database_url, sqlite_engine
from .test_async_reads import async_url
from .workload import append_all, lifecycle, traffic


async def run_workload(tmp_path: Path) -> list[ax.Task]:
    """Tasks that complete, fail at once, succeed after a retry and fail after retries."""
    tasks = [
        await ax.enqueue("echo", Echo(text=str(i)), metadata={"team": "a" if i < 2 else "b"})
        for i in range(4)
    ]
    tasks += [await ax.enqueue("boom", Echo(text=f"item {i}")) for i in range(3)]
    tasks.append(await ax.enqueue("flaky", Flaky(path=str(tmp_path / "f1"), failures=1)))
    tasks.append(await ax.enqueue("flaky", Flaky(path=str(tmp_path / "f2"), failures=5)))
    for task in tasks:
        try:
            await ax.get_result(task, timeout=scaled(30))
        except ax.TaskFailedError:
            pass
    return tasks


async def expected_from_events() -> dict[str | None, dict[str, Any]]:
    """The statistics computed from the log's events, by task name (None: all)."""
    entries = await log_entries()
    by_agent: dict[uuid.UUID, list[events.AnyEvent]] = {}
    names: dict[uuid.UUID, str] = {}
    for _, fields in entries:
        event = events.decode_entry(fields)
        by_agent.setdefault(event.agent_id, []).append(event)
        if isinstance(event, events.TaskQueued):
            names[event.agent_id] = event.task_name
    groups: dict[str | None, list[dict[str, Any]]] = {None: []}
    for agent, log in by_agent.items():
        status, retries, waits, runs, due, start, error = "queued", 0, [], [], None, None, None
        for e in log:
            if isinstance(e, events.TaskQueued):
                due = e.ts
            elif isinstance(e, events.TaskStarted):
                status, start = "running", e.ts
                waits.append(max((e.ts - due).total_seconds(), 0))
            elif isinstance(e, events.TaskRetried):
                retries += 1
                runs.append((e.ts - start).total_seconds())
                due = e.ts + timedelta(seconds=e.delay)
            elif isinstance(e, events.TaskCompleted | events.TaskFailed):
                runs.append((e.ts - start).total_seconds())
                status = "complete" if isinstance(e, events.TaskCompleted) else "error"
                error = getattr(e, "error", None)
        task = {
            "status": status,
            "retries": retries,
            "wait": sum(waits),
            "run": sum(runs),
            "error": error,
        }
        groups[None].append(task)
        groups.setdefault(names[agent], []).append(task)
    return {name: summarise(tasks) for name, tasks in groups.items()}


def summarise(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    statuses = Counter(t["status"] for t in tasks)
    ended = statuses["complete"] + statuses["error"]
    runs = sorted(t["run"] for t in tasks)
    waits = sorted(t["wait"] for t in tasks)
    errors = Counter(normalise_error(t["error"]) for t in tasks if t["error"])
    return {
        "total": len(tasks),
        "complete": statuses["complete"],
        "error": statuses["error"],
        "success_rate": statuses["complete"] / ended,
        "retry_rate": sum(1 for t in tasks if t["retries"]) / len(tasks),
        "retries": sum(t["retries"] for t in tasks),
        "run": (sum(runs) / len(runs), percentile(runs, 50), percentile(runs, 95), runs[-1]),
        "wait": (sum(waits) / len(waits), percentile(waits, 50), percentile(waits, 95), waits[-1]),
        "errors": dict(errors),
    }


def figures(row: ax.activity.TaskStatsSchema) -> dict[str, Any]:
    return {
        "total": row.total,
        "complete": row.counts["complete"],
        "error": row.counts["error"],
        "success_rate": row.success_rate,
        "retry_rate": row.retry_rate,
        "retries": row.retries,
        "run": (row.run.mean, row.run.p50, row.run.p95, row.run.max),
        "wait": (row.queue_wait.mean, row.queue_wait.p50, row.queue_wait.p95, row.queue_wait.max),
        "errors": {e.message: e.count for e in row.errors},
    }


def approx(expected: dict[str, Any]) -> dict[str, Any]:
    return {
        k: pytest.approx(v, abs=1e-5) if k in ("run", "wait", "success_rate", "retry_rate") else v
        for k, v in expected.items()
    }


def every_read(engine: Engine, since: datetime) -> dict[str, Any]:
    with Session(engine) as s:
        return {
            "all": ax.activity.stats(s),
            "day": ax.activity.stats(s, since=since, until=since + timedelta(days=1)),
            "buckets": ax.activity.stats(s, bucket=timedelta(seconds=1)),
            "named": ax.activity.stats(s, task_name=["flaky", "boom"]),
            "team": ax.activity.stats(s, metadata={"team": "a"}),
        }


@pytest.mark.postgres
async def test_statistics_agree_with_the_events_on_both_databases(
    fast_retries: None, running_pool: ax.Pool, postgres: PostgresSchema, tmp_path: Path
) -> None:
    started = datetime.now(UTC) - timedelta(seconds=1)
    await run_workload(tmp_path)
    postgres.truncate()
    lite = sqlite_engine(tmp_path / "agents.db")
    await Projector(lite).catch_up()
    # The log's consumer group follows one read model: PostgreSQL gets the same events
    # through its archive, which a rebuild applies with the projector's own projection.
    with Session(lite) as s:
        archived = [
            {c.key: getattr(e, c.key) for c in ArchivedEvent.__mapper__.column_attrs}
            for e in s.scalars(select(ArchivedEvent))
        ]
    with postgres.engine.begin() as conn:
        conn.execute(insert(ArchivedEvent), archived)
    assert await rebuild(postgres.engine) == len(archived)

    reads = {
        name: every_read(engine, started)
        for name, engine in (
            ("sqlite", lite),
            ("postgresql", postgres.engine),
        )
    }
    assert reads["sqlite"] == reads["postgresql"]  # identical, to the last bit

    got = reads["sqlite"]["all"]
    assert got == reads["sqlite"]["day"].model_copy(update={"since": None, "until": None})
    expected = await expected_from_events()
    assert {r.task_name: figures(r) for r in [got.overall, *got.tasks]} == {
        name: approx(e) for name, e in expected.items()
    }
    assert [r.task_name for r in got.tasks] == ["boom", "echo", "flaky"]
    boom = got.tasks[0]
    assert [(e.message, e.count) for e in boom.errors] == [("RuntimeError: boom: item <n>", 3)]
    assert boom.errors[0].example.startswith("RuntimeError: boom: item ")
    assert got.tasks[2].retries == 3 and got.tasks[2].retry_rate == 1.0

    buckets = reads["sqlite"]["buckets"].buckets
    assert sum(b.overall.total for b in buckets) == 9
    assert all(b.end - b.start == timedelta(seconds=1) for b in buckets)
    assert [b.start for b in buckets] == sorted(b.start for b in buckets)
    named = reads["sqlite"]["named"]
    assert [r.task_name for r in named.tasks] == ["boom", "flaky"] and named.overall.total == 5
    team = reads["sqlite"]["team"]
    assert (team.overall.total, team.tasks[0].task_name) == (2, "echo")

    async_engine = create_async_engine(async_url(postgres.engine))
    try:
        async with AsyncSession(async_engine) as session:
            assert await ax.activity.stats(session) == got
    finally:
        await async_engine.dispose()

    await rebuild(lite)
    assert every_read(lite, started) == reads["sqlite"]
    lite.dispose()


async def test_failure_views_and_the_cursor(
    fast_retries: None, running_pool: ax.Pool, projector: Projector, engine: Engine, tmp_path: Path
) -> None:
    tasks = await run_workload(tmp_path)
    # A task whose worker started it two hours ago and that still runs.
    stuck = uuid.uuid4()
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    append_all(
        [
            events.TaskQueued(agent_id=stuck, task_name="stuck", queue="q", ts=long_ago),
            events.TaskStarted(agent_id=stuck, task_name="stuck", worker="w", ts=long_ago),
        ]
    )
    await projector.catch_up()
    boom = {t.agent_id for t in tasks[4:7]}
    flaky = {t.agent_id for t in tasks[7:]}

    def ids(listing: ax.activity.ActivityListSchema) -> set[uuid.UUID]:
        return {i.agent_id for i in listing.items}

    with Session(engine) as s:
        failed = ax.activity.list(s, status="error")
        assert ids(failed) == boom | {tasks[8].agent_id} and failed.total == 4
        assert ids(ax.activity.list(s, retried=True)) == flaky
        assert ids(ax.activity.list(s, status=["error"], task_name="flaky")) == {tasks[8].agent_id}
        long = ax.activity.list(s, running_longer_than=timedelta(hours=1))
        assert ids(long) == {stuck}
        assert ax.activity.list(s, running_longer_than=timedelta(hours=3)).total == 0
        assert ids(ax.activity.list(s, status="queued")) == set()
        team = ax.activity.list(s, metadata={"team": "b"})
        assert ids(team) == {t.agent_id for t in tasks[2:4]}
        recent = ax.activity.list(s, since=datetime.now(UTC) - timedelta(hours=1))
        assert stuck not in ids(recent) and recent.total == 9

        everything = ax.activity.list(s, page_size=100)
        assert everything.items[0].agent_id == stuck  # active first
        assert everything.next_cursor is None and everything.total == 10
        walked, cursor, pages = [], None, 0
        while True:
            page = ax.activity.list(s, page_size=3, cursor=cursor)
            walked += [i.agent_id for i in page.items]
            pages += 1
            cursor = page.next_cursor
            if cursor is None:
                break
        assert walked == [i.agent_id for i in everything.items] and pages == 4
        by_page = [ax.activity.list(s, page=p, page_size=3).items for p in range(1, 5)]
        assert [i.agent_id for items in by_page for i in items] == walked
        with pytest.raises(ValueError, match="cursor 'nope' is not one a list returns"):
            ax.activity.list(s, cursor="nope")
        with pytest.raises(ValueError, match="status 'lost' is not one of"):
            ax.activity.list(s, status="lost")

    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answer = await client.get("/api/activities", params={"status": "error", "page_size": 2})
        body = answer.json()
        assert (answer.status_code, body["total"], len(body["items"])) == (200, 4, 2)
        second = await client.get(
            "/api/activities",
            params={"status": "error", "page_size": 2, "cursor": body["next_cursor"]},
        )
        assert {i["agent_id"] for i in body["items"] + second.json()["items"]} == {
            str(i) for i in boom | {tasks[8].agent_id}
        }
        assert second.json()["next_cursor"] is None
        stuck_list = await client.get("/api/activities", params={"running_longer_than": 3600})
        assert [i["agent_id"] for i in stuck_list.json()["items"]] == [str(stuck)]
        team = await client.get("/api/activities", params={"metadata": "team=a"})
        assert team.json()["total"] == 2
        stats = await client.get(
            "/api/activities/stats", params={"task_name": "boom", "bucket_seconds": 60}
        )
        assert stats.status_code == 200
        assert stats.json()["overall"]["counts"]["error"] == 3
        assert stats.json()["buckets"][0]["overall"]["total"] == 3


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 100)) == (
        10.0,
        19.0,
        20.0,
    )
    assert percentile([3.0], 95) == 3.0
    assert percentile([1.0, 2.0], 50) == 1.0 and math.ceil(0.95 * 2) == 2


def test_errors_are_normalised() -> None:
    assert normalise_error("KeyError: user 1234 at 0xdeadbeef\ntraceback") == (
        "KeyError: user <n> at <hex>"
    )
    assert normalise_error(f"no agent {uuid.uuid4()} (sha 9f86d081884c7d65)") == (
        "no agent <id> (sha <hex>)"
    )
    assert normalise_error("") == ""


async def test_the_stats_command_prints_a_table(
    projector: Projector, engine: Engine, tmp_path: Path
) -> None:
    append_all(
        [e for i in range(10) for e in lifecycle(uuid.UUID(int=i + 1, version=4), "research")]
    )
    await projector.catch_up()
    url = database_url(engine)
    wide = CliRunner(env={"COLUMNS": "200"})
    shown = wide.invoke(main, ["stats", "--database-url", url])
    assert shown.exit_code == 0, shown.output
    assert "10 tasks, since" in shown.output
    rows = [line.replace("│", " ").split() for line in shown.output.splitlines()]
    research, everything, error = [r for r in rows if r[:1] in (["research"], ["(all)"])]
    # Agent ids 5 and 10 fail (see `lifecycle`).
    assert research[:9] == ["research", "10", "0", "0", "8", "2", "0", "80.0%", "0.0%"]
    assert everything[1:9] == research[1:9]
    assert error == ["research", "2", "x"]

    as_json = CliRunner().invoke(main, ["stats", "--database-url", url, "--all-time", "--json"])
    assert as_json.exit_code == 0, as_json.output
    with Session(engine) as s:
        assert ax.activity.ActivityStatsSchema.model_validate_json(as_json.output) == (
            ax.activity.stats(s)
        )

    bad = CliRunner().invoke(main, ["stats", "--database-url", url, "--since", "soon"])
    assert bad.exit_code == 2 and "is not a duration" in bad.output


def counted(engine: Engine) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
    """The activity counts table, and the same counted from the activity rows."""
    with engine.connect() as conn:
        kept = conn.execute(
            select(ActivityCount.agent_type, ActivityCount.status, ActivityCount.count)
        )
        rows = conn.execute(
            select(Activity.agent_type, Activity.status, func.count()).group_by(
                Activity.agent_type, Activity.status
            )
        )
        return (
            {(t, Status(s).name): n for t, s, n in kept},
            {(t, Status(s).name): n for t, s, n in rows},
        )


async def test_counts_follow_the_rows_through_batches_rebuild_and_prune(
    projector: Projector, engine: Engine
) -> None:
    append_all(traffic(3000, seed=3))
    projector.batch_size = 7  # statuses change across batches
    await projector.catch_up()
    kept, rows = counted(engine)
    assert kept == rows and sum(kept.values()) > 100
    with Session(engine) as s:
        assert ax.activity.list(s).total == sum(rows.values())
        errors = sum(n for (_, status), n in rows.items() if status == "ERROR")
        assert ax.activity.list(s, status="error", task_name="research").total == errors
        assert ax.activity.list(s, status=["queued", "running"]).total == ax.activity.active_count(
            s
        )

    await rebuild(engine)
    assert counted(engine) == (kept, rows)
    with Session(engine) as s:
        ax.activity.prune(s, older_than=timedelta(0), batch_size=50)
    kept, rows = counted(engine)
    assert kept == rows and all(status in ("QUEUED", "RUNNING") for _, status in kept)


def test_a_list_no_status_can_match_reads_nothing(engine: Engine) -> None:
    with Session(engine) as s:
        page = ax.activity.list(s, status="error", running_longer_than=timedelta(0))
    assert (page.items, page.total, page.next_cursor) == ([], 0, None)


def put_tasks(engine: Engine, tasks: list[dict[str, Any]]) -> None:
    """Activity rows as the projector leaves them; each dict gives some columns."""
    base = datetime(2026, 3, 1, 12)
    rows = []
    for i, given in enumerate(tasks):
        agent = uuid.uuid4()
        rows.append(
            {
                "id": agent,
                "agent_id": agent,
                "agent_type": "a",
                "status": Status.COMPLETE,
                "retries": 0,
                "attempts": 1,
                "queue_wait_seconds": None,
                "run_seconds": None,
                "error": None,
                "created_at": base + timedelta(microseconds=i),
                "updated_at": base,
                "last_event_id": f"{i}-0",
                **given,
            }
        )
    with engine.begin() as conn:
        conn.execute(insert(Activity), rows)


def test_duration_figures_are_nearest_rank_with_ties_and_gaps(engine: Engine) -> None:
    """Percentiles, means and maxima computed in SQL agree with the definitions, computed
    here: on sizes where 0.95 * n is whole (20, 40), with ties, with tasks that have no
    duration, and per task name as well as overall."""
    rng = __import__("random").Random(5)
    sizes = {"n1": 1, "n2": 2, "n20": 20, "n21": 21, "n40": 40, "n101": 101}
    tasks = []
    for name, n in sizes.items():
        for _ in range(n):
            tasks.append(
                {
                    "agent_type": name,
                    # Few distinct values: many ties; whole microseconds, as projected.
                    "run_seconds": rng.choice([0.5, 1.25, 2.000001, 7.0, 30.123456]),
                    "queue_wait_seconds": round(rng.random(), 6),
                }
            )
        tasks.append({"agent_type": name, "status": Status.QUEUED})  # no durations
    put_tasks(engine, tasks)
    with Session(engine) as s:
        got = ax.activity.stats(s)

    def reference(values: list[float]) -> tuple[Any, ...]:
        values = sorted(values)
        mean = round(sum(round(v * 1e6) for v in values) / len(values) / 1e6, 6)
        return (len(values), mean, percentile(values, 50), percentile(values, 95), values[-1])

    def durations(d: ax.activity.DurationStatsSchema) -> tuple[Any, ...]:
        return (d.count, d.mean, d.p50, d.p95, d.max)

    for row in [got.overall, *got.tasks]:
        mine = [t for t in tasks if row.task_name in (None, t["agent_type"]) and "status" not in t]
        assert durations(row.run) == reference([t["run_seconds"] for t in mine])
        assert durations(row.queue_wait) == reference([t["queue_wait_seconds"] for t in mine])
        assert row.counts["queued"] == (1 if row.task_name else len(sizes))
    assert [t.task_name for t in got.tasks] == sorted(sizes)


def test_buckets_hold_their_tasks_and_the_empty_ones_between(engine: Engine) -> None:
    hour = datetime(2026, 3, 1, 10)
    put_tasks(
        engine,
        [
            {"created_at": hour - timedelta(microseconds=1), "run_seconds": 1.0},
            {"created_at": hour, "run_seconds": 2.0, "agent_type": "b"},
            {"created_at": hour + timedelta(minutes=59), "run_seconds": 4.0},
            {
                "created_at": hour + timedelta(hours=3, minutes=1),
                "status": Status.ERROR,
                "error": "KeyError: 'user 12'",
            },
        ],
    )
    with Session(engine) as s:
        got = ax.activity.stats(s, bucket=timedelta(hours=1))
        empty = ax.activity.stats(s, since=hour + timedelta(days=1), bucket=timedelta(hours=1))
        with pytest.raises(ValueError, match="more than 10000"):
            ax.activity.stats(s, bucket=timedelta(seconds=1))
    assert got.bucket_seconds == 3600.0
    assert [b.start.replace(tzinfo=None) for b in got.buckets] == [
        hour + timedelta(hours=h) for h in (-1, 0, 1, 2, 3)
    ]
    assert [b.overall.total for b in got.buckets] == [1, 2, 0, 0, 1]
    assert [[t.task_name for t in b.tasks] for b in got.buckets] == [
        ["a"],
        ["a", "b"],
        [],
        [],
        ["a"],
    ]
    second = got.buckets[1]
    assert (second.overall.run.count, second.overall.run.p50, second.overall.run.max) == (
        2,
        2.0,
        4.0,
    )
    assert second.overall.run.mean == 3.0 and second.tasks[1].run.p95 == 2.0
    assert got.buckets[2].overall == got.buckets[2].overall.model_copy(
        update={"total": 0, "errors": [], "success_rate": None, "retry_rate": None}
    )
    assert [(e.message, e.count) for e in got.buckets[4].overall.errors] == [
        ("KeyError: 'user <n>'", 1)
    ]
    assert got.buckets[4].tasks[0].success_rate == 0.0
    assert (got.overall.total, got.overall.run.count, got.overall.run.p95) == (4, 3, 4.0)
    assert (empty.overall.total, empty.tasks, empty.buckets) == (0, [], [])
    assert empty.overall.run == ax.activity.DurationStatsSchema()


async def test_the_stats_and_prune_commands_run_as_a_module(
    projector: Projector, engine: Engine
) -> None:
    """`python -m agentexec.cli stats|prune` (as docs and tests spell other commands): the
    helper both use was defined after the module's `__main__` guard, a NameError."""
    append_all(
        [
            e
            for i in range(5)
            for e in lifecycle(uuid.UUID(int=i + 1, version=4), "ping" if i < 3 else "pong")
        ]
    )
    await projector.catch_up()
    url = database_url(engine)
    env = {
        **os.environ,
        "AGENTEXEC_KEY_PREFIX": ax.CONF.key_prefix,
        "AGENTEXEC_PARTITIONS": str(ax.CONF.partitions),
        "COLUMNS": "200",
    }
    for command, shown in (
        (["stats", "--task", "ping", "--since", "1h"], "3 tasks, since"),  # of 5
        (["prune", "--older-than", "30d"], "removed 0"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "agentexec.cli", *command, "--database-url", url],
            env=env,
            capture_output=True,
            text=True,
            timeout=scaled(60),
        )
        assert done.returncode == 0, done.stderr
        assert shown in done.stdout + done.stderr, done.stdout


def test_the_read_model_commands_refuse_a_database_without_one(tmp_path: Path) -> None:
    """`agentexec stats` and `prune` name the fix instead of SQLAlchemy's traceback."""
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    down = "postgresql+psycopg://postgres@127.0.0.1:1/test"
    for command in (["stats"], ["prune", "--older-than", "30d"]):
        missing = CliRunner().invoke(main, [*command, "--database-url", empty])
        assert missing.exit_code == 1, missing.output
        assert "has no read model (no table agentexec_activity)" in missing.output
        assert "agentexec projector --create-tables" in missing.output
        unreachable = CliRunner().invoke(main, [*command, "--database-url", down])
        assert unreachable.exit_code == 1, unreachable.output
        assert "cannot read the read model at postgresql+psycopg://" in unreachable.output


@pytest.mark.postgres
def test_random_windows_give_identical_statistics_on_both_databases(
    postgres: PostgresSchema, tmp_path: Path
) -> None:
    """PostgreSQL aggregates in SQL (GROUPING SETS, percentile_disc, buckets numbered in SQL)
    and SQLite folds the rows in Python: the same rows give the very same statistics, for
    odd bucket widths, bucket edges to the microsecond, ties, gaps and several names."""
    rng = __import__("random").Random(11)
    start = datetime(2026, 3, 1, 9, 59, 59, 999_000)
    tasks = []
    for i in range(600):
        status = rng.choice([Status.COMPLETE] * 6 + [Status.ERROR, Status.CANCELED, Status.QUEUED])
        ended = status != Status.QUEUED
        agent = uuid.UUID(int=rng.getrandbits(128), version=4)
        tasks.append(
            {
                "id": agent,
                "agent_id": agent,
                "agent_type": rng.choice(["alpha", "beta", "gamma"]),
                "status": status,
                "retries": rng.choice([0, 0, 0, 1, 2]),
                "created_at": start + timedelta(microseconds=rng.randrange(6 * 3600 * 10**6)),
                "queue_wait_seconds": round(rng.random(), 6) if ended else None,
                "run_seconds": rng.choice([1.5, 2.25, round(rng.expovariate(0.1), 6)])
                if ended
                else None,
                "error": f"ValueError: item {rng.randrange(5)} of {i}"
                if status == Status.ERROR
                else None,
            }
        )
    postgres.truncate()
    lite = sqlite_engine(tmp_path / "random.db")
    for engine in (lite, postgres.engine):
        put_tasks(engine, tasks)
    since = start + timedelta(hours=1, microseconds=1)
    calls: list[dict[str, Any]] = [
        {},
        {"since": since, "until": since + timedelta(hours=2)},
        {"bucket": timedelta(minutes=90)},
        {"bucket": timedelta(seconds=7), "since": since, "until": since + timedelta(hours=1)},
        {"bucket": timedelta(hours=1), "task_name": ["beta", "gamma"]},
    ]
    got = {}
    for name, engine in (("sqlite", lite), ("postgresql", postgres.engine)):
        with Session(engine) as s:
            got[name] = [ax.activity.stats(s, **call) for call in calls]
    lite.dispose()
    assert got["sqlite"] == got["postgresql"]
    every = got["sqlite"][0]
    assert every.overall.total == 600 and len(every.tasks) == 3
    assert sum(b.overall.total for b in got["sqlite"][2].buckets) == 600
    assert all(b.end - b.start == timedelta(seconds=7) for b in got["sqlite"][3].buckets)
