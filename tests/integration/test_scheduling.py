"""Delayed tasks and cron schedules."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

import agentexec as ax
from agentexec import events
from tests.apps import basic, cron
from tests.apps.basic import Echo
from tests.support.listeners import subscribers
from tests.support.logs import log_entries, partition_keys
from tests.support.waiting import async_wait_for, scaled


async def queued_events() -> list[events.TaskQueued]:
    entries = await log_entries()
    return [
        e for e in (events.decode_entry(f) for _, f in entries) if isinstance(e, events.TaskQueued)
    ]


async def test_a_delayed_task_runs_when_due_and_not_before(redis_conf: str) -> None:
    ax.CONF.lease_seconds = 600  # the due time must arrive by notice, not by a periodic look
    basic.pool.start()
    try:
        # Every worker hears the due-time notices before the delayed tasks are enqueued.
        # (Each partition has its channel: a delayed task's notice is its partition's.)
        channels = [keys.schedule_channel(basic.pool.queue_name) for keys in partition_keys()]

        async def subscribed() -> bool:
            counts = [await subscribers(channel) for channel in channels]
            return min(counts) >= (basic.pool.num_workers or 1)

        await async_wait_for(subscribed, what="the workers subscribed to due-time notices")
        enqueued = time.time()
        task = await ax.enqueue("sync_echo", Echo(text="later"), delay=0.8)
        at = datetime.now(UTC) + timedelta(seconds=0.4)
        task_at = await ax.enqueue("sync_echo", Echo(text="at"), delay=at)
        assert await ax.get_result(task_at, timeout=scaled(30)) == "AT"
        assert await ax.get_result(task, timeout=scaled(30)) == "LATER"
        finished = time.time()
    finally:
        basic.pool.shutdown()
    log = [
        e for _, f in await log_entries() if (e := events.decode_entry(f)).agent_id == task.agent_id
    ]
    started = next(e for e in log if isinstance(e, events.TaskStarted))
    assert started.ts.timestamp() >= enqueued + 0.8
    # Woken by the enqueue's notice: long before the promoter's periodic look (600 s) would.
    assert finished - enqueued < ax.CONF.lease_seconds / 2
    queued = next(e for e in log if isinstance(e, events.TaskQueued))
    assert queued.not_before is not None


async def test_bad_delays_are_rejected(redis_conf: str) -> None:
    with pytest.raises(ValueError, match="has no time zone"):
        await ax.enqueue("echo", Echo(text="x"), delay=datetime.now())
    with pytest.raises(ValueError, match="is negative"):
        await ax.enqueue("echo", Echo(text="x"), delay=-1)


async def test_two_pools_fire_each_cron_slot_exactly_once(redis_conf: str) -> None:
    cron.first.start()
    cron.second.start()
    try:

        async def enough() -> bool:
            return len({(e.metadata or {}).get("slot") for e in await queued_events()}) >= 4

        await async_wait_for(enough, timeout=30, what="four cron slots")
    finally:
        cron.first.shutdown()
        cron.second.shutdown()
    slots = Counter((e.metadata or {}).get("slot") for e in await queued_events())
    assert slots and all(n == 1 for n in slots.values()), slots
    times = sorted(datetime.fromisoformat(s) for s in slots if s)
    assert all((b - a) == timedelta(seconds=1) for a, b in itertools.pairwise(times))


@pytest.mark.parametrize(
    ("cron_expr", "kwargs", "match"),
    [
        ("every minute", {}, "is not a cron expression"),
        ("* * * * *", {"tz": "Mars/Olympus"}, "is not a known time zone"),
        ("* * * * *", {"context": Echo(text="wrong type")}, "the task takes Tick"),
    ],
)
def test_bad_schedules_fail_at_declaration(
    cron_expr: str, kwargs: dict[str, object], match: str
) -> None:
    pool = ax.Pool(queue_name="unit")
    with pytest.raises(ax.TaskDefinitionError, match=match):
        pool.schedule("tick", cron_expr, **kwargs)(cron.tick)  # type: ignore[arg-type]


def test_a_context_with_required_fields_needs_one_given() -> None:
    pool = ax.Pool(queue_name="unit")
    with pytest.raises(ax.TaskDefinitionError, match="pass context="):
        pool.schedule("echo", "* * * * *")(basic.echo)
