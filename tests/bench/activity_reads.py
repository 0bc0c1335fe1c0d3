"""Activity read benchmark: `python -m tests.bench.activity_reads [--activities N] [--days D]`.

Builds N activities (default 1,000,000) spread over D days (default 30) with two log rows
each, bulk-loaded (PostgreSQL COPY, SQLite executemany, indexes built after the load), into
PostgreSQL (AGENTEXEC_TEST_POSTGRES_URL or the local server, a schema of its own) and SQLite
(a temporary file). Prints the median time of each read over `--repeat` runs: list page 1,
a deep page by offset and by cursor, a failure view, detail, children, active_count, and
stats over the last day and over all time. With `--explain`, the plans of the queries each
read issues (PostgreSQL: EXPLAIN ANALYZE; SQLite: EXPLAIN QUERY PLAN). `--keep` leaves the
PostgreSQL schema in place and `--reuse` reads it again without reloading (the indexes the
models declare are created if missing), to time a change without a 2-minute load.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event, func, insert, select, text
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.activity.models import (
    Activity,
    ActivityCount,
    ActivityLog,
    Base,
    activity_row_id,
)

POSTGRES_URL = os.environ.get(
    "AGENTEXEC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SCHEMA = "axbench_reads"
NAMES = [f"task_{i:02d}" for i in range(20)]
ERRORS = [
    "ConnectionError: upstream 10.0.{a}.{b} refused after {n} ms",
    "TimeoutError: tool call {id} took longer than {n}s",
    "ValueError: row {n} has no field 'price'",
    "KeyError: 'session_{n}'",
]
COLUMNS = [c.name for c in Activity.__table__.columns]
LOG_COLUMNS = [c.name for c in ActivityLog.__table__.columns if c.name != "id"]


def activities(n: int, days: int, now: datetime, seed: int = 7) -> Iterator[dict[str, Any]]:
    """N activity rows in creation order: 1 % queued, 1 % running, 85 % complete, 10 %
    error, 3 % canceled; a tenth are children (one parent has 500 of them)."""
    rng = random.Random(seed)
    start = now - timedelta(days=days)
    step = timedelta(days=days) / n
    big_parent: uuid.UUID | None = None
    recent: list[uuid.UUID] = []
    for i in range(n):
        created = start + step * i
        agent = uuid.UUID(int=rng.getrandbits(128), version=4)
        roll = rng.random()
        status = (
            "QUEUED"
            if roll < 0.01
            else "RUNNING"
            if roll < 0.02
            else "COMPLETE"
            if roll < 0.87
            else "ERROR"
            if roll < 0.97
            else "CANCELED"
        )
        retries = rng.choice((1, 1, 2)) if rng.random() < 0.05 else 0
        started = None if status == "QUEUED" else created + timedelta(seconds=rng.random())
        ended = status not in ("QUEUED", "RUNNING")
        run = round(rng.expovariate(1 / 20), 6) if ended else None
        error = None
        if status == "ERROR":
            template = rng.choice(ERRORS)
            error = template.format(
                a=rng.randrange(256), b=rng.randrange(256), n=rng.randrange(10_000), id=agent
            )
        parent = None
        if i == n // 2:
            big_parent = agent
        elif big_parent is not None and i < n // 2 + 5000 and i % 10 == 0:
            parent = big_parent
        elif recent and rng.random() < 0.1:
            parent = rng.choice(recent)
        recent = [*recent, agent][-100:]
        finished = started + timedelta(seconds=run) if started and run is not None else None
        yield {
            "id": activity_row_id(agent),
            "agent_id": agent,
            "agent_type": rng.choice(NAMES),
            "status": status,
            "latest_message": "done" if ended else "working",
            "latest_percentage": 100 if ended else 50,
            "attempts": 0 if status == "QUEUED" else retries + 1,
            "retries": retries,
            "error": error,
            "worker": None if started is None else f"worker-{rng.randrange(8)}",
            "queue_wait_seconds": None if started is None else round(rng.random(), 6),
            "run_seconds": run,
            "attempt_history": None,
            "parent_id": parent,
            "queue": "default",
            "priority": "low",
            "metadata": {"team": rng.choice("abcd")},
            "created_at": created,
            "updated_at": finished or started or created,
            "started_at": started,
            "finished_at": finished,
            "queued_at": created,
            "due_at": created,
            "last_event_id": f"{int(created.timestamp() * 1000)}-{i % 1000}",
        }


def logs(row: dict[str, Any]) -> list[dict[str, Any]]:
    first = {"status": "QUEUED", "message": "Waiting to start.", "created_at": row["created_at"]}
    last = {"status": row["status"], "message": row["latest_message"]}
    last["created_at"] = row["updated_at"]
    return [
        {"activity_id": row["id"], "event_id": row["last_event_id"], "percentage": None, **f}
        for f in (first, last)
    ]


def _text(value: Any) -> Any:
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return value


def load(engine: Engine, n: int, days: int, now: datetime) -> float:
    """Create empty tables, load the rows, build the indexes; returns the seconds taken."""
    began = time.perf_counter()
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    tables: list[Table] = [Activity.__table__, ActivityLog.__table__]  # type: ignore[list-item]
    indexes = [index for table in tables for index in table.indexes]
    with engine.begin() as conn:
        for index in indexes:
            index.drop(conn)
    raw = engine.raw_connection()
    try:
        if engine.dialect.name == "postgresql":
            _copy(raw, n, days, now)
        else:
            _insert(raw, n, days, now)
        raw.commit()
    finally:
        raw.close()
    with engine.begin() as conn:
        for index in indexes:
            index.create(conn)
        # What the projector keeps as it applies events (agentexec.activity.counts).
        by_kind = select(Activity.agent_type, Activity.status, func.count()).group_by(
            Activity.agent_type, Activity.status
        )
        conn.execute(insert(ActivityCount).from_select(["agent_type", "status", "count"], by_kind))
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    return time.perf_counter() - began


def _copy(raw: Any, n: int, days: int, now: datetime) -> None:
    cursor = raw.cursor()
    activity = ", ".join(f'"{c}"' for c in COLUMNS)
    log = ", ".join(f'"{c}"' for c in LOG_COLUMNS)
    with cursor.copy(f"COPY {Activity.__tablename__} ({activity}) FROM STDIN") as rows:
        for row in activities(n, days, now):
            rows.write_row([_text(row[c]) for c in COLUMNS])
    # The same rows again (the generator is seeded), for their logs.
    with cursor.copy(f"COPY {ActivityLog.__tablename__} ({log}) FROM STDIN") as rows:
        for row in activities(n, days, now):
            for entry in logs(row):
                rows.write_row([_text(entry[c]) for c in LOG_COLUMNS])


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="microseconds")
    return _text(value)


def _insert(raw: Any, n: int, days: int, now: datetime) -> None:
    cursor = raw.cursor()
    marks = ", ".join("?" for _ in COLUMNS)
    log_marks = ", ".join("?" for _ in LOG_COLUMNS)
    names = ", ".join(f'"{c}"' for c in COLUMNS)
    log_names = ", ".join(f'"{c}"' for c in LOG_COLUMNS)
    activity_sql = f"INSERT INTO {Activity.__tablename__} ({names}) VALUES ({marks})"
    log_sql = f"INSERT INTO {ActivityLog.__tablename__} ({log_names}) VALUES ({log_marks})"
    batch: list[list[Any]] = []
    log_batch: list[list[Any]] = []
    for row in activities(n, days, now):
        batch.append([_sqlite_value(row[c]) for c in COLUMNS])
        log_batch.extend([_sqlite_value(e[c]) for c in LOG_COLUMNS] for e in logs(row))
        if len(batch) >= 50_000:
            cursor.executemany(activity_sql, batch)
            cursor.executemany(log_sql, log_batch)
            batch, log_batch = [], []
    cursor.executemany(activity_sql, batch)
    cursor.executemany(log_sql, log_batch)


def median_ms(read: Callable[[], Any], repeat: int) -> float:
    read()  # warm the cache and the plan
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        read()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


class Statements:
    """The SQL statements an engine runs while recording, with their parameters."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.seen: list[tuple[str, Any]] = []
        self.recording = False
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if self.recording:
            self.seen.append((statement, params))

    def plans(self, read: Callable[[], Any]) -> list[str]:
        self.seen, self.recording = [], True
        try:
            read()
        finally:
            self.recording = False
        found = []
        prefix = (
            "EXPLAIN (ANALYZE, COSTS OFF) "
            if self.engine.dialect.name == "postgresql"
            else ("EXPLAIN QUERY PLAN ")
        )
        with self.engine.connect() as conn:
            for statement, params in self.seen:
                if "checkpoints" in statement:
                    continue
                rows = conn.exec_driver_sql(prefix + statement, params).all()
                plan = "\n".join(str(r[-1]) for r in rows)
                found.append(f"{' '.join(statement.split())[:300]}\n{plan}")
        return found


