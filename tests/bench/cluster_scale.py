"""Scale benchmark (issue 14): one Redis server against a 3-primary Redis Cluster.

    python -m tests.bench.cluster_scale [--tasks 5000] [--events 20000] [--owners 3]
        [--setups single:1,cluster:1,cluster:3,cluster:6]

Each setup is a Redis layout and a partition count (`AGENTEXEC_PARTITIONS`): `single:1` is one
`redis-server`; `cluster:P` a 3-primary cluster started for the run (tests/support/cluster.py),
with P partitions. For each, on servers of its own:

- tasks/s end to end: N no-op tasks enqueued (200 in flight at a time) and gathered by a pool
  of `--workers` processes, over the time from the first enqueue to the last result;
- Redis CPU per task on each primary: the `used_cpu_sys + used_cpu_user` delta of `INFO cpu`
  over the run, divided by N; and beyond idle: less what the primary spends in the same time
  with the pool started and no task (measured over a quiet window before the run);
- each primary's share of the commands (`INFO commandstats` calls delta, without the
  benchmark's own INFO, DBSIZE and the clients' CLUSTER and PING calls) and of the keys
  (`DBSIZE` after the run), and whether each share is within +-15% of even (1 / primaries);
- projector throughput: events/s applied from a backlog of `--events` events (between 10 %
  and 90 % of it committed, read from the checkpoints; into PostgreSQL), with 1 projector
  process and with `--owners` processes sharing the partitions (setups with P > 1).

Figures are printed; docs/scaling.md holds the last run's and what they predict.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import redis
from pydantic import BaseModel
from sqlalchemy import select

import agentexec as ax
from agentexec import events
from agentexec.activity.models import Checkpoint
from agentexec.connection import close_redis
from agentexec.positions import Position
from tests.bench.projector import Database
from tests.integration.readmodel.test_faults import ProjectorProcess
from tests.integration.readmodel.workload import traffic
from tests.support.cluster import RedisClusterSetup
from tests.support.redis_servers import Node
from tests.support.waiting import wait_for

EVEN_WITHIN = 0.15
"""A primary's share is even when it is within this fraction of 1 / primaries."""

IDLE_SECONDS = 2.0
"""The quiet window over which a primary's idle CPU is measured."""

_NOT_COUNTED = {"info", "dbsize", "cluster", "ping", "config", "client", "command", "hello"}
"""Commands of the measurement and of the clients' topology discovery, not of the work."""


class Noop(BaseModel):
    n: int = 0


pool = ax.Pool(queue_name="bench")


@pool.task("noop")
async def noop(agent_id: UUID, context: Noop) -> int:
    return context.n


@dataclass(frozen=True)
class Setup:
    layout: str
    """"single" (one redis-server) or "cluster" (3 primaries)."""
    partitions: int

    @classmethod
    def parse(cls, text: str) -> Setup:
        layout, _, count = text.partition(":")
        if layout not in ("single", "cluster") or not count.isdigit():
            raise argparse.ArgumentTypeError(f"setup {text!r}: use single:P or cluster:P")
        return cls(layout, int(count))

    def __str__(self) -> str:
        primaries = "1 server" if self.layout == "single" else "3-primary cluster"
        return f"{primaries}, P={self.partitions}"


@dataclass
class Sample:
    """What `INFO` says of one primary at one moment."""

    cpu: float
    calls: int


@dataclass
class Result:
    setup: Setup
    tasks: int
    tasks_per_s: float
    cpu_us_per_task: dict[str, float] = field(default_factory=dict)
    net_us_per_task: dict[str, float] = field(default_factory=dict)
    """CPU per task beyond what the primary spends idle in the same time."""
    idle_ms_per_s: dict[str, float] = field(default_factory=dict)
    command_share: dict[str, float] = field(default_factory=dict)
    key_share: dict[str, float] = field(default_factory=dict)
    keys: dict[str, int] = field(default_factory=dict)
    projector: dict[int, float] = field(default_factory=dict)
    """Events/s applied by this many owners."""


def sample(client: redis.Redis) -> Sample:
    cpu = client.info("cpu")
    stats = client.info("commandstats")
    calls = sum(
        int(value["calls"])
        for name, value in stats.items()
        if name.removeprefix("cmdstat_").split("|")[0] not in _NOT_COUNTED
    )
    return Sample(float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), calls)


