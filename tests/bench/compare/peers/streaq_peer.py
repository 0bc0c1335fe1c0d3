"""streaQ (Redis Streams): `streaq run` with --workers 2 and its default concurrency of 16
per process."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from contextlib import AsyncExitStack
from typing import Any

from driver import CONCURRENCY, QUEUE, REDIS_URL, WORKERS, Peer, main
from streaq import Worker

worker = Worker(
    redis_url=REDIS_URL, queue_name=QUEUE, **({"concurrency": CONCURRENCY} if CONCURRENCY else {})
)


@worker.task
async def work(sleep: float) -> list[float]:
    start = time.time()
    if sleep:
        await asyncio.sleep(sleep)
    return [start, time.time(), os.getpid()]


def worker_commands() -> list[list[str]]:
    executable = os.path.join(os.path.dirname(sys.executable), "streaq")
    return [[executable, "run", "streaq_peer:worker", "--workers", str(WORKERS)]]


stack = AsyncExitStack()


async def connect() -> None:
    await stack.enter_async_context(worker)


async def enqueue(sleep: float) -> Any:
    return await work.enqueue(sleep)


async def wait(task: Any, timeout: float) -> list[float]:
    # With 200 waits at once some never saw their result's publication (the 10,000-task run
    # stalled with every task done), so wait in windows of 1 s; each window reads the result.
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await task.result(timeout=1)
            break
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
    if not result.success:
        raise RuntimeError(f"task failed: {result.exception!r}")
    return result.result  # type: ignore[no-any-return]


if __name__ == "__main__":
    main(
        Peer(
            "streaQ",
            worker_commands,
            enqueue,
            wait,
            connect=connect,
            close=stack.aclose,
            notes=["result waits re-read every 1 s (waits stalled under load)"],
        )
    )
