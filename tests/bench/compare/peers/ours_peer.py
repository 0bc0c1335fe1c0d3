"""agentexec from this working tree: `agentexec worker` with 2 processes.

With BENCH_DATABASE_URL the pool gets the database (activity tracking: the pool runs the
projector in its parent process) and a run ends when the read model shows every task,
the warm-up's included, finished.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from uuid import UUID

from driver import CONCURRENCY, DATABASE_URL, QUEUE, REDIS_URL, WORKERS, Peer, main
from pydantic import BaseModel

import agentexec as ax


class Work(BaseModel):
    sleep: float = 0.0


ax.CONF.redis_url = REDIS_URL
ax.CONF.key_prefix = QUEUE
pool = ax.Pool(database_url=DATABASE_URL, queue_name=QUEUE)


@pool.task("work")
async def work(agent_id: UUID, context: Work) -> list[float]:
    start = time.time()
    if context.sleep:
        await asyncio.sleep(context.sleep)
    return [start, time.time(), os.getpid()]


def worker_commands() -> list[list[str]]:
    command = [sys.executable, "-m", "agentexec.cli", "worker"]
    command += ["ours_peer:pool", "--workers", str(WORKERS)]
    if CONCURRENCY:
        command += ["--concurrency", str(CONCURRENCY)]
    return [command]


async def connect() -> None:
    if DATABASE_URL:
        from sqlalchemy import create_engine

        engine = create_engine(DATABASE_URL)
        ax.Base.metadata.create_all(engine)
        engine.dispose()


async def enqueue(sleep: float) -> ax.Task:
    return await ax.enqueue("work", Work(sleep=sleep))


async def wait(task: ax.Task, timeout: float) -> list[float]:
    result: list[float] = await ax.get_result(task, timeout=timeout)
    return result


async def settle(count: int, timeout: float) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    engine = create_engine(DATABASE_URL or "")
    deadline = time.monotonic() + timeout
    try:
        while True:
            with Session(engine) as db:
                total = ax.activity.list(db, page=1, page_size=1).total
                active = ax.activity.active_count(db)
            if total >= count and active == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"read model shows {total} tasks, {active} active")
            await asyncio.sleep(0.01)
    finally:
        engine.dispose()


async def close() -> None:
    from agentexec.connection import close_redis

    await close_redis()


if __name__ == "__main__":
    name = "agentexec (this) + SQL" if DATABASE_URL else "agentexec (this)"
    main(
        Peer(
            name,
            worker_commands,
            enqueue,
            wait,
            connect=connect,
            close=close,
            settle=settle if DATABASE_URL else None,
        )
    )
