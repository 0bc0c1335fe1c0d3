"""Soak benchmark: tasks flow at a steady rate for minutes; Redis memory and SQL size over time.

    python -m tests.bench.soak [--minutes 4] [--rate 20] [--hot-window 30] [--prune-after 60]

A real pool (worker processes and its projector) on a private redis-server and a SQLite file.
Each task reports progress twice and returns (5 events). Every ~15 s a line shows the tasks
enqueued and completed, Redis `used_memory`, the event log's length and memory, the keys that
expire by themselves (agent markers after 24 h, results after `AGENTEXEC_RESULT_TTL`) and the
size of the SQLite files. The log keeps `--hot-window` seconds; ended activities and their
archived events older than `--prune-after` seconds are pruned every 30 s, as
`agentexec prune --older-than ... --archive` would.

The verdict compares the steady state (after the hot window and the prune age have passed
once) at its start and end: Redis memory less the keys that expire by themselves, the log's
length, and the SQL size must stay within 10 % (or 2 MB) while tasks keep flowing.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from pydantic import BaseModel
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.activity.models import Activity
from agentexec.connection import close_redis, get_redis
from agentexec.embedded import EmbeddedRedis
from agentexec.events import TERMINAL
from agentexec.projector.retention import prune_archive
from agentexec.streams import Keys

SAMPLE_EVERY = 15.0
PRUNE_EVERY = 30.0


class Step(BaseModel):
    n: int = 0


pool = ax.Pool(queue_name="soak")


@pool.task("soak")
async def soak(agent_id: UUID, context: Step) -> int:
    ax.activity.update(agent_id, "reading", percentage=30)
    await asyncio.sleep(0.01)
    ax.activity.update(agent_id, "writing", percentage=70)
    return context.n


@dataclass
class Sample:
    elapsed: float
    enqueued: int
    completed: int
    used_memory: int
    log_length: int
    log_memory: int
    expiring_keys: int
    expiring_memory: int
    sql_bytes: int

    @property
    def lasting_memory(self) -> int:
        """Redis memory less the estimated size of the keys that expire by themselves."""
        return self.used_memory - self.expiring_memory

    def line(self) -> str:
        mb = 1024 * 1024
        return (
            f"{self.elapsed:6.0f}s  enqueued {self.enqueued:7,}  completed {self.completed:7,}  "
            f"used_memory {self.used_memory / mb:6.1f} MB  (lasting {self.lasting_memory / mb:5.1f}"
            f" MB, {self.expiring_keys:,} expiring keys {self.expiring_memory / mb:5.1f} MB)  "
            f"log {self.log_length:6,} entries {self.log_memory / mb:5.1f} MB  "
            f"SQL {self.sql_bytes / mb:6.1f} MB"
        )


async def expiring(client: Any) -> tuple[int, int]:
    """How many keys have a TTL, and their estimated memory (from a sample of them)."""
    info = await client.info("keyspace")
    db = info.get("db0", {})
    count = int(db.get("expires", 0))
    if not count:
        return 0, 0
    sizes: list[int] = []
    cursor = 0
    while len(sizes) < 50:
        cursor, keys = await client.scan(cursor, match="*:agent:*", count=200)
        for key in keys[:10]:
            sizes.append(int(await client.memory_usage(key, samples=0) or 0))
        if cursor == 0:
            break
    results: list[int] = []
    cursor = 0
    while len(results) < 20:
        cursor, keys = await client.scan(cursor, match="*:result:*", count=200)
        for key in keys[:10]:
            results.append(int(await client.memory_usage(key, samples=0) or 0))
        if cursor == 0:
            break
    n_results = 0
    cursor = 0
    # Agent markers and results are the keys with a TTL; results are counted separately.
    while True:
        cursor, keys = await client.scan(cursor, match="*:result:*", count=5000)
        n_results += len(keys)
        if cursor == 0:
            break
    marker = sum(sizes) / len(sizes) if sizes else 0
    result = sum(results) / len(results) if results else 0
    return count, int((count - n_results) * marker + n_results * result)


def completed(engine: Engine) -> int:
    with Session(engine) as session:
        query = select(func.count()).where(Activity.status.in_(TERMINAL))
        return int(session.execute(query).scalar_one())


def sql_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


PRUNED = [0]
"""Completed activities pruned so far (they count as completed)."""


def prune(engine: Engine, age: float) -> None:
    try:
        with Session(engine) as session:
            PRUNED[0] += ax.activity.prune(session, older_than=timedelta(seconds=age))
        prune_archive(engine, timedelta(seconds=age))
    except OperationalError as e:  # SQLite busy with the projector: next round
        print(f"  prune skipped: {e}")


async def sample(start: float, enqueued: int, engine: Engine, db: Path) -> Sample:
    client = get_redis()
    log = Keys(ax.CONF.key_prefix).events
    memory = await client.info("memory")
    keys, key_memory = await expiring(client)
    return Sample(
        elapsed=time.monotonic() - start,
        enqueued=enqueued,
        completed=await asyncio.to_thread(completed, engine) + PRUNED[0],
        used_memory=int(memory["used_memory"]),
        log_length=int(await client.xlen(log)),
        log_memory=int(await client.memory_usage(log, samples=0) or 0),
        expiring_keys=keys,
        expiring_memory=key_memory,
        sql_bytes=sql_size(db),
    )


async def soak_run(args: argparse.Namespace, engine: Engine, db: Path) -> list[Sample]:
    samples: list[Sample] = []
    start = time.monotonic()
    end = start + args.minutes * 60
    enqueued = 0
    next_sample = start + SAMPLE_EVERY
    next_prune = start + PRUNE_EVERY
    tick = 0.2
    while time.monotonic() < end:
        due = int((time.monotonic() - start) * args.rate) - enqueued
        if due > 0:
            await asyncio.gather(*(ax.enqueue("soak", Step(n=enqueued + i)) for i in range(due)))
            enqueued += due
        now = time.monotonic()
        if now >= next_prune and args.prune_after:
            next_prune += PRUNE_EVERY
            await asyncio.to_thread(prune, engine, args.prune_after)
        if now >= next_sample:
            next_sample += SAMPLE_EVERY
            samples.append(await sample(start, enqueued, engine, db))
            print(samples[-1].line(), flush=True)
        await asyncio.sleep(tick)
    await close_redis()
    return samples


def flat(name: str, first: float, last: float, unit: float, label: str) -> bool:
    grew = last - first
    ok = grew <= max(0.10 * first, 2 * unit)
    print(
        f"  {name}: {first / unit:,.1f} -> {last / unit:,.1f} {label} "
        f"({'flat' if ok else 'GROWING'})"
    )
    return ok


def verdict(samples: list[Sample], settle: float) -> bool:
    steady = [s for s in samples if s.elapsed >= settle]
    if len(steady) < 3:
        print(f"verdict: run longer; the steady state starts after {settle:.0f}s")
        return False
    first, last = steady[0], steady[-1]
    tasks = last.enqueued - first.enqueued
    mb = 1024 * 1024
    print(f"steady state from {first.elapsed:.0f}s to {last.elapsed:.0f}s ({tasks:,} tasks):")
    ok = flat(
        "Redis memory less expiring keys", first.lasting_memory, last.lasting_memory, mb, "MB"
    )
    ok &= flat("event log length", first.log_length, last.log_length, 1000, "thousand entries")
    ok &= flat("SQL files", first.sql_bytes, last.sql_bytes, mb, "MB")
    growth = (last.used_memory - first.used_memory) / max(tasks, 1)
    print(
        f"  used_memory: {first.used_memory / mb:.1f} -> {last.used_memory / mb:.1f} MB, "
        f"{growth:.0f} bytes per task, held by keys that expire (agent markers after 24 h, "
        "results after AGENTEXEC_RESULT_TTL)"
    )
    backlog = last.enqueued - last.completed
    print(f"  tasks enqueued but not completed at the end: {backlog:,}")
    print(f"verdict: {'memory is FLAT' if ok else 'memory GROWS'} while tasks keep flowing")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--rate", type=float, default=20.0, help="Tasks enqueued per second.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--hot-window", type=float, default=30.0, help="Seconds of log kept.")
    parser.add_argument(
        "--prune-after", type=float, default=60.0, help="Prune what ended this long ago (0: never)."
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    server = None
    if not os.environ.get("AGENTEXEC_REDIS_URL"):
        server = EmbeddedRedis().start()
        ax.CONF.redis_url = server.url
    ax.CONF.key_prefix = f"soak-{uuid.uuid4().hex[:8]}"
    ax.CONF.log_hot_window = args.hot_window
    if args.prune_after:
        ax.CONF.result_ttl = max(1, int(args.prune_after))
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "soak.db"
        engine = create_engine(f"sqlite:///{db}")
        ax.Base.metadata.create_all(engine)
        pool.engine, pool.num_workers, pool.concurrency = engine, args.workers, args.concurrency
        print(
            f"soak: {args.rate:g} tasks/s for {args.minutes:g} min, {args.workers} workers x "
            f"{args.concurrency}, hot window {args.hot_window:g}s, prune after "
            f"{args.prune_after:g}s, Redis {ax.CONF.redis_url}, SQLite {db}"
        )
        pool.start()
        try:
            samples = asyncio.run(soak_run(args, engine, db))
        finally:
            pool.shutdown()
            engine.dispose()
            if server is not None:
                server.close()
    settle = args.hot_window + args.prune_after + PRUNE_EVERY + SAMPLE_EVERY
    raise SystemExit(0 if verdict(samples, settle) else 1)


if __name__ == "__main__":
    main()
