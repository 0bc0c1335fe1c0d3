"""Trackers on a real Redis: counting once per child, the fan-in queued exactly once (also
with two workers finishing the last children at the same instant), events, and expiry."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import agentexec as ax
from agentexec import events
from agentexec.connection import get_sync_redis
from agentexec.tasks import RunningTask, reset_running, set_running
from tests.apps import workflows
from tests.apps.workflows import Aggregate, Child
from tests.support.logs import keys_of, log_entries_sync
from tests.support.waiting import scaled, wait_for


def tracker_events(tracker: ax.Tracker) -> list[events.AnyEvent]:
    entries = log_entries_sync()
    return [
        e
        for e in (events.decode_entry(f) for _, f in entries)  # type: ignore[union-attr]
        if e.agent_id == tracker.id
    ]


def queued(task_name: str) -> list[events.TaskQueued]:
    entries = log_entries_sync()
    return [
        e
        for e in (events.decode_entry(f) for _, f in entries)  # type: ignore[union-attr]
        if isinstance(e, events.TaskQueued) and e.task_name == task_name
    ]


def test_counts_events_and_the_seed_pattern(redis_conf: str) -> None:
    tracker = ax.Tracker("research", uuid.uuid4())
    assert not tracker.complete  # nothing expected yet
    assert [tracker.incr() for _ in range(3)] == [1, 2, 3]
    assert tracker.decr(key="a") == 2
    assert tracker.decr(key="a") == 2  # the same child again: counted once
    assert tracker.decr(key="b") == 1 and not tracker.complete
    assert tracker.decr(key="c") == 0 and tracker.complete
    assert (tracker.pending, tracker.total) == (0, 3)
    log = tracker_events(tracker)
    assert [(type(e).__name__, e.pending, e.total) for e in log] == [  # type: ignore[union-attr]
        ("TrackerIncremented", 1, 1),
        ("TrackerIncremented", 2, 2),
        ("TrackerIncremented", 3, 3),
        ("TrackerDecremented", 2, 3),
        ("TrackerDecremented", 1, 3),
        ("TrackerDecremented", 0, 3),
        ("TrackerCompleted", 0, 3),
    ]
    assert all(e.task_name == "research" for e in log)


def test_decr_inside_a_task_counts_once_per_agent_id(redis_conf: str) -> None:
    tracker = ax.Tracker("research", "batch-1")
    tracker.incr()
    tracker.incr()
    child = uuid.uuid4()
    token = set_running(RunningTask(child))
    try:
        assert [tracker.decr() for _ in range(3)] == [1, 1, 1]  # three attempts, one count
    finally:
        reset_running(token)
    [decremented] = [e for e in tracker_events(tracker) if isinstance(e, events.TrackerDecremented)]
    assert decremented.child_id == child
    assert tracker.incr(key="producer") == 2 and tracker.incr(key="producer") == 2


def test_the_fan_in_is_queued_once_when_complete_or_at_once_if_already(
    redis_conf: str, tmp_path: Path
) -> None:
    batch = str(uuid.uuid4())
    tracker = ax.Tracker("research", batch)
    tracker.incr()
    fan_in = tracker.on_complete("aggregate", Aggregate(batch_id=batch, workdir=str(tmp_path)))
    assert tracker.on_complete("aggregate", Aggregate(batch_id=batch, workdir="x")) == fan_in
    assert queued("aggregate") == []
    tracker.decr(key="only")
    tracker.decr(key="late duplicate")  # pending goes below zero: nothing fires again
    [event] = queued("aggregate")
    assert event.agent_id == fan_in.agent_id and fan_in.queue_name == "trackers"
    stream = keys_of(fan_in.agent_id).queue("trackers", ax.Priority.LOW)
    assert get_sync_redis().xlen(stream) == 1
    [completed] = [e for e in tracker_events(tracker) if isinstance(e, events.TrackerCompleted)]
    assert completed.fan_in_id == fan_in.agent_id

    done = ax.Tracker("research", "already-done")
    done.incr()
    done.decr()
    late = done.on_complete("aggregate", Aggregate(batch_id="already-done", workdir="x"))
    assert [e.agent_id for e in queued("aggregate")] == [fan_in.agent_id, late.agent_id]


def test_racing_last_decrements_fire_the_fan_in_exactly_once(redis_conf: str) -> None:
    trackers = [ax.Tracker("race", f"batch-{i}") for i in range(30)]
    for tracker in trackers:
        tracker.incr()
        tracker.incr()
        tracker.on_complete("aggregate", Aggregate(batch_id=tracker.batch_id, workdir="x"))
    barrier = threading.Barrier(2)

    def finish(key: str) -> None:
        for tracker in trackers:
            barrier.wait()
            tracker.decr(key=key)

    threads = [threading.Thread(target=finish, args=(k,)) for k in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(t.complete for t in trackers)
    assert len(queued("aggregate")) == len(trackers)


def test_state_expires_after_the_batch_completes(redis_conf: str) -> None:
    tracker = ax.Tracker("research", "expiring", ttl=1)
    keys = keys_of(tracker.id)
    state = keys.tracker("research", "expiring")
    tracker.incr()
    tracker.decr(key="child")
    client = get_sync_redis()
    assert 0 < client.ttl(state) <= 1  # type: ignore[operator]
    wait_for(lambda: not client.exists(state), timeout=10, what="the tracker state to expire")
    assert not client.exists(keys.tracker_counted("research", "expiring"))
    open_tracker = ax.Tracker("research", "open", ttl=1)
    open_tracker.incr()
    assert client.ttl(keys_of(open_tracker.id).tracker("research", "open")) > 3600  # type: ignore[operator]


def test_bad_names_are_rejected(redis_conf: str) -> None:
    with pytest.raises(ax.ConfigurationError, match="non-empty name"):
        ax.Tracker("", "b")
    with pytest.raises(ax.ConfigurationError, match="without braces"):
        ax.Tracker("r", "{b}")


@pytest.fixture
def tracker_pool(redis_conf: str) -> Iterator[ax.Pool]:
    ax.CONF.retry_backoff = 0.05
    ax.CONF.retry_backoff_max = 0.1
    workflows.tracker_pool.start()
    try:
        yield workflows.tracker_pool
    finally:
        workflows.tracker_pool.shutdown()


async def test_retried_children_finishing_together_fan_in_once(
    tracker_pool: ax.Pool, tmp_path: Path
) -> None:
    """Two worker processes (one task each) hold the last two children; both count the
    batch done at the same instant, then fail and are retried twice, counting again."""
    batch = str(uuid.uuid4())
    tracker = ax.Tracker("research", batch)
    aggregate = tracker.on_complete("aggregate", Aggregate(batch_id=batch, workdir=str(tmp_path)))
    children = []
    for index in range(2):
        tracker.incr()
        context = Child(batch_id=batch, index=index, workdir=str(tmp_path), failures=2)
        children.append(await ax.enqueue("child", context))
    wait_for(
        lambda: all((tmp_path / f"child-{i}.running").exists() for i in range(2)),
        timeout=30,
        what="both children running",
    )
    (tmp_path / "go").touch()
    assert await ax.gather(*children, timeout=scaled(60)) == [3, 3]
    assert await ax.get_result(aggregate, timeout=scaled(30)) == 2
    assert (tmp_path / "aggregated").read_text().split() == [str(aggregate.agent_id)]
    assert len(queued("aggregate")) == 1
    log = tracker_events(tracker)
    assert [type(e).__name__ for e in log].count("TrackerDecremented") == 2
    assert [type(e).__name__ for e in log].count("TrackerCompleted") == 1
    assert (tracker.pending, tracker.total) == (0, 2)
