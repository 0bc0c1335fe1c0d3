"""agentexec 0.3.0 from the registry (Python 3.12): `agentexec run` with 2 processes.

It always tracks activity in SQL (the pool needs an async engine), so it only runs with
BENCH_DATABASE_URL. Each worker process runs one task at a time; results are polled every
0.5 s by `get_result`, and only a handler's Pydantic return value is stored as a result.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from uuid import UUID

from driver import DATABASE_URL, QUEUE, REDIS_URL, WORKERS, Peer, Unavailable, main
from pydantic import BaseModel

import agentexec as ax


def async_url(url: str) -> str:
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url.removeprefix("sqlite:")
    return url


class Work(BaseModel):
    sleep: float = 0.0


class Stamp(BaseModel):
    values: list[float]


ax.CONF.redis_url = REDIS_URL
ax.CONF.key_prefix = QUEUE
ax.CONF.queue_prefix = QUEUE
# Its default of 10 pooled connections fails (MaxConnectionsError, not a wait) with the 200
# calls the driver keeps in flight.
ax.CONF.redis_pool_size = 200
pool = ax.Pool(database_url=async_url(DATABASE_URL or "sqlite:///:memory:"))


@pool.task("work")
async def work(agent_id: UUID, context: Work) -> Stamp:
    start = time.time()
    if context.sleep:
        await asyncio.sleep(context.sleep)
    return Stamp(values=[start, time.time(), os.getpid()])


def worker_commands() -> list[list[str]]:
    if not DATABASE_URL:
        raise Unavailable("n/a (always tracks activity in SQL)")
    executable = os.path.join(os.path.dirname(sys.executable), "agentexec")
    return [[executable, "run", "agentexec030_peer:pool", "--workers", str(WORKERS)]]


async def connect() -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(async_url(DATABASE_URL or ""))
    async with engine.begin() as conn:
        await conn.run_sync(ax.Base.metadata.create_all)
    await engine.dispose()


async def enqueue(sleep: float) -> ax.Task:
    return await ax.enqueue("work", Work(sleep=sleep))


async def wait(task: ax.Task, timeout: float) -> list[float]:
    # A Stamp, though of this module imported by name rather than of __main__.
    result = await ax.get_result(task, timeout=math.ceil(timeout))
    return list(result.values)  # type: ignore[attr-defined]


async def settle(count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        total = (await ax.activity.list(page=1, page_size=1)).total
        active = await ax.activity.count_active()
        if total >= count and active == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"activity table shows {total} tasks, {active} active")
        await asyncio.sleep(0.01)


if __name__ == "__main__":
    main(
        Peer(
            "agentexec 0.3.0 + SQL",
            worker_commands,
            enqueue,
            wait,
            connect=connect,
            settle=settle,
            notes=[
                "one task per worker process",
                "results polled every 0.5 s",
                "AGENTEXEC_REDIS_POOL_SIZE=200",
            ],
        )
    )
