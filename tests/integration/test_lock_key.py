"""Task locks with real Redis and real worker processes: `lock_key` runs tasks with the same
key one at a time across workers without holding a worker while they wait, holds expire with
their lease, a waiting task can be canceled, and the per-tenant limit bounds a tenant's share
of the workers."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import BaseModel

import agentexec as ax
from agentexec import events
from agentexec.broker import Broker
from agentexec.connection import get_redis
from agentexec.errors import ContextError, TaskDefinitionError
from agentexec.locks import Lock
from agentexec.streams import Keys
from tests.apps import locked
from tests.apps.locked import Job
from tests.support.waiting import async_wait_for, scaled


async def log_of(agent_id: object) -> list[events.AnyEvent]:
    entries = await get_redis().xrange(Keys(ax.CONF.key_prefix).events)
    return [e for e in (events.decode_entry(f) for _, f in entries) if e.agent_id == agent_id]


def overlapping(spans: list[dict[str, Any]]) -> list[tuple[str, str]]:
    ordered = sorted(spans, key=lambda s: s["start"])
    return [
        (a["label"], b["label"])
        for i, a in enumerate(ordered)
        for b in ordered[i + 1 :]
        if b["start"] < a["end"]
    ]


def most_at_once(spans: list[dict[str, Any]]) -> int:
    edges = sorted([(s["start"], 1) for s in spans] + [(s["end"], -1) for s in spans])
    running = top = 0
    for _, change in edges:
        running += change
        top = max(top, running)
    return top


def pool(workers: int, concurrency: int) -> ax.Pool:
    made = ax.Pool(num_workers=workers, concurrency=concurrency)
    made.task("keyed", lock_key="customer-{customer_id}")(locked.job)
    made.task("free")(locked.job)
    made.task("parent")(locked.parent)
    return made


@pytest.fixture
def sync_redis(redis_conf: str) -> redis.Redis:
    return redis.Redis.from_url(redis_conf)


async def waiting(agent_id: uuid.UUID) -> bool:
    return any(isinstance(e, events.TaskWaiting) for e in await log_of(agent_id))


async def test_same_key_tasks_never_overlap_and_other_keys_run_in_parallel(
    redis_conf: str, sync_redis: redis.Redis
) -> None:
    running = pool(2, 4)
    running.start()
    try:
        tasks = [
            await ax.enqueue("keyed", Job(customer_id=c, label=f"{c}{i}", seconds=0.3))
            for i in range(4)
            for c in ("a", "b")
        ]
        for task in tasks:
            await ax.get_result(task, timeout=scaled(60))
    finally:
        running.shutdown()
    spans = locked.spans(sync_redis)
    assert len(spans) == 8
    for key in ("a", "b"):
        assert overlapping([s for s in spans if s["key"] == key]) == []
    # Different keys ran side by side.
    assert most_at_once(spans) == 2
    # The waits are in each parked task's activity, with what they wait for.
    parked = [
        e for t in tasks for e in await log_of(t.agent_id) if isinstance(e, events.TaskWaiting)
    ]
    assert parked
    assert all(e.lock in ("key:customer-a", "key:customer-b") for e in parked)
    assert "Waiting for lock key 'customer-" in parked[0].message
    assert parked[0].status is events.Status.QUEUED


async def test_a_waiting_task_holds_no_worker(redis_conf: str, sync_redis: redis.Redis) -> None:
    running = pool(1, 2)  # two slots in all
    running.start()
    try:
        holder = await ax.enqueue("keyed", Job(customer_id="a", label="holder", seconds=scaled(3)))
        waiters = [
            await ax.enqueue("keyed", Job(customer_id="a", label=f"w{i}", seconds=0.05))
            for i in range(3)
        ]
        for waiter in waiters:
            await async_wait_for(lambda w=waiter: waiting(w.agent_id), what="a parked waiter")
        # Parked, they are still the queue's: `cancel_pending` leaves them alone.
        held = Broker().held_by_queues({ax.CONF.queue_name})
        assert {w.agent_id for w in waiters} <= held
        assert Broker().queue_depth(ax.CONF.queue_name).parked == 3
        # Both slots were free of the waiters: a task with no key runs while they wait.
        other = await ax.enqueue("free", Job(customer_id="a", label="other", seconds=0.05))
        assert await ax.get_result(other, timeout=scaled(30)) == "other"
        spans = locked.spans(sync_redis)
        assert [s["label"] for s in spans] == ["other"]
        assert await ax.get_result(holder, timeout=scaled(30)) == "holder"
        for waiter in waiters:
            await ax.get_result(waiter, timeout=scaled(30))
    finally:
        running.shutdown()
    spans = locked.spans(sync_redis)
    keyed = [s for s in spans if s["label"] != "other"]
    assert overlapping(keyed) == []
    # First in, first out: the waiters ran in their order of arrival.
    assert [s["label"] for s in sorted(keyed, key=lambda s: s["start"])] == [
        "holder",
        "w0",
        "w1",
        "w2",
    ]


async def test_a_killed_holder_hands_its_key_on(
    redis_conf: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    ax.CONF.lease_seconds = 2
    running = pool(2, 2)
    running.start()
    try:
        marker = str(tmp_path / "died")
        holder = await ax.enqueue(
            "keyed", Job(customer_id="a", label="holder", seconds=0.5, die_marker=marker)
        )
        waiter = await ax.enqueue("keyed", Job(customer_id="a", label="waiter", seconds=0.05))
        assert await ax.get_result(waiter, timeout=scaled(60)) == "waiter"
        assert await ax.get_result(holder, timeout=scaled(60)) == "holder"
    finally:
        running.shutdown()
    assert Path(marker).exists()  # its first run killed its worker
    spans = locked.spans(sync_redis)
    assert overlapping(spans) == []


async def test_a_hold_whose_holder_vanished_expires_with_the_lease(
    redis_conf: str, sync_redis: redis.Redis
) -> None:
    """A holder that died without a trace (its host gone): its hold lapses after a lease and
    the workers' sweep wakes the waiter."""
    ax.CONF.lease_seconds = 1
    keys = Keys(ax.CONF.key_prefix)
    queue = ax.CONF.queue_name
    lock = Lock("key:customer-a", 1)
    ghost = str(uuid.uuid4())
    sync_redis.zadd(keys.lock_holders(queue, lock.name), {ghost: int(time.time() * 1000) + 1000})
    running = pool(1, 2)
    running.start()
    try:
        waiter = await ax.enqueue("keyed", Job(customer_id="a", label="waiter", seconds=0.05))
        await async_wait_for(lambda: waiting(waiter.agent_id), what="the waiter to park")
        assert await ax.get_result(waiter, timeout=scaled(30)) == "waiter"
    finally:
        running.shutdown()
    assert not sync_redis.exists(keys.lock_waiting(queue, lock.name))
    assert not sync_redis.zrange(keys.lock_index(queue), 0, -1)


