"""End-to-end task benchmark: enqueue N no-op tasks and gather them, then measure latency.

    python -m tests.bench.tasks [--tasks 10000] [--workers 2] [--concurrency 64]

Throughput: N tasks enqueued (200 in flight at a time) and gathered; tasks/s is N over the
time from the first enqueue to the last result. Latency: one task at a time on an idle pool;
pickup is enqueue call to handler start, result is handler return to `get_result` return
(wall clock, same machine). Uses a private redis-server unless AGENTEXEC_REDIS_URL is set.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from uuid import UUID

from pydantic import BaseModel

import agentexec as ax
from agentexec.connection import close_redis
from agentexec.embedded import EmbeddedRedis


class Noop(BaseModel):
    n: int = 0


pool = ax.Pool(queue_name="bench")


@pool.task("noop")
async def noop(agent_id: UUID, context: Noop) -> tuple[float, float]:
    now = time.time()
    return (now, now)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def throughput(count: int) -> float:
    started = time.perf_counter()
    tasks: list[ax.Task] = []
    for i in range(0, count, 200):
        batch = range(i, min(i + 200, count))
        tasks += await asyncio.gather(*(ax.enqueue("noop", Noop(n=n)) for n in batch))
    enqueued = time.perf_counter()
    await ax.gather(*tasks, timeout=600)
    elapsed = time.perf_counter() - started
    print(f"  enqueue {count:,} tasks: {count / (enqueued - started):,.0f} tasks/s")
    return count / elapsed


async def latency(count: int) -> tuple[list[float], list[float]]:
    pickup, result = [], []
    for _ in range(count):
        before = time.time()
        task = await ax.enqueue("noop", Noop())
        start, end = await ax.get_result(task, timeout=30)
        after = time.time()
        pickup.append((start - before) * 1000)
        result.append((after - end) * 1000)
    return pickup, result


async def run(args: argparse.Namespace) -> None:
    await latency(20)  # warm up connections and worker imports
    tps = await throughput(args.tasks)
    pickup, result = await latency(args.latency_tasks)
    await close_redis()
    print(f"  throughput: {tps:,.0f} tasks/s ({args.tasks:,} no-op tasks, enqueue + gather)")
    for name, values in (("pickup", pickup), ("result", result)):
        print(
            f"  {name} latency over {len(values)} tasks: median "
            f"{statistics.median(values):.2f} ms, p99 {percentile(values, 0.99):.2f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--latency-tasks", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    server = None
    if not os.environ.get("AGENTEXEC_REDIS_URL"):
        server = EmbeddedRedis().start()
        ax.CONF.redis_url = server.url
    ax.CONF.key_prefix = f"bench-{uuid.uuid4().hex[:8]}"
    pool.num_workers, pool.concurrency = args.workers, args.concurrency
    print(
        f"tasks benchmark: {args.workers} worker processes x {args.concurrency} concurrent "
        f"tasks, Redis {ax.CONF.redis_url}"
    )
    pool.start()
    try:
        asyncio.run(run(args))
    finally:
        pool.shutdown()
        if server is not None:
            server.close()


if __name__ == "__main__":
    main()
