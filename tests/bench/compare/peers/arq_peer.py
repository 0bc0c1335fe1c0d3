"""arq: one `arq` worker process per worker (its CLI runs one), max_jobs 10 by default.
Workers poll the queue every 0.5 s and `Job.result` polls every 0.5 s (the defaults)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from driver import CONCURRENCY, QUEUE, REDIS_URL, WORKERS, Peer, main


async def work(ctx: dict[str, Any], sleep: float) -> list[float]:
    start = time.time()
    if sleep:
        await asyncio.sleep(sleep)
    return [start, time.time(), os.getpid()]


class WorkerSettings:
    functions = [work]
    redis_settings = RedisSettings.from_dsn(REDIS_URL)
    queue_name = QUEUE
    if CONCURRENCY:
        max_jobs = CONCURRENCY


redis: ArqRedis | None = None


def worker_commands() -> list[list[str]]:
    executable = os.path.join(os.path.dirname(sys.executable), "arq")
    return [[executable, "arq_peer.WorkerSettings"] for _ in range(WORKERS)]


async def connect() -> None:
    global redis
    redis = await create_pool(RedisSettings.from_dsn(REDIS_URL), default_queue_name=QUEUE)


async def enqueue(sleep: float) -> object:
    assert redis is not None
    return await redis.enqueue_job("work", sleep)


async def wait(job: Any, timeout: float) -> list[float]:
    return await job.result(timeout=timeout)  # type: ignore[no-any-return]


async def close() -> None:
    if redis is not None:
        await redis.aclose()


if __name__ == "__main__":
    main(
        Peer(
            "arq",
            worker_commands,
            enqueue,
            wait,
            connect=connect,
            close=close,
            notes=["queue and results polled every 0.5 s"],
        )
    )
