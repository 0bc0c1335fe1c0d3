"""The task flow with three partitions (`AGENTEXEC_PARTITIONS=3`, issue 14), on the test's
redis-server and on a real 3-primary Redis Cluster (one partition per primary): a pool's
workers read the queue's streams of every partition (pushed, not polled: one blocking read
over all of them on one server, one per partition on the cluster), and every verb uses the
keys of its task's partition. Tasks spread over the partitions run exactly once; a child
lives in its parent's partition, an idempotency key and a lock key place a task; delays,
retries, cancels, a pipeline and a tracker's fan-in work across them."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import agentexec as ax
from agentexec import events
from agentexec.connection import close_redis
from agentexec.consumer import Consumer
from agentexec.locks import KEY
from agentexec.queue import queued_event
from agentexec.runtime import Runtime, current
from tests.apps import partitioned
from tests.apps.partitioned import Text, Work
from tests.support.cluster import RedisClusterSetup, needs_redis_server, redis_cluster
from tests.support.listeners import blocked_in, wait_for_idle_workers
from tests.support.waiting import async_wait_for, scaled

__all__ = ["redis_cluster"]  # the cluster fixture, used by name

P = 3
QUEUE = "parts"

pytestmark = needs_redis_server


@pytest.fixture(params=["server", "cluster"])
async def runtime(
    request: pytest.FixtureRequest, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Runtime]:
    """agentexec with three partitions on the test's redis-server, or on the cluster."""
    if request.param == "cluster":
        cluster: RedisClusterSetup = request.getfixturevalue("redis_cluster")
        redis_url = cluster.url
    ax.CONF.partitions = P  # first: a cluster URL needs it (or a hash tag in the prefix)
    ax.CONF.redis_url = redis_url
    monkeypatch.setenv("AGENTEXEC_PARTITIONS", str(P))
    try:
        yield current()
    finally:
        await close_redis()  # this test's clients, before the cluster or server goes


@contextmanager
def serving(workers: int | None = None) -> Iterator[ax.Pool]:
    pool = partitioned.pool
    given, pool.num_workers = pool.num_workers, workers or pool.num_workers
    pool.start()
    try:
        yield pool
    finally:
        pool.shutdown()
        pool.num_workers = given


async def logged(runtime: Runtime) -> list[events.AnyEvent]:
    """Every event of every partition's log."""
    broker = runtime.broker
    found: list[events.AnyEvent] = []
    for partition in runtime.partitions:
        after = None
        while True:
            page = await broker.read_log(after, count=1000, partition=partition)
            found += [recorded.event for recorded in page.recorded]
            if page.size < 1000:
                break
            after = page.last
    return found


def in_partition(runtime: Runtime, partition: int) -> str:
    """An idempotency key that places its task in `partition`."""
    while True:
        key = uuid.uuid4().hex
        if runtime.partitions.of_text(f"key:{key}") == partition:
            return key


def on_cluster(runtime: Runtime) -> bool:
    return runtime.settings.redis_url.startswith("redis+cluster")


async def test_verbs_of_every_partition_share_a_loop_iteration(runtime: Runtime) -> None:
    """Verbs issued together go to Redis together (the batcher); on the cluster, where each
    partition's keys are on another primary, each in the batch of its slot."""
    tasks = [
        await ax.enqueue("shout", Text(text=f"b{p}"), idempotency_key=in_partition(runtime, p))
        for p in range(P)
    ]
    broker = runtime.broker
    for _ in range(3):
        assert all(await asyncio.gather(*(broker.known(t.agent_id) for t in tasks)))
        assert await asyncio.gather(*(broker.result(t.agent_id) for t in tasks)) == [None] * P


async def test_a_consumer_waits_on_every_partition(runtime: Runtime) -> None:
    """A blocking read of the queue returns the entries of whichever partition gets one. On
    the cluster the other partitions' reads go on blocking, and what they read later is held
    (`delivered`, its leases renewed) until the next read returns it."""
    partitions = runtime.partitions
    consumer = runtime.broker.consumer(QUEUE, "w:0")
    await consumer.ensure_groups()

    async def queue(partition: int) -> uuid.UUID:
        key = in_partition(runtime, partition)
        return (await ax.enqueue("shout", Text(text="x"), idempotency_key=key)).agent_id

    try:
        first = await queue(1)
        [entry] = await consumer.wait(10, int(scaled(10) * 1000))
        assert entry[0] == partitions.keys(1).queue(QUEUE, ax.Priority.LOW)
        assert events.decode_entry(entry[2]).agent_id == first
        later = {await queue(0), await queue(2)}
        if on_cluster(runtime):
            await async_wait_for(
                _delivered(consumer, 2), timeout=10, what="the blocked reads to deliver"
            )
            read = await consumer.read(10)
        else:
            read = await consumer.wait(10, int(scaled(10) * 1000))
        assert {events.decode_entry(e[2]).agent_id for e in read} == later
        assert {e[0] for e in read} == {
            partitions.keys(p).queue(QUEUE, ax.Priority.LOW) for p in (0, 2)
        }
    finally:
        await consumer.stop_reads()
    assert await blocked_in("xreadgroup") == 0