def reusable(engine: Engine, n: int) -> datetime | None:
    """The `now` of the data already in `engine` when it holds `n` activities, after creating
    any index the models declare that it lacks; None when it must be loaded."""
    with engine.begin() as conn:
        if not engine.dialect.has_table(conn, Activity.__tablename__):
            return None
        found = conn.execute(select(func.count(), func.max(Activity.created_at))).one()
        if found[0] != n:
            return None
        for table in Base.metadata.sorted_tables:
            table.create(conn, checkfirst=True)
            for index in table.indexes:
                index.create(conn, checkfirst=True)
    # The rows were created up to `now` minus one step (see `activities`).
    return found[1]  # type: ignore[no-any-return]


def bench(kind: str, url: str, args: argparse.Namespace, now: datetime) -> None:
    engine = create_engine(url)
    last = reusable(engine, args.activities) if args.reuse else None
    if last is None:
        loaded = load(engine, args.activities, args.days, now)
        print(
            f"\n{kind}: {args.activities:,} activities over {args.days} days, "
            f"loaded in {loaded:.0f} s"
        )
    else:
        now = last
        print(f"\n{kind}: {args.activities:,} activities over {args.days} days, reused")
    with Session(engine) as s:
        parent = s.execute(
            text(
                f"SELECT parent_id FROM {Activity.__tablename__} WHERE parent_id IS NOT NULL "
                "GROUP BY parent_id ORDER BY count(*) DESC LIMIT 1"
            )
        ).scalar_one()
        some = s.execute(
            text(f"SELECT agent_id FROM {Activity.__tablename__} LIMIT 1 OFFSET :o"),
            {"o": args.activities // 3},
        ).scalar_one()
        deep_cursor = ax.activity.list(s, page=499, page_size=20).next_cursor
    parent_id = parent if isinstance(parent, uuid.UUID) else uuid.UUID(parent)
    agent_id = some if isinstance(some, uuid.UUID) else uuid.UUID(some)
    day = now - timedelta(days=1)
    reads: dict[str, Callable[[Session], Any]] = {
        "list page 1": lambda s: ax.activity.list(s),
        "list page 500 (offset)": lambda s: ax.activity.list(s, page=500),
        "list page 500 (cursor)": lambda s: ax.activity.list(s, cursor=deep_cursor),
        "list status=error": lambda s: ax.activity.list(s, status="error"),
        "list running > 1h": lambda s: ax.activity.list(s, running_longer_than=timedelta(hours=1)),
        "detail": lambda s: ax.activity.detail(s, agent_id),
        "children (500)": lambda s: ax.activity.children(s, parent_id),
        "active_count": lambda s: ax.activity.active_count(s),
        "stats, last day": lambda s: ax.activity.stats(s, since=day),
        "stats, last day, hourly": lambda s: ax.activity.stats(
            s, since=day, bucket=timedelta(hours=1)
        ),
        "stats, all time": lambda s: ax.activity.stats(s),
    }
    reads = {k: v for k, v in reads.items() if not args.read or any(r in k for r in args.read)}
    recorder = Statements(engine)
    for name, read in reads.items():
        repeat = 3 if "all time" in name else args.repeat
        with Session(engine) as s:
            ms = median_ms(functools.partial(read, s), repeat)
        print(f"  {name:28} {ms:9.1f} ms")
    if args.explain:
        for name, read in reads.items():
            if "all time" in name or "hourly" in name:
                continue
            print(f"\n### {kind}: {name}\n")
            with Session(engine) as s:
                for plan in recorder.plans(functools.partial(read, s)):
                    print(plan, end="\n\n")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activities", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--only", choices=["postgresql", "sqlite"])
    parser.add_argument("--read", action="append", help="only the reads whose name has this")
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL schema")
    parser.add_argument("--reuse", action="store_true", help="reuse a kept PostgreSQL schema")
    args = parser.parse_args()
    now = datetime.now(UTC).replace(tzinfo=None)
    if args.only != "sqlite":
        admin = create_engine(POSTGRES_URL)
        with admin.begin() as conn:
            if not args.reuse:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE'))
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"'))
        try:
            bench("PostgreSQL", f"{POSTGRES_URL}?options=-csearch_path%3D{SCHEMA}", args, now)
        finally:
            if not args.keep:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{SCHEMA}" CASCADE'))
            admin.dispose()
    if args.only != "postgresql":
        with tempfile.TemporaryDirectory() as tmp:
            bench("SQLite", f"sqlite:///{Path(tmp) / 'bench.db'}", args, now)


if __name__ == "__main__":
    main()
