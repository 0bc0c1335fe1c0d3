"""Projector benchmark: `python -m tests.bench.projector [--events N] [--rate R]`.

Measures, into PostgreSQL (AGENTEXEC_TEST_POSTGRES_URL or the local server) and SQLite:
- throughput: events/s applied from a backlog (best of three runs);
- lag: time from append (the stream id's timestamp) to the commit of the batch holding the
  event, median and 99th percentile, under a steady load of R events/s;
- the ceiling: plain batched inserts of rows of the log's shape on the same database.

`--owners 1,2,4 [--partitions P] [--kinds postgresql]` measures instead the throughput of
`agentexec projector` processes sharing P partitions (AGENTEXEC_PARTITIONS): a backlog of N
events spread over the partitions, applied by 1, 2, 4 processes, events/s between 10 % and
90 % of it committed (process start-up left out; progress read from the checkpoints).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import msgspec
from sqlalchemy import Engine, create_engine, select, text

import agentexec as ax
import agentexec.projector.projector as projector_module
from agentexec import events
from agentexec.activity.models import Base, Checkpoint
from agentexec.connection import close_redis, get_sync_redis
from agentexec.embedded import EmbeddedRedis
from agentexec.positions import Position
from agentexec.projector import Projector
from agentexec.runtime import current
from tests.integration.readmodel.workload import append_all, traffic

POSTGRES_URL = os.environ.get(
    "AGENTEXEC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


class Database:
    """A fresh read model: a SQLite file, or a PostgreSQL schema of its own."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.schema = f"axbench_{uuid.uuid4().hex[:8]}"
        if kind == "sqlite":
            self.dir = tempfile.mkdtemp(prefix="axbench-")
            self.engine = create_engine(f"sqlite:///{Path(self.dir) / 'bench.db'}")
        else:
            self.admin = create_engine(POSTGRES_URL)
            with self.admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
            self.engine = create_engine(f"{POSTGRES_URL}?options=-csearch_path%3D{self.schema}")
        Base.metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()
        if self.kind == "postgresql":
            with self.admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))
            self.admin.dispose()


async def throughput(kind: str, n: int) -> float:
    best = 0.0
    for _ in range(3):
        ax.CONF.key_prefix = f"axbench-{uuid.uuid4().hex[:8]}"
        db = Database(kind)
        try:
            append_all(traffic(n))
            start = time.perf_counter()
            applied = await Projector(db.engine).catch_up(timeout=600)
            best = max(best, applied / (time.perf_counter() - start))
        finally:
            db.close()
    return best


