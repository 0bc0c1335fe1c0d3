"""Faults of worker processes: killed, frozen, slow, poisoned, stopped; and retries."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from pathlib import Path

import pytest

import agentexec as ax
from agentexec import events
from agentexec.connection import get_redis
from agentexec.events import Status
from tests.faults.app import Flaky
from tests.faults.checker import check
from tests.faults.cluster import Cluster, events_of, wait_for_event, wait_for_file
from tests.support.waiting import scaled

pytestmark = pytest.mark.timeout(240)


@pytest.mark.fault("1. SIGKILL of a worker mid-task (before start, mid-progress, after return)")
async def test_sigkill_of_a_worker_at_each_point_of_a_task(cluster: Cluster) -> None:
    cluster.start_projector()
    cluster.start_pool(workers=2, concurrency=4)
    tasks = await cluster.enqueue_jobs(12, work=0.2, steps=2)
    points = ("before_start", "mid_progress", "after_return")
    markers = {point: cluster.marker() for point in points}
    faulty = {}
    for point in points:
        faulty[point] = await ax.enqueue(
            "fault_job", cluster.job(work=0.2, steps=2, fault=point, marker=markers[point])
        )
        tasks += await cluster.enqueue_jobs(12, work=0.2, steps=2)
    for point, task in faulty.items():
        cluster.killed_pids.add(int(await wait_for_file(markers[point])))
        cluster.fault(f"SIGKILL {point}")
        await ax.get_result(task, timeout=scaled(60))
        cluster.recovered()
    for point in ("mid_progress", "after_return"):
        log = await events_of(faulty[point].agent_id)
        # Started again once: by the replacement, or by another worker if it was quicker
        # (then the attempt number counts both deliveries).
        starts = [e for e in log if isinstance(e, events.TaskStarted)]
        assert len(starts) == 2 and starts[0].attempt == 1, point
    # A killed process takes its other running tasks with it: they run again too.
    await check(cluster, tasks + list(faulty.values()))


@pytest.mark.fault("2. SIGSTOP of a worker past its lease, then SIGCONT")
async def test_a_frozen_worker_cannot_end_its_task_after_its_lease(cluster: Cluster) -> None:
    cluster.start_projector()
    pool = cluster.start_pool(workers=2, concurrency=2)
    # Frozen after its handler returned: on SIGCONT it tries to record its outcome at once.
    marker = cluster.marker()
    late = await ax.enqueue(
        "fault_job", cluster.job(work=0.1, fault="freeze_after_return", marker=marker)
    )
    frozen = int(await wait_for_file(marker))
    cluster.fault("SIGSTOP after return")
    cluster.killed_pids.add(frozen)
    result = await ax.get_result(late, timeout=scaled(60))
    cluster.recovered()
    assert result.pid != frozen
    os.kill(frozen, signal.SIGCONT)

    # Frozen in the middle of its handler.
    marker = cluster.marker()
    slow = await ax.enqueue("fault_job", cluster.job(work=4.0, steps=8, marker=marker))
    await wait_for_event(slow.agent_id, events.TaskProgress)
    stopped = int(await wait_for_file(marker + ".pid"))
    os.kill(stopped, signal.SIGSTOP)
    cluster.fault("SIGSTOP mid-handler")
    cluster.killed_pids.add(stopped)
    await wait_for_event(slow.agent_id, events.TaskStarted, count=2)
    os.kill(stopped, signal.SIGCONT)
    result = await ax.get_result(slow, timeout=scaled(60))
    assert result.pid != stopped

    await check(cluster, [late, slow])
    output = pool.output()
    assert "this worker's outcome is discarded" in output or "lost the lease" in output
    # The late worker's progress did not leak into the new run's history.
    log = await events_of(slow.agent_id)
    second_start = [i for i, e in enumerate(log) if isinstance(e, events.TaskStarted)][1]
    after = [e for e in log[second_start:] if isinstance(e, events.TaskProgress)]
    assert [e.percentage for e in after] == [(s + 1) * 99 // 8 for s in range(8)]


@pytest.mark.fault("3. A task running for several lease periods is never taken over")
async def test_a_long_task_keeps_its_lease(cluster: Cluster) -> None:
    cluster.start_projector()
    cluster.start_pool(workers=2, concurrency=3)
    lease = float(ax.CONF.lease_seconds)
    long = [
        await ax.enqueue("fault_job", cluster.job(work=lease * 4, steps=8)),
        await ax.enqueue("fault_sync_job", cluster.job(work=lease * 4)),
    ]
    # Short tasks keep the other workers busy looking for expired leases meanwhile.
    short = await cluster.enqueue_jobs(30, work=0.1)
    await check(cluster, long + short)
    for task in long + short:
        starts = [e for e in await events_of(task.agent_id) if isinstance(e, events.TaskStarted)]
        assert len(starts) == 1, f"{task.task_name} was started {len(starts)} times"


@pytest.mark.fault("7. Poison task, malformed stream entry, oversized context")
async def test_poison_malformed_and_oversized(cluster: Cluster) -> None:
    ax.CONF.max_context_bytes = 64 * 1024
    cluster.start_projector()
    pool = cluster.start_pool(workers=2, concurrency=2, AGENTEXEC_MAX_DELIVERIES="2")
    poison = await ax.enqueue("fault_job", cluster.job(fault="always", marker=cluster.marker()))
    stream = cluster.keys.queue(ax.CONF.queue_name, ax.Priority.LOW)
    await get_redis().xadd(stream, {"event": b'{"type": "task.queued", "agent_id": 12'})
    await get_redis().xadd(stream, {"unexpected": b"field"})
    cluster.fault("malformed entries")
    with pytest.raises(ax.ContextError, match="above the 65,536-byte limit"):
        await ax.enqueue("fault_job", cluster.job(padding="x" * 70_000))
    cluster.fault("oversized context")
    large = await ax.enqueue("fault_job", cluster.job(padding="x" * 60_000))
    others = await cluster.enqueue_jobs(10, work=0.1)

    with pytest.raises(ax.TaskFailedError, match="delivered 3 times"):
        await ax.get_result(poison, timeout=scaled(90))
    cluster.fault("poison task (3 deliveries, each killing its worker)")
    cluster.recovered()
    dead = await get_redis().xrange(cluster.keys.dead_letters)
    reasons = sorted(f[b"reason"].decode() for _, f in dead)
    assert len(reasons) == 3, reasons
    assert sum("delivered 3 times" in r for r in reasons) == 1
    assert "exited with code -9" in pool.output()
    await check(cluster, [poison, large, *others], statuses={poison.agent_id: Status.ERROR})


@pytest.mark.fault("8. SIGTERM of a busy pool")
async def test_sigterm_of_a_busy_pool(cluster: Cluster) -> None:
    cluster.start_projector()
    timeout = 2.0
    pool = cluster.start_pool(
        workers=2, concurrency=3, AGENTEXEC_GRACEFUL_SHUTDOWN_TIMEOUT=str(timeout)
    )
    short = await cluster.enqueue_jobs(3, work=1.0, steps=2)
    long = await cluster.enqueue_jobs(3, work=6.0, steps=6)
    for task in short + long:
        await wait_for_event(task.agent_id, events.TaskStarted)
    queued = await cluster.enqueue_jobs(6, work=0.1)
    pool.terminate()
    cluster.fault("SIGTERM")
    started = time.monotonic()
    assert await asyncio.to_thread(pool.wait, 60) == 0
    shutdown = time.monotonic() - started
    # The long tasks run past the timeout: they are stopped and handed back, so the pool
    # exits within the timeout (plus the time to stop processes, which stretches with load:
    # 19 s beside a CPU hog).
    assert shutdown < timeout + scaled(3), shutdown
    assert "handed back" in pool.output()
    for task in short:
        await ax.get_result(task, timeout=scaled(5))
    cluster.start_pool(workers=2, concurrency=3)
    await check(cluster, short + long + queued)
    cluster.figures.notes.append(f"pool exited {shutdown:.1f}s after SIGTERM (timeout {timeout}s)")


@pytest.mark.fault("10. Retries with backoff to success, and exhausted to ERROR")
async def test_retries_to_success_and_to_error(cluster: Cluster) -> None:
    cluster.start_projector()
    cluster.start_pool(workers=2, concurrency=4)
    ok, failing = [], []
    for i in range(10):
        ok.append(
            await ax.enqueue(
                "fault_flaky",
                Flaky(ledger=cluster.ledger, counter=str(cluster.tmp / f"ok-{i}"), failures=2),
            )
        )
        failing.append(
            await ax.enqueue(
                "fault_flaky",
                Flaky(ledger=cluster.ledger, counter=str(cluster.tmp / f"ko-{i}"), failures=5),
            )
        )
    cluster.fault("handler raising ConnectionError (retried up to 2 times)")
    await check(cluster, ok + failing, statuses={t.agent_id: Status.ERROR for t in failing})
    for task in ok + failing:
        log = await events_of(task.agent_id)
        assert [e.attempt for e in log if isinstance(e, events.TaskRetried)] == [1, 2]
        assert [e.attempt for e in log if isinstance(e, events.TaskStarted)] == [1, 2, 3]
    with cluster.engine.connect() as conn:
        from sqlalchemy import select

        from agentexec.activity.models import Activity

        attempts = set(conn.execute(select(Activity.attempts)).scalars())
    assert attempts == {3}


@pytest.mark.fault("18. SIGKILL of a worker holding a task's lock key")
async def test_a_worker_killed_holding_a_lock_key_hands_it_on(cluster: Cluster) -> None:
    cluster.start_projector()
    cluster.start_pool(workers=2, concurrency=3)
    marker = cluster.marker()
    holder = await ax.enqueue(
        "fault_keyed_job",
        cluster.job(work=0.4, steps=2, fault="mid_progress", marker=marker, key="k"),
    )
    keyed = [await ax.enqueue("fault_keyed_job", cluster.job(work=0.1, key="k")) for _ in range(6)]
    other = await cluster.enqueue_jobs(12, work=0.2)
    cluster.killed_pids.add(int(await wait_for_file(marker)))
    cluster.fault("SIGKILL holding a lock key")
    await ax.get_result(holder, timeout=scaled(60))
    cluster.recovered()
    await check(cluster, [holder, *keyed, *other])
    # The key's runs that reached their end never overlapped, before or after the kill.
    spans = sorted(
        (float(start), float(end))
        for _, start, end in (
            line.split() for line in Path(cluster.ledger + ".spans").read_text().splitlines()
        )
    )
    assert len(spans) == 7
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans))
    # The waiting lists are empty: nothing was left parked.
    assert not await get_redis().keys(f"{cluster.keys.prefix}:*waiting-for*")
