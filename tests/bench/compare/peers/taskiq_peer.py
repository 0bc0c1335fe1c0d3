"""taskiq with taskiq-redis's stream broker and Redis result backend: `taskiq worker`
(2 processes by default; 100 async tasks each unless BENCH_CONCURRENCY says otherwise).
`wait_result` polls every 0.2 s by default."""

from __future__ import annotations

import asyncio
import os
import sys
import time

from driver import CONCURRENCY, QUEUE, REDIS_URL, WORKERS, Peer, main
from taskiq.exceptions import TaskiqResultTimeoutError
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

broker = RedisStreamBroker(url=REDIS_URL, queue_name=QUEUE).with_result_backend(
    RedisAsyncResultBackend(redis_url=REDIS_URL)
)


@broker.task(task_name="work")  # not derived from the path of __main__
async def work(sleep: float) -> list[float]:
    start = time.time()
    if sleep:
        await asyncio.sleep(sleep)
    return [start, time.time(), os.getpid()]


def worker_commands() -> list[list[str]]:
    executable = os.path.join(os.path.dirname(sys.executable), "taskiq")
    command = [executable, "worker", "taskiq_peer:broker", "--workers", str(WORKERS)]
    if CONCURRENCY:
        command += ["--max-async-tasks", str(CONCURRENCY)]
    return [command]


async def enqueue(sleep: float) -> object:
    return await work.kiq(sleep)


async def wait(task: object, timeout: float) -> list[float]:
    try:
        result = await task.wait_result(timeout=timeout)  # type: ignore[attr-defined]
    except TaskiqResultTimeoutError as e:
        raise TimeoutError(str(e)) from e
    if result.is_err:
        raise RuntimeError(f"task failed: {result.error!r}")
    return result.return_value  # type: ignore[no-any-return]


if __name__ == "__main__":
    main(
        Peer(
            "taskiq (stream broker)",
            worker_commands,
            enqueue,
            wait,
            connect=broker.startup,
            close=broker.shutdown,
            notes=["results polled every 0.2 s"],
        )
    )