def even(share: float, primaries: int) -> bool:
    return abs(share - 1 / primaries) <= EVEN_WITHIN / primaries


@contextmanager
def servers(setup: Setup) -> Iterator[tuple[str, dict[str, redis.Redis]]]:
    """The setup's Redis: its URL, and a client of each primary by name."""
    if setup.layout == "single":
        folder = Path(tempfile.mkdtemp(prefix="axbench-single-"))
        node = Node(folder, "server", ["maxmemory-policy noeviction"], sentinel=False)
        try:
            node.wait_started()
            yield f"redis://127.0.0.1:{node.port}", {node.name: node.client}
        finally:
            node.stop()
            shutil.rmtree(folder, ignore_errors=True)
        return
    cluster = RedisClusterSetup().start()
    try:
        yield cluster.url, {node.name: node.client for node in cluster.nodes}
    finally:
        cluster.stop()


def configure(setup: Setup, url: str) -> None:
    name = f"axbench-{uuid.uuid4().hex[:8]}"
    # One partition on a cluster: every key in the prefix's slot (its hash tag).
    tagged = setup.layout == "cluster" and setup.partitions == 1
    # Each assignment is validated against the others: through a plain URL and an untagged
    # prefix, which every partition count accepts.
    ax.CONF.redis_url = "redis://127.0.0.1:6379/0"
    ax.CONF.key_prefix = name
    ax.CONF.partitions = setup.partitions
    ax.CONF.key_prefix = "{" + name + "}" if tagged else name
    ax.CONF.redis_url = url
    os.environ["AGENTEXEC_PARTITIONS"] = str(setup.partitions)


async def run_tasks(count: int) -> float:
    await ax.gather(*[await ax.enqueue("noop", Noop(n=n)) for n in range(20)], timeout=60)
    started = time.perf_counter()
    tasks: list[ax.Task] = []
    for i in range(0, count, 200):
        batch = range(i, min(i + 200, count))
        tasks += await asyncio.gather(*(ax.enqueue("noop", Noop(n=n)) for n in batch))
    await ax.gather(*tasks, timeout=600)
    elapsed = time.perf_counter() - started
    await close_redis()
    return count / elapsed


def measure_tasks(
    setup: Setup, url: str, primaries: dict[str, redis.Redis], args: argparse.Namespace
) -> Result:
    configure(setup, url)
    pool.num_workers, pool.concurrency = args.workers, args.concurrency
    pool.start()
    try:
        # The servers' cost of being there (cron, cluster bus, the pool's idle blocking
        # reads), measured over a quiet window, so that it can be told from the tasks' cost.
        quiet = {name: sample(client) for name, client in primaries.items()}
        time.sleep(IDLE_SECONDS)
        before = {name: sample(client) for name, client in primaries.items()}
        started = time.perf_counter()
        tasks_per_s = asyncio.run(run_tasks(args.tasks))
        elapsed = time.perf_counter() - started
        after = {name: sample(client) for name, client in primaries.items()}
    finally:
        pool.shutdown()
    keys = {name: int(client.dbsize()) for name, client in primaries.items()}
    result = Result(setup, args.tasks, tasks_per_s, keys=keys)
    calls = {name: after[name].calls - before[name].calls for name in primaries}
    for name in primaries:
        idle = (before[name].cpu - quiet[name].cpu) / IDLE_SECONDS
        result.idle_ms_per_s[name] = idle * 1e3
        busy = after[name].cpu - before[name].cpu
        result.cpu_us_per_task[name] = busy / args.tasks * 1e6
        result.net_us_per_task[name] = max(0.0, busy - idle * elapsed) / args.tasks * 1e6
        result.command_share[name] = calls[name] / max(1, sum(calls.values()))
        result.key_share[name] = keys[name] / max(1, sum(keys.values()))
    return result


def append_backlog(count: int, ids: dict[str, list[Position]]) -> None:
    """About `count` events of interleaved tasks, each task's in the log of its partition;
    the entry ids appended to each log go into `ids` as they come."""
    runtime = ax.runtime.current()
    client = runtime.sync_redis()
    backlog = traffic(count)
    for start in range(0, len(backlog), 2000):
        pipe = client.pipeline(transaction=False)
        logs = [
            runtime.partitions.keys_of(e.agent_id).events for e in backlog[start : start + 2000]
        ]
        for log, event in zip(logs, backlog[start : start + 2000], strict=True):
            pipe.xadd(log, events.entry(event))
        for log, entry_id in zip(logs, pipe.execute(), strict=True):
            ids[log].append(Position.parse(entry_id))


