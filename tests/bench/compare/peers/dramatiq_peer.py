"""Dramatiq with its Redis broker and the Results middleware on a Redis backend:
`dramatiq` with 2 processes x 8 threads by default. Actors are plain functions run in
threads; enqueueing and waiting are blocking calls (`get_result(block=True)`)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend
from driver import CONCURRENCY, QUEUE, REDIS_URL, WORKERS, Peer, main

broker = RedisBroker(url=REDIS_URL, namespace=QUEUE)
backend = RedisBackend(url=REDIS_URL, namespace=QUEUE)
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True, queue_name=QUEUE)
def work(sleep: float) -> list[float]:
    start = time.time()
    if sleep:
        time.sleep(sleep)
    return [start, time.time(), os.getpid()]


def worker_commands() -> list[list[str]]:
    executable = os.path.join(os.path.dirname(sys.executable), "dramatiq")
    command = [executable, "dramatiq_peer", "--processes", str(WORKERS)]
    if CONCURRENCY:
        command += ["--threads", str(CONCURRENCY)]
    return [command]


async def enqueue(sleep: float) -> Any:
    return work.send(sleep)


async def wait(message: Any, timeout: float) -> list[float]:
    timeout_ms = max(1000, int(timeout * 1000))
    return message.get_result(backend=backend, block=True, timeout=timeout_ms)  # type: ignore[no-any-return]


if __name__ == "__main__":
    main(Peer("Dramatiq", worker_commands, enqueue, wait, notes=["sync client calls"]))