async def test_a_holder_that_lost_its_hold_stops_and_runs_again(
    redis_conf: str, sync_redis: redis.Redis
) -> None:
    """A hold that lapsed while its task ran (Redis unreachable for longer than a lease;
    here removed by hand) may have gone to another task: the handler is stopped, and the
    task runs again after its lease, with its key."""
    ax.CONF.lease_seconds = 1
    keys = Keys(ax.CONF.key_prefix)
    holders = keys.lock_holders(ax.CONF.queue_name, "key:customer-a")
    running = pool(1, 2)
    running.start()
    try:
        task = await ax.enqueue("keyed", Job(customer_id="a", label="held", seconds=scaled(2)))

        async def started(count: int) -> bool:
            log = await log_of(task.agent_id)
            return len([e for e in log if isinstance(e, events.TaskStarted)]) >= count

        await async_wait_for(lambda: started(1), what="the task to start")
        assert sync_redis.zrem(holders, str(task.agent_id)) == 1
        await async_wait_for(lambda: started(2), timeout=30, what="the task to run again")
        assert await ax.get_result(task, timeout=scaled(30)) == "held"
    finally:
        running.shutdown()
    # Only the second run reached its end.
    assert [s["label"] for s in locked.spans(sync_redis)] == ["held"]


async def test_cancel_of_a_waiting_task_ends_it_at_once(
    redis_conf: str, sync_redis: redis.Redis
) -> None:
    running = pool(1, 2)
    running.start()
    try:
        holder = await ax.enqueue("keyed", Job(customer_id="a", label="holder", seconds=60))
        waiter = await ax.enqueue("keyed", Job(customer_id="a", label="waiter", seconds=0.05))
        await async_wait_for(lambda: waiting(waiter.agent_id), what="the waiter to park")
        assert await ax.cancel(waiter.agent_id) is True
        with pytest.raises(ax.TaskFailedError, match="canceled"):
            await ax.get_result(waiter, timeout=scaled(15))
        log = await log_of(waiter.agent_id)
        assert not [e for e in log if isinstance(e, events.TaskStarted)]
        assert isinstance(log[-1], events.TaskCanceled)
        assert await ax.cancel(holder.agent_id) is True
        with pytest.raises(ax.TaskFailedError, match="canceled"):
            await ax.get_result(holder, timeout=scaled(15))
        # The canceled holder released its key: the next task with it runs.
        after = await ax.enqueue("keyed", Job(customer_id="a", label="after", seconds=0.05))
        assert await ax.get_result(after, timeout=scaled(15)) == "after"
    finally:
        running.shutdown()