def measure_projector(owners: int, count: int) -> float:
    """Events/s that `owners` projector processes apply together, from a backlog appended
    once every process holds its share of the partitions: between 10 % and 90 % of it
    committed, read from the checkpoints (as `tests.bench.projector --owners` does)."""
    db = Database("postgresql")
    url = db.engine.url.render_as_string(hide_password=False)
    processes = [ProjectorProcess(url) for _ in range(owners)]
    partitions = ax.runtime.current().partitions
    ids: dict[str, list[Position]] = {partitions.keys(p).events: [] for p in partitions}

    def held(process: ProjectorProcess) -> int:
        log = Path(process.log.name).read_text()
        return log.count(": owns ") - log.count(": hands ")

    def settled() -> bool:
        shares = [held(process) for process in processes]
        return min(shares) >= 1 and sum(shares) == partitions.count

    def applied() -> int:
        # From the checkpoints (a tiny table): a count of the archive would load the server.
        with db.engine.connect() as conn:
            found = conn.execute(select(Checkpoint.name, Checkpoint.position)).all()
        return sum(
            bisect.bisect_right(ids[name], Position.parse(position))
            for name, position in found
            if name in ids
        )

    try:
        # Every process holds its share of the partitions before the backlog comes.
        wait_for(settled, timeout=120, what=f"{owners} projectors to share the partitions")
        total = len(traffic(count))
        appending = threading.Thread(target=append_backlog, args=(count, ids))
        appending.start()
        marks: dict[float, float] = {}

        def passed() -> bool:
            done = applied()
            for share in (0.1, 0.9):
                if share not in marks and done >= share * total:
                    marks[share] = time.perf_counter()
            return len(marks) == 2

        try:
            wait_for(passed, timeout=600, what="90% of the backlog committed")
        finally:
            appending.join()
        return 0.8 * total / (marks[0.9] - marks[0.1])
    finally:
        for process in processes:
            process.stop()
            process.close()
        db.close()


def report(result: Result) -> None:
    primaries = len(result.keys)
    print(f"{result.setup}: {result.tasks_per_s:,.0f} tasks/s ({result.tasks:,} no-op tasks)")
    total, net = sum(result.cpu_us_per_task.values()), sum(result.net_us_per_task.values())
    print(f"  Redis CPU per task: {total:.0f} us in all, {net:.0f} us beyond idle")
    for name in result.keys:
        commands, keys = result.command_share[name], result.key_share[name]
        print(
            f"  {name}: {result.cpu_us_per_task[name]:5.1f} us CPU/task "
            f"({result.net_us_per_task[name]:5.1f} beyond idle; idle "
            f"{result.idle_ms_per_s[name]:.1f} ms/s), "
            f"commands {commands:6.1%} ({'even' if even(commands, primaries) else 'UNEVEN'}), "
            f"keys {keys:6.1%} ({result.keys[name]:,}; "
            f"{'even' if even(keys, primaries) else 'UNEVEN'})"
        )
    for owners, rate in sorted(result.projector.items()):
        print(f"  projector, {owners} owner(s): {rate:,.0f} events/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5_000)
    parser.add_argument(
        "--setups",
        type=lambda text: [Setup.parse(s) for s in text.split(",")],
        default=[Setup("single", 1), Setup("cluster", 1), Setup("cluster", 3), Setup("cluster", 6)],
    )
    parser.add_argument("--events", type=int, default=20_000, help="projector backlog; 0: none")
    parser.add_argument("--owners", type=int, default=3, help="projector processes, P > 1")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    print(
        f"cluster scale benchmark: {args.workers} worker processes x {args.concurrency} "
        f"concurrent tasks, {os.cpu_count()} CPUs"
    )
    for setup in args.setups:
        with servers(setup) as (url, primaries):
            result = measure_tasks(setup, url, primaries, args)
            for owners in sorted({1, min(args.owners, setup.partitions)}) if args.events else ():
                configure(setup, url)  # a namespace of its own: an empty log
                result.projector[owners] = measure_projector(owners, args.events)
        report(result)


if __name__ == "__main__":
    main()
