"""Tenant fairness benchmark: each tenant's share of the throughput under a skewed load, with
and without `AGENTEXEC_MAX_CONCURRENCY_PER_TENANT`.

    python -m tests.bench.tenant_fairness [--big 500] [--small 50] [--work 0.1]
        [--workers 2] [--concurrency 4] [--limits 3,6] [--seconds 30] [--window 1]

Tenant A queues `--big` tasks, then tenants B and C `--small` each (A's burst is ahead of
them in the queue); each task sleeps `--work` seconds. The run lasts until every task ended
or `--seconds` passed. Printed for each run: completions per tenant in each `--window`, each
tenant's share of the completions while all three still had work (up to the first time one
of them had no task left), when B's and C's last tasks ended, and the overall throughput
(completions over the time to the last one).
Uses a private redis-server unless AGENTEXEC_REDIS_URL is set.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from uuid import UUID

from pydantic import BaseModel

import agentexec as ax
from agentexec.connection import close_redis
from agentexec.embedded import EmbeddedRedis

TENANTS = ("A", "B", "C")


class Work(BaseModel):
    seconds: float


pool = ax.Pool(queue_name="fairness")


@pool.task("work")
async def work(agent_id: UUID, context: Work) -> float:
    await asyncio.sleep(context.seconds)
    return time.time()


async def load(args: argparse.Namespace) -> dict[str, list[float]]:
    """Queue the skewed load and return each tenant's completion times (s from the start)."""
    counts = {"A": args.big, "B": args.small, "C": args.small}
    started = time.time()
    queued: dict[str, list[ax.Task]] = {}
    for tenant in TENANTS:
        queued[tenant] = list(
            await asyncio.gather(
                *(
                    ax.enqueue("work", Work(seconds=args.work), tenant=tenant)
                    for _ in range(counts[tenant])
                )
            )
        )
    ends: dict[str, list[float]] = {t: [] for t in TENANTS}

    async def collect(tenant: str, task: ax.Task) -> None:
        remaining = args.seconds - (time.time() - started)
        if remaining <= 0:
            return
        try:
            ended = await ax.get_result(task, timeout=remaining)
        except TimeoutError:
            return
        ends[tenant].append(ended - started)

    await asyncio.gather(*(collect(t, task) for t in TENANTS for task in queued[t]))
    return ends


def report(name: str, ends: dict[str, list[float]], args: argparse.Namespace) -> None:
    counts = {"A": args.big, "B": args.small, "C": args.small}
    last = max((max(v) for v in ends.values() if v), default=0.0)
    print(f"\n{name}")
    windows = int(last // args.window) + 1
    print("  window (s)   " + "  ".join(f"{t:>5}" for t in TENANTS))
    for w in range(windows):
        low, high = w * args.window, (w + 1) * args.window
        row = [sum(1 for e in ends[t] if low <= e < high) for t in TENANTS]
        print(f"  {low:5.1f}-{high:<5.1f}  " + "  ".join(f"{n:>5}" for n in row))
    # While all had work: up to the first time a tenant's last task ended.
    done = [max(ends[t]) for t in TENANTS if len(ends[t]) == counts[t]]
    horizon = min(done) if done else args.seconds
    within = {t: sum(1 for e in ends[t] if e <= horizon) for t in TENANTS}
    total = sum(within.values()) or 1
    shares = ", ".join(f"{t} {100 * within[t] / total:.0f}%" for t in TENANTS)
    print(f"  share while all had work (first {horizon:.1f} s): {shares}")
    for t in ("B", "C"):
        finished = f"{max(ends[t]):.1f} s" if len(ends[t]) == counts[t] else "not finished"
        print(f"  tenant {t}: {len(ends[t])}/{counts[t]} done, last at {finished}")
    completed = sum(len(v) for v in ends.values())
    print(f"  throughput: {completed / last if last else 0:.1f} tasks/s ({completed} tasks)")


def run_once(name: str, limit: int, args: argparse.Namespace) -> None:
    ax.CONF.key_prefix = f"bench-{uuid.uuid4().hex[:8]}"
    ax.CONF.max_concurrency_per_tenant = limit
    pool.start()
    try:
        ends = asyncio.run(_load_and_close(args))
    finally:
        pool.shutdown()
    report(name, ends, args)


async def _load_and_close(args: argparse.Namespace) -> dict[str, list[float]]:
    try:
        return await load(args)
    finally:
        await close_redis()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", type=int, default=500)
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--work", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--limits", default="3,6", help="the caps to run with, comma-separated")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--window", type=float, default=1.0)
    args = parser.parse_args()
    server = None
    if not os.environ.get("AGENTEXEC_REDIS_URL"):
        server = EmbeddedRedis().start()
        ax.CONF.redis_url = server.url
    pool.num_workers, pool.concurrency = args.workers, args.concurrency
    print(
        f"tenant fairness: {args.workers} worker processes x {args.concurrency} slots, tasks of "
        f"{args.work} s; A queues {args.big}, then B and C {args.small} each"
    )
    try:
        run_once("without a limit", 0, args)
        for limit in (int(n) for n in args.limits.split(",") if n):
            run_once(f"AGENTEXEC_MAX_CONCURRENCY_PER_TENANT={limit}", limit, args)
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    main()
