"""SAQ on Redis: `saq` with --workers 2 and its default concurrency of 10 per process.
Waiting uses `Job.refresh(until_complete=...)`, which listens for the job's update."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from driver import CONCURRENCY, QUEUE, REDIS_URL, WORKERS, Peer, main
from saq import Queue
from saq.job import TERMINAL_STATUSES

queue = Queue.from_url(REDIS_URL, name=QUEUE)


async def work(ctx: dict[str, Any], *, sleep: float) -> list[float]:
    start = time.time()
    if sleep:
        await asyncio.sleep(sleep)
    return [start, time.time(), os.getpid()]


settings: dict[str, Any] = {"queue": queue, "functions": [work]}
if CONCURRENCY:
    settings["concurrency"] = CONCURRENCY


def worker_commands() -> list[list[str]]:
    executable = os.path.join(os.path.dirname(sys.executable), "saq")
    return [[executable, "saq_peer.settings", "--workers", str(WORKERS)]]


async def enqueue(sleep: float) -> Any:
    return await queue.enqueue("work", sleep=sleep)


async def wait(job: Any, timeout: float) -> list[float]:
    # `refresh(until_complete=t)` reads the job, then listens for its update: an update
    # published in between is missed, so listen in windows of 0.5 s (saq's own poll interval
    # in `apply`/`map`) and read the job again after each.
    deadline = time.monotonic() + timeout
    while job.status not in TERMINAL_STATUSES:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job.key} is {job.status}")
        try:
            await job.refresh(until_complete=0.5)
        except TimeoutError:
            await job.refresh()
    if job.status != "complete":
        raise RuntimeError(f"job {job.key} ended {job.status}: {job.error}")
    return job.result  # type: ignore[no-any-return]


if __name__ == "__main__":
    main(Peer("SAQ", worker_commands, enqueue, wait, connect=queue.connect, close=queue.disconnect))