async def lag(kind: str, rate: int, seconds: float) -> tuple[float, float]:
    ax.CONF.key_prefix = f"axbench-{uuid.uuid4().hex[:8]}"
    db = Database(kind)
    committed: list[tuple[float, str]] = []
    real_commit = projector_module.commit

    def timed_commit(engine: Engine, *args: object) -> int:
        applied = real_commit(engine, *args)  # type: ignore[arg-type]
        committed.append((time.time(), str(args[4])))  # the batch's last entry id
        return applied

    projector_module.commit = timed_commit  # type: ignore[assignment]
    stop = asyncio.Event()
    run = asyncio.create_task(Projector(db.engine).run(stop))
    try:
        evs = traffic(int(rate * seconds))
        tick = 0.01
        per_tick = max(1, int(rate * tick))
        ids: list[str] = []
        start = time.perf_counter()
        for i in range(0, len(evs), per_tick):
            ids.append(append_all(evs[i : i + per_tick]))
            delay = start + (i // per_tick + 1) * tick - time.perf_counter()
            await asyncio.sleep(max(0.0, delay))
        last = ids[-1]
        # The commits are recorded from the projector's thread: poll for the last one.
        while not committed or committed[-1][1] != last:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await run
        projector_module.commit = real_commit
        db.close()
    # Each pipeline's last event stands for its chunk: lag = commit time - append time.
    lags = []
    position = 0
    for when, upto in committed:
        upto_key = tuple(map(int, upto.split("-")))
        while position < len(ids) and tuple(map(int, ids[position].split("-"))) <= upto_key:
            lags.append(when - int(ids[position].split("-")[0]) / 1000)
            position += 1
    lags.sort()
    return statistics.median(lags) * 1000, lags[int(len(lags) * 0.99) - 1] * 1000


def ceiling(kind: str, n: int = 100_000) -> dict[str, float]:
    """Rows/s of plain batched inserts (1,000 per transaction) of log-shaped rows."""
    db = Database(kind)
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    rows = [
        {
            "a": uuid.uuid4() if kind == "postgresql" else uuid.uuid4().hex,
            "e": f"1000-{i}",
            "m": f"step {i}",
            "s": "RUNNING",
            "p": i % 100,
            "c": now,
        }
        for i in range(n)
    ]
    ddl = (
        "CREATE TABLE plain (id INTEGER PRIMARY KEY, a UUID, e VARCHAR(41), m TEXT, "
        "s VARCHAR(16), p INTEGER, c TIMESTAMP)"
    )
    results: dict[str, float] = {}
    try:
        insert = text("INSERT INTO plain (a, e, m, s, p, c) VALUES (:a, :e, :m, :s, :p, :c)")
        methods = {"executemany": lambda conn, part: conn.execute(insert, part)}
        if kind == "postgresql":

            def copy(conn, part):  # type: ignore[no-untyped-def]
                with (
                    conn.connection.driver_connection.cursor() as cur,
                    cur.copy("COPY plain (a, e, m, s, p, c) FROM STDIN") as cp,
                ):
                    for r in part:
                        cp.write_row(list(r.values()))

            methods["COPY"] = copy
            ddl = ddl.replace("INTEGER PRIMARY KEY", "SERIAL PRIMARY KEY")
        for name, method in methods.items():
            with db.engine.begin() as conn:
                conn.execute(text("DROP TABLE IF EXISTS plain"))
                conn.execute(text(ddl))
            start = time.perf_counter()
            for i in range(0, n, 1000):
                with db.engine.begin() as conn:
                    method(conn, rows[i : i + 1000])
            results[name] = n / (time.perf_counter() - start)
    finally:
        db.close()
    return results


def owners(kind: str, n: int, partitions: int, processes: int) -> float:
    """Events/s of `processes` projector processes applying a backlog of `n` events spread
    over `partitions` partitions (each process takes its share of them)."""
    ax.CONF.key_prefix = f"axbench-{uuid.uuid4().hex[:8]}"
    ax.CONF.partitions = partitions
    db = Database(kind)
    parts = current().partitions
    client = get_sync_redis()
    placed: dict[uuid.UUID, uuid.UUID] = {}
    ids: dict[int, list[Position]] = {p: [] for p in parts}
    pipe = client.pipeline(transaction=False)
    order: list[int] = []
    for event in traffic(n):
        if event.agent_id not in placed:
            placed[event.agent_id] = parts.place(event.agent_id, len(placed) % partitions)
        event = msgspec.structs.replace(event, agent_id=placed[event.agent_id])
        order.append(parts.of(event.agent_id))
        pipe.xadd(parts.keys(order[-1]).events, events.entry(event))
        if len(pipe) >= 2000 or len(order) == n:
            for p, entry_id in zip(order, pipe.execute(), strict=True):
                ids[p].append(Position.parse(entry_id.decode()))
            order = []
    total = sum(map(len, ids.values()))
    names = {parts.keys(p).events: p for p in parts}

    def applied() -> int:
        # From the checkpoints (a tiny table): a count of the archive would load the server.
        with db.engine.connect() as conn:
            found = conn.execute(select(Checkpoint.name, Checkpoint.position)).all()
        return sum(
            bisect.bisect_right(ids[names[name]], Position.parse(position))
            for name, position in found
            if name in names
        )

    url = db.engine.url.render_as_string(hide_password=False)
    env = {
        **os.environ,
        "AGENTEXEC_REDIS_URL": ax.CONF.redis_url,
        "AGENTEXEC_KEY_PREFIX": ax.CONF.key_prefix,
        "AGENTEXEC_PARTITIONS": str(partitions),
        "AGENTEXEC_DATABASE_URL": url,
    }
    command = [str(Path(sys.executable).parent / "agentexec"), "projector", "--lease-seconds", "2"]
    started = [
        subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL) for _ in range(processes)
    ]
    marks: dict[float, float] = {}
    try:
        deadline = time.monotonic() + 600
        while len(marks) < 2 and time.monotonic() < deadline:
            done = applied()
            for share in (0.1, 0.9):
                if share not in marks and done >= share * total:
                    marks[share] = time.perf_counter()
            time.sleep(0.02)
    finally:
        for process in started:
            process.terminate()
        for process in started:
            process.wait(30)
        db.close()
        ax.CONF.partitions = 1
    if len(marks) < 2:
        raise TimeoutError(f"{processes} projectors did not apply {total} events in 600 s")
    return 0.8 * total / (marks[0.9] - marks[0.1])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rate", type=int, default=2_000, help="steady load, events/s")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--owners", help="projector processes to compare, e.g. 1,2,4")
    parser.add_argument("--partitions", type=int, default=4, help="with --owners")
    parser.add_argument("--kinds", default="postgresql,sqlite", help="databases to measure")
    args = parser.parse_args()
    server = EmbeddedRedis()
    server.start()
    ax.CONF.redis_url = server.url
    kinds = args.kinds.split(",")
    try:
        if args.owners:
            for kind in kinds:
                for processes in map(int, args.owners.split(",")):
                    rate = await asyncio.to_thread(
                        owners, kind, args.events, args.partitions, processes
                    )
                    print(
                        f"{kind:<10} {args.partitions} partitions, {processes} projector "
                        f"processes: {rate:>8,.0f} events/s"
                    )
            return
        for kind in kinds:
            rate = await throughput(kind, args.events)
            median, p99 = await lag(kind, args.rate, args.seconds)
            plain = ceiling(kind)
            print(
                f"{kind:<10} throughput {rate:>8,.0f} events/s | lag at {args.rate:,}/s: "
                f"median {median:.1f} ms, p99 {p99:.1f} ms | ceiling: "
                + ", ".join(f"{k} {v:,.0f} rows/s" for k, v in plain.items())
            )
    finally:
        await close_redis()
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