async def test_the_tenant_limit_keeps_a_burst_from_taking_every_worker(
    redis_conf: str, sync_redis: redis.Redis
) -> None:
    ax.CONF.max_concurrency_per_tenant = 2
    running = pool(1, 4)
    running.start()
    try:
        burst = [
            await ax.enqueue(
                "free",
                Job(customer_id="big", label=f"big{i}", seconds=0.4),
                metadata={"tenant": "big"},
            )
            for i in range(8)
        ]
        small = await ax.enqueue(
            "free",
            Job(customer_id="small", label="small", seconds=0.05),
            metadata={"tenant": "small"},
        )
        await ax.get_result(small, timeout=scaled(30))
        small_done = time.time()
        for task in burst:
            await ax.get_result(task, timeout=scaled(60))
    finally:
        running.shutdown()
    spans = locked.spans(sync_redis)
    assert most_at_once([s for s in spans if s["key"] == "big"]) == 2
    # The small tenant did not wait for the burst: most of it was still to run.
    assert sum(1 for s in spans if s["key"] == "big" and s["end"] > small_done) >= 4
    parked = [
        e for t in burst for e in await log_of(t.agent_id) if isinstance(e, events.TaskWaiting)
    ]
    assert parked and parked[0].lock == "tenant:big"
    assert "tenant 'big' already runs 2 task(s)" in parked[0].message


async def test_a_parent_waiting_for_its_child_does_not_deadlock_on_its_tenants_cap(
    redis_conf: str,
) -> None:
    """The cap counts tasks without a parent: a child (which inherits its parent's tenant)
    runs while its parent holds the tenant's only slot."""
    ax.CONF.max_concurrency_per_tenant = 1
    running = pool(1, 4)
    running.start()
    try:
        task = await ax.enqueue("parent", Job(customer_id="a", label="parent"), tenant="t1")
        assert await ax.get_result(task, timeout=scaled(30)) == "parent: child"
    finally:
        running.shutdown()


class Customer(BaseModel):
    customer_id: str
    note: str = ""


async def _customer_task(agent_id: uuid.UUID, context: Customer) -> None:
    return None


def test_a_lock_key_naming_a_missing_field_is_refused_at_registration() -> None:
    made = ax.Pool(queue_name="lock_key_checks")
    with pytest.raises(TaskDefinitionError, match=r"names field 'account'.*customer_id, note"):
        made.task("bad", lock_key="{account}")(_customer_task)
    with pytest.raises(TaskDefinitionError, match="positional field"):
        made.task("bad", lock_key="{0}")(_customer_task)
    with pytest.raises(TaskDefinitionError, match="non-empty template"):
        made.task("bad", lock_key="")(_customer_task)


async def test_a_key_that_formats_empty_or_too_long_is_refused_at_enqueue(
    redis_conf: str,
) -> None:
    made = ax.Pool(queue_name="lock_key_checks")
    made.task("keyed_checks", lock_key="{customer_id}")(_customer_task)
    with pytest.raises(ContextError, match="formats to the empty key"):
        await ax.enqueue("keyed_checks", Customer(customer_id=" "))
    with pytest.raises(ContextError, match="above the 200-character limit"):
        await ax.enqueue("keyed_checks", Customer(customer_id="x" * 201))
    assert await ax.enqueue("keyed_checks", Customer(customer_id="c-1"))