async def test_entries_of_two_partitions_with_one_id_are_two_entries(
    runtime: Runtime, tmp_path: Path
) -> None:
    """Each partition's stream makes its own ids: entries added in the same millisecond to
    two of them can have the same id. A worker holding both keeps them apart (a retried task
    here must not wait for a lease, taken for its other copy still running)."""
    ax.CONF.lease_seconds = 60
    partitions = runtime.partitions
    client = runtime.redis()
    work = Work(workdir=str(tmp_path), name="flaky")
    made = [
        queued_event("flaky", work, runtime.settings, partitions.new_id(0), queue=QUEUE),
        queued_event("shout", Text(text="x"), runtime.settings, partitions.new_id(1), queue=QUEUE),
    ]
    for event in made:
        stream = partitions.keys_of(event.agent_id).queue(QUEUE, ax.Priority.LOW)
        await client.xadd(stream, {events.EVENT_FIELD: events.encode(event)}, id="1-1")
    with serving(workers=1):
        results = [await ax.get_result(e.agent_id, timeout=scaled(20)) for e in made]
    assert results == [2, "X"]


async def test_tasks_spread_over_the_partitions_run_exactly_once(runtime: Runtime) -> None:
    partitions = runtime.partitions
    client = runtime.redis()
    # Queued before any worker reads: every partition's stream holds some.
    before = [await ax.enqueue("shout", Text(text=f"t{i}")) for i in range(90)]
    waiting = [
        await client.xlen(partitions.keys(p).queue(QUEUE, ax.Priority.LOW)) for p in partitions
    ]
    assert sum(waiting) == 90 and all(waiting), waiting
    assert {partitions.of(task.agent_id) for task in before} == set(range(P))
    with serving():
        after = [
            await ax.enqueue("shout", Text(text=f"h{i}"), priority=ax.Priority.HIGH)
            for i in range(30)
        ]
        results = await ax.gather(*before, *after, timeout=scaled(60))
        assert results == [f"T{i}" for i in range(90)] + [f"H{i}" for i in range(30)]

        # A child lives in its parent's partition, wherever the parent is.
        parents = [await ax.enqueue("spawn", Text(text=f"c{p}")) for p in range(6)]
        children = [uuid.UUID(c) for c in await ax.gather(*parents, timeout=scaled(30))]
        assert [partitions.of(c) for c in children] == [partitions.of(p.agent_id) for p in parents]
        results = [await ax.get_result(c, timeout=scaled(30)) for c in children]
        assert results == [f"C{p}" for p in range(6)]

        # An idempotency key places its task: a second enqueue finds the first.
        first = await ax.enqueue("shout", Text(text="once"), idempotency_key="only-once")
        again = await ax.enqueue("shout", Text(text="twice"), idempotency_key="only-once")
        assert again.agent_id == first.agent_id
        assert partitions.of(first.agent_id) == partitions.of_text("key:only-once")
        assert await ax.get_result(first, timeout=scaled(30)) == "ONCE"

    started = Counter(
        e.agent_id for e in await logged(runtime) if isinstance(e, events.TaskStarted)
    )
    everyone = [t.agent_id for t in [*before, *after, *parents, first]] + children
    assert {a: started[a] for a in everyone} == dict.fromkeys(everyone, 1)
    assert sum(started.values()) == len(everyone)


async def test_idle_workers_are_woken_in_every_partition(runtime: Runtime) -> None:
    """With blocking reads of a minute, a task queued in any partition starts at once."""
    ax.CONF.block_ms = 60_000
    with serving() as pool:
        # Each worker blocks in one read on one server, in one per partition on the cluster.
        per_worker = P if on_cluster(runtime) else 1
        await wait_for_idle_workers((pool.num_workers or 1) * per_worker)
        loop = asyncio.get_running_loop()
        for partition in range(P):
            began = loop.time()
            key = in_partition(runtime, partition)
            task = await ax.enqueue("shout", Text(text=f"p{partition}"), idempotency_key=key)
            assert await ax.get_result(task, timeout=scaled(30)) == f"P{partition}"
            assert loop.time() - began < 30, "the task waited for a blocking read to time out"


async def test_delays_retries_cancels_and_locks_across_partitions(
    runtime: Runtime, tmp_path: Path
) -> None:
    partitions = runtime.partitions
    workdir = str(tmp_path)
    with serving():
        delayed = [
            await ax.enqueue("shout", Text(text=f"d{p}"), delay=0.3, idempotency_key=k)
            for p in range(P)
            for k in [in_partition(runtime, p)]
        ]
        flaky = await ax.enqueue("flaky", Work(workdir=workdir, name="flaky"))
        held = await ax.enqueue("hold", Work(workdir=workdir, name="held"))
        keyed = [
            await ax.enqueue("keyed", Work(workdir=workdir, name=f"k{i}", key="same"))
            for i in range(2)
        ]
        # A lock key places its task where its lock is.
        assert {partitions.of(k.agent_id) for k in keyed} == {partitions.of_text(KEY + "k-same")}

        assert await ax.gather(*delayed, timeout=scaled(30)) == [f"D{p}" for p in range(P)]
        assert await ax.get_result(flaky, timeout=scaled(30)) == 2
        spans = sorted(await ax.gather(*keyed, timeout=scaled(30)))
        assert spans[0][1] <= spans[1][0], f"two tasks of one lock key overlapped: {spans}"

        await async_wait_for(
            _exists(tmp_path / "held.started"), timeout=30, what="the held task to start"
        )
        if not await ax.cancel(held.agent_id):
            ended = [e for e in await logged(runtime) if e.agent_id == held.agent_id]
            pytest.fail(f"the held task ended before its cancel: {ended}")
        with pytest.raises(ax.TaskFailedError, match="canceled"):
            await ax.get_result(held, timeout=scaled(30))

        # A child in another partition than its canceled parent (its idempotency key places
        # it) does not start: its worker reads the parent's cancel marker apart.
        other = (partitions.of(held.agent_id) + 1) % P
        orphan = await ax.enqueue(
            "shout",
            Text(text="never"),
            parent_id=held.agent_id,
            idempotency_key=in_partition(runtime, other),
        )
        with pytest.raises(ax.TaskFailedError, match="canceled"):
            await ax.get_result(orphan, timeout=scaled(30))

    log = await logged(runtime)
    assert not [
        e for e in log if isinstance(e, events.TaskStarted) and e.agent_id == orphan.agent_id
    ]
    retried = [e for e in log if isinstance(e, events.TaskRetried)]
    assert [e.agent_id for e in retried] == [flaky.agent_id]


async def test_a_pipeline_and_a_trackers_fan_in_complete(runtime: Runtime, tmp_path: Path) -> None:
    partitions = runtime.partitions
    with serving():
        runs = [await partitioned.pipeline.enqueue(context=Text(text=f"r{i}")) for i in range(4)]
        batch = uuid.uuid4().hex
        tracker = ax.Tracker("parts", batch)
        for _ in range(5):
            await asyncio.to_thread(tracker.incr)
        fan_in = await asyncio.to_thread(
            tracker.on_complete, "fan_in", Work(workdir=str(tmp_path), name="in", batch_id=batch)
        )
        tracked = [
            await ax.enqueue(
                "tracked", Work(workdir=str(tmp_path), name=f"t{i}", batch_id=batch), parent_id=None
            )
            for i in range(5)
        ]
        assert await ax.gather(*runs, timeout=scaled(30)) == [f"R{i}R{i}" for i in range(4)]
        assert await ax.gather(*tracked, timeout=scaled(30)) == [f"t{i}" for i in range(5)]
        assert await ax.get_result(fan_in, timeout=scaled(30)) == 5
    log = await logged(runtime)
    for run in runs:
        steps = [e for e in log if isinstance(e, events.TaskQueued) and e.parent_id == run.agent_id]
        assert [s.task_name for s in steps] == ["Numbers.double", "Numbers.shout"]
        assert {partitions.of(s.agent_id) for s in steps} == {partitions.of(run.agent_id)}


def _exists(path: Path) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return path.exists()

    return check


def _delivered(consumer: Consumer, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(consumer.delivered) >= count

    return check
