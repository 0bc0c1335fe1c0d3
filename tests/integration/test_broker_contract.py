"""The Broker's contract: each verb's documented effects in Redis and its typed result, one
script at a time, against a real redis-server; and the scripts' headers, checked statically."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import msgspec
import pytest

import agentexec as ax
from agentexec import events, scripts
from agentexec.broker import EMPTY_LOG, Broker, LogBounds, LogPage
from agentexec.connection import get_redis
from agentexec.consumer import Claim, Consumer, Entry, Start
from agentexec.errors import BrokerError, GroupMissingError
from agentexec.eventlog import EventLog
from agentexec.events import Priority, TaskQueued
from agentexec.locks import Lock
from agentexec.positions import ORIGIN, Position
from agentexec.results import Outcome
from agentexec.streams import PROJECTOR_GROUP, WORKERS_GROUP, delayed_member
from agentexec.tasks import TaskLease
from agentexec.transitions import Append, IfCanceled, Queue, Store
from tests.support.waiting import async_wait_for, scaled

pytestmark = pytest.mark.usefixtures("redis_conf")


def queued(queue: str = "q", priority: Priority = Priority.LOW, **kw: Any) -> TaskQueued:
    return TaskQueued(agent_id=uuid.uuid4(), task_name="t", queue=queue, priority=priority, **kw)


def log_types(found: list[Any]) -> list[type]:
    return [type(events.decode_entry(f)) for _, f in found]


async def held(
    broker: Broker, name: str = "w:0", event: TaskQueued | None = None
) -> tuple[Consumer, Entry, TaskQueued]:
    """A consumer holding the entry of a new task of queue "q"."""
    event = event or queued()
    consumer = broker.consumer("q", name)
    await consumer.ensure_groups()
    await broker.enqueue(event)
    [entry] = await consumer.read(10)
    return consumer, entry, event


async def test_enqueue_appends_queues_and_deduplicates() -> None:
    broker, client = Broker(), get_redis()
    event = queued()
    first = await broker.enqueue(event)
    assert first.agent_id == event.agent_id
    assert log_types(await client.xrange(broker.keys.events)) == [TaskQueued]
    assert await client.xlen(broker.keys.queue("q", Priority.LOW)) == 1
    assert await client.exists(broker.keys.agent(event.agent_id))
    # Again (a retry after a lost reply): the first enqueue's ids, nothing queued twice.
    assert await broker.enqueue(event) == first
    other = queued()
    assert (await broker.enqueue(other, dedup="key:k")).agent_id == other.agent_id
    assert (await broker.enqueue(queued(), dedup="key:k")).agent_id == other.agent_id
    assert await client.xlen(broker.keys.queue("q", Priority.LOW)) == 2


async def test_enqueue_with_a_due_time_parks_the_task() -> None:
    broker, client = Broker(), get_redis()
    due = datetime.now(UTC) + timedelta(hours=1)
    event = queued(priority=Priority.HIGH)
    await broker.enqueue(event, due=due, what="test")
    assert await client.xlen(broker.keys.queue("q", Priority.HIGH)) == 0
    [(member, score)] = await client.zrange(broker.keys.delayed("q"), 0, -1, withscores=True)
    assert member == delayed_member(Priority.HIGH, events.encode(event))
    assert score == int(due.timestamp() * 1000)


async def test_enqueue_pipeline_records_the_run_and_queues_its_first_step() -> None:
    broker, client = Broker(), get_redis()
    run = TaskQueued(agent_id=uuid.uuid4(), task_name="p")
    step = queued(parent_id=run.agent_id)
    first = await broker.enqueue_pipeline(run, step, dedup=None, what="p", consequence="")
    assert first.agent_id == run.agent_id
    logged = [events.decode_entry(f) for _, f in await client.xrange(broker.keys.events)]
    assert [e.agent_id for e in logged] == [run.agent_id, step.agent_id]
    assert await client.xlen(broker.keys.queue("q", Priority.LOW)) == 1
    assert await client.exists(broker.keys.agent(run.agent_id), broker.keys.agent(step.agent_id))
    again = await broker.enqueue_pipeline(run, queued(), dedup=None, what="p", consequence="")
    assert again == first
    assert await client.xlen(broker.keys.queue("q", Priority.LOW)) == 1


async def test_start_says_why_a_task_must_not_start() -> None:
    broker, client = Broker(), get_redis()
    consumer, entry, event = await held(broker)
    started = events.TaskStarted(agent_id=event.agent_id, task_name="t")
    assert await broker.consumer("q", "w:1").start(entry, started, None) is Start.TAKEN_OVER
    await client.set(broker.keys.held(event.agent_id), "w:1")
    assert await consumer.start(entry, started, None) is Start.RUNNING_ELSEWHERE
    await client.delete(broker.keys.held(event.agent_id))
    parent = uuid.uuid4()
    await client.set(broker.keys.cancel_marker(parent), "1")
    assert await consumer.start(entry, started, parent) is Start.CANCELED
    assert await consumer.start(entry, started, None) is Start.STARTED
    since = int(time.time() * 1000) - 5000
    assert await consumer.start(entry, started, None, since) is Start.STARTED
    assert log_types(await client.xrange(broker.keys.events)) == [TaskQueued, events.TaskStarted]
    await client.set(broker.keys.result(event.agent_id), b"done")
    assert await consumer.start(entry, started, None) is Start.ENDED
    assert await client.xlen(entry[0]) == 0


async def test_read_takes_the_highest_priority_first_and_wait_blocks() -> None:
    broker = Broker()
    consumer = broker.consumer("q", "w:0")
    await consumer.ensure_groups()
    assert await consumer.read(10) == []
    low, high = queued(), queued(priority=Priority.HIGH)
    await broker.enqueue(low)
    await broker.enqueue(high)
    [entry] = await consumer.read(1)
    assert entry[0] == broker.keys.queue("q", Priority.HIGH)
    assert events.decode_entry(entry[2]).agent_id == high.agent_id
    [entry] = await consumer.wait(10, 100)
    assert events.decode_entry(entry[2]).agent_id == low.agent_id
    assert await consumer.wait(10, 10) == []


async def test_defer_parks_the_entry_unchanged() -> None:
    broker, client = Broker(), get_redis()
    consumer, entry, event = await held(broker)
    assert not await broker.consumer("q", "w:1").defer(entry, event.priority, 5)
    assert await consumer.defer(entry, event.priority, 5)
    assert await client.xlen(entry[0]) == 0
    assert await client.zrange(broker.keys.delayed("q"), 0, -1) == [
        delayed_member(Priority.LOW, entry[2][b"event"])
    ]


async def test_retry_appends_once_and_parks_the_next_attempt() -> None:
    broker, client = Broker(), get_redis()
    consumer, entry, event = await held(broker)
    again = msgspec.structs.replace(event, attempt=2)
    retried = events.TaskRetried(agent_id=event.agent_id, task_name="t", error="e", delay=1)
    assert not await broker.consumer("q", "w:1").retry(entry, again, retried, 5)
    assert await consumer.retry(entry, again, retried, 5)
    assert await consumer.retry(entry, again, retried, 5, int(time.time() * 1000) - 5000)
    assert log_types(await client.xrange(broker.keys.events)) == [TaskQueued, events.TaskRetried]
    assert await client.zrange(broker.keys.delayed("q"), 0, -1) == [
        delayed_member(Priority.LOW, events.encode(again))
    ]
    assert await client.xlen(entry[0]) == 0


async def test_promote_moves_due_tasks_and_returns_the_next_due_time() -> None:
    broker, client = Broker(), get_redis()
    now = int(time.time() * 1000)
    due, later = queued(priority=Priority.HIGH), queued()
    await client.zadd(
        broker.keys.delayed("q"),
        {
            delayed_member(Priority.HIGH, events.encode(due)): now - 1,
            delayed_member(Priority.LOW, events.encode(later)): now + 60_000,
        },
    )
    assert await broker.promote("q", now) == now + 60_000
    assert await client.xlen(broker.keys.queue("q", Priority.HIGH)) == 1
    assert await broker.promote("q", now + 60_000) is None
    assert await client.xlen(broker.keys.queue("q", Priority.LOW)) == 1


async def test_cancel_marks_and_records_unless_the_task_ended() -> None:
    broker, client = Broker(), get_redis()
    aid = uuid.uuid4()
    requested = events.TaskCancelRequested(agent_id=aid, task_name="", message="m")
    assert await broker.cancel(requested)
    assert await client.exists(broker.keys.cancel_marker(aid))
    assert await broker.canceled([aid, uuid.uuid4()]) == [aid]
    await client.set(broker.keys.result(aid), b"done")
    assert not await broker.cancel(requested)
    assert await client.xlen(broker.keys.events) == 1


async def test_finish_ends_the_task_with_its_transition_once() -> None:
    broker, client = Broker(), get_redis()
    consumer, entry, event = await held(broker)
    done = events.TaskCompleted(agent_id=event.agent_id, task_name="t", result=msgspec.Raw(b"1"))
    outcome = Outcome("complete", "t", result=done.result)
    nxt, other = queued(), uuid.uuid4()
    writes = [
        Queue(nxt),
        Store(other, Outcome("error", "x", error="e")),
        IfCanceled(event.agent_id, (), (Append(done),)),
    ]
    assert not await broker.consumer("q", "w:1").finish(entry, done, outcome, writes)
    assert await consumer.finish(entry, done, outcome, writes)
    assert await client.exists(broker.keys.result(event.agent_id), broker.keys.result(other)) == 2
    assert await client.exists(broker.keys.agent(nxt.agent_id))
    [(_, queued_next)] = await client.xrange(broker.keys.queue("q", Priority.LOW))
    assert events.decode_entry(queued_next).agent_id == nxt.agent_id
    assert log_types(await client.xrange(broker.keys.events)) == [
        TaskQueued,
        events.TaskCompleted,
        TaskQueued,
        events.TaskCompleted,
    ]
    assert not await consumer.finish(entry, done, outcome)  # ended: its result exists


async def test_transition_applies_writes_alone() -> None:
    broker, client = Broker(), get_redis()
    aid = uuid.uuid4()
    await client.set(broker.keys.cancel_marker(aid), "1")
    appended = events.TaskProgress(agent_id=aid, task_name="t", message="m")
    await broker.consumer("q", "w:0").transition([IfCanceled(aid, (Append(appended),), ())])
    assert log_types(await client.xrange(broker.keys.events)) == [events.TaskProgress]


async def test_dead_letter_moves_the_entry_and_ends_a_known_task() -> None:
    broker, client = Broker(), get_redis()
    consumer, entry, event = await held(broker)
    failed = events.TaskFailed(agent_id=event.agent_id, task_name="t", error="bad")
    outcome = Outcome("error", "t", error="bad")
    assert not await broker.consumer("q", "w:1").dead_letter(entry, "bad", failed, outcome)
    assert await consumer.dead_letter(entry, "bad", failed, outcome)
    [(_, letter)] = await client.xrange(broker.keys.dead_letters)
    assert letter[b"reason"] == b"bad" and letter[b"id"] == entry[1]
    assert await client.exists(broker.keys.result(event.agent_id))
    assert log_types(await client.xrange(broker.keys.events)) == [TaskQueued, events.TaskFailed]
    consumer, entry, _ = await held(broker)
    assert await consumer.dead_letter(entry, "unreadable", None, None)
    assert await client.xlen(broker.keys.dead_letters) == 2
    assert await client.xlen(broker.keys.events) == 3


async def test_append_held_is_fenced_by_the_lease_and_deduplicated() -> None:
    broker, client = Broker(), get_redis()
    _consumer, entry, event = await held(broker)
    lease = TaskLease(entry[0], entry[1], WORKERS_GROUP, "w:0")
    progress = events.TaskProgress(agent_id=event.agent_id, task_name="t", message="m")
    first = await broker.append_held(progress, lease, "event:a")
    assert first is not None
    assert broker.append_held_sync(progress, lease, "event:a") == first
    other = TaskLease(entry[0], entry[1], WORKERS_GROUP, "w:1")
    assert await broker.append_held(progress, other, "event:b") is None
    assert await client.xlen(broker.keys.events) == 2


async def test_checkpoint_held_saves_the_conversation_with_its_event_under_the_lease() -> None:
    broker, client = Broker(), get_redis()
    _consumer, entry, event = await held(broker)
    lease = TaskLease(entry[0], entry[1], WORKERS_GROUP, "w:0")
    saved = events.AgentCheckpoint(agent_id=event.agent_id, task_name="t", turn=2, run="r:1")
    first = await broker.checkpoint_held(saved, lease, "event:a", "r:1", b'{"turn": 2}')
    assert first is not None
    assert await broker.checkpoint(event.agent_id, "r:1") == b'{"turn": 2}'
    assert await client.ttl(broker.keys.checkpoints(event.agent_id)) > 0
    again = await broker.checkpoint_held(saved, lease, "event:a", "r:1", b'{"turn": 9}')
    assert again == first
    other = TaskLease(entry[0], entry[1], WORKERS_GROUP, "w:1")
    late = events.AgentCheckpoint(agent_id=event.agent_id, task_name="t", turn=3, run="r:1")
    assert await broker.checkpoint_held(late, other, "event:b", "r:1", b'{"turn": 3}') is None
    assert await broker.checkpoint(event.agent_id, "r:1") == b'{"turn": 2}'
    assert await broker.checkpoint(event.agent_id, "r:2") is None
    assert log_types(await client.xrange(broker.keys.events)) == [
        TaskQueued,
        events.AgentCheckpoint,
    ]


async def test_append_known_refuses_unknown_agent_ids_when_checking() -> None:
    broker, client = Broker(), get_redis()
    aid = uuid.uuid4()
    progress = events.TaskProgress(agent_id=aid, task_name="t", message="m")
    assert broker.append_known_sync(progress, check=True) is None
    assert broker.append_known_sync(progress, check=False)
    assert await client.exists(broker.keys.agent(aid))
    assert broker.append_known_sync(progress, check=True)
    assert await broker.append_known(progress, check=True)
    assert await client.xlen(broker.keys.events) == 3


async def test_appends_fill_in_the_task_name_the_agent_marker_holds() -> None:
    broker, client = Broker(), get_redis()
    _consumer, entry, event = await held(broker, event=queued(queue="q"))
    assert (await client.get(broker.keys.agent(event.agent_id))).endswith(b' "t"')
    lease = TaskLease(entry[0], entry[1], WORKERS_GROUP, "w:0")
    aid = event.agent_id
    unnamed = events.TaskProgress(agent_id=aid, task_name="", message='"task_name":""')
    await broker.append_held(unnamed, lease, "event:n")
    broker.append_known_sync(unnamed, check=True)
    # The marker still deduplicates the task's enqueue (a retry after a lost reply).
    assert (await broker.enqueue(event)).event_id == (await client.xrange(broker.keys.events))[0][
        0
    ].decode()
    await broker.cancel(events.TaskCancelRequested(agent_id=aid, task_name=""))
    later = datetime.now(UTC) + timedelta(hours=1)
    delayed = queued(queue="q")
    await broker.enqueue(delayed, due=later)
    await broker.append_known(
        events.TaskProgress(agent_id=delayed.agent_id, task_name=""), check=True
    )
    found = [events.decode_entry(f) for _, f in await client.xrange(broker.keys.events)]
    assert [e.task_name for e in found] == ["t"] * 6
    assert [e.message for e in found[1:3]] == ['"task_name":""'] * 2
    # A name that JSON escapes is copied as it is encoded.
    odd = TaskQueued(agent_id=uuid.uuid4(), task_name='say "hi" \\ é', queue="q")
    await broker.enqueue(odd)
    await broker.append_known(events.TaskProgress(agent_id=odd.agent_id, task_name=""), check=True)
    [(_, last)] = await client.xrevrange(broker.keys.events, count=1)
    assert events.decode_entry(last).task_name == odd.task_name
    # An agent id the marker does not name (unknown, or marked by an older version) stays "".
    stranger = events.TaskProgress(agent_id=uuid.uuid4(), task_name="")
    await client.set(broker.keys.agent(stranger.agent_id), "1")
    await broker.append_known(stranger, check=True)
    [(_, last)] = await client.xrevrange(broker.keys.events, count=1)
    assert events.decode_entry(last).task_name == ""


async def test_renew_keeps_held_entries_and_reports_lost_ones() -> None:
    broker, client = Broker(), get_redis()
    consumer, entry, event = await held(broker)
    agent = str(event.agent_id)
    assert await consumer.renew(entry[0], [(entry[1], agent)], 1000) == set()
    assert await broker.consumer("q", "w:1").renew(entry[0], [(entry[1], agent)], 1000) == {
        entry[1]
    }
    # Pending to nobody (Redis lost it), task not ended: the held key stands in for the lease.
    lost = b"1-1"
    assert await consumer.renew(entry[0], [(lost, "a")], 1000) == set()
    assert await client.get(broker.keys.held("a")) == b"w:0"
    await client.set(broker.keys.result("a"), b"done")
    assert await consumer.renew(entry[0], [(lost, "a")], 1000) == {lost}


async def test_claim_expired_own_pending_and_release() -> None:
    broker, client = Broker(), get_redis()
    consumer, entry, _ = await held(broker)
    taker = broker.consumer("q", "w:1")
    claim = await taker.claim_expired(entry[0], 0)
    assert [e[1] for e in claim.entries] == [entry[1]]
    assert claim.deliveries == {(entry[0], entry[1]): 2}
    mine = await taker.own_pending()
    assert [e[1] for e in mine.entries] == [entry[1]]
    assert await consumer.own_pending() == Claim()
    assert await taker.release(entry[0]) == 1
    [(new_id, fields)] = await client.xrange(entry[0])
    assert new_id != entry[1] and fields == entry[2]
    assert await client.xpending(entry[0], WORKERS_GROUP) == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }


async def test_requeue_held_parks_once_per_dedup_name() -> None:
    broker, client = Broker(), get_redis()
    event = queued()
    assert await broker.requeue_held(event, "key:r", 5)
    assert not await broker.requeue_held(event, "key:r", 5)
    assert await client.zcard(broker.keys.delayed("q")) == 1
    assert await client.xlen(broker.keys.events) == 0


async def test_restore_results_stores_only_missing_ones() -> None:
    broker, client = Broker(), get_redis()
    kept, restored = uuid.uuid4(), uuid.uuid4()
    await client.set(broker.keys.result(kept), b"first")
    await broker.restore_results([(kept, b"second", 60), (restored, b"back", 60)])
    assert await client.get(broker.keys.result(kept)) == b"first"
    assert await client.get(broker.keys.result(restored)) == b"back"


async def test_remove_idle_consumers_spares_those_holding_entries() -> None:
    broker, client = Broker(), get_redis()
    _consumer, _, _ = await held(broker, "holds:0")
    await client.xgroup_createconsumer(broker.keys.queue("q", Priority.HIGH), WORKERS_GROUP, "x:0")
    assert await broker.remove_idle_consumers("q", 0) == ["x:0"]


async def test_track_counts_completes_and_queues_the_fan_in_once() -> None:
    broker, client = Broker(), get_redis()

    def change(op: str, key: str | None = None, fan_in: TaskQueued | None = None) -> Any:
        aid = uuid.uuid4()
        event = events.TrackerIncremented(agent_id=aid, task_name="r", tracker="r", batch_id="b")
        done = events.TrackerCompleted(agent_id=aid, task_name="r", tracker="r", batch_id="b")
        return broker.track("r", "b", op, key, event, done, (600, 60), fan_in)

    assert change("incr", "a").pending == 1
    assert not change("incr", "a").counted
    assert change("incr").total == 2
    fan_in = queued()
    registered = change("fan_in", fan_in=fan_in)
    assert registered.fan_in_id == fan_in.agent_id
    assert change("fan_in", fan_in=queued("other")).fan_in_id == fan_in.agent_id
    # A process that never saw the registration declares the fan-in's keys on a second try.
    from agentexec import broker as broker_module

    broker_module._fan_ins.clear()
    assert change("decr", "x").pending == 1
    assert await client.xlen(broker.keys.queue("q", Priority.LOW)) == 0
    last = change("decr", "y")
    assert (last.pending, last.total) == (0, 2)
    assert change("decr", "z").pending == -1  # complete already: nothing queued twice
    [(_, fields)] = await client.xrange(broker.keys.queue("q", Priority.LOW))
    assert events.decode_entry(fields).agent_id == fan_in.agent_id
    assert await client.exists(broker.keys.agent(fan_in.agent_id))
    assert await client.ttl(broker.keys.tracker("r", "b")) <= 60


async def test_tracker_counts_reads_pending_and_total() -> None:
    broker = Broker()
    assert broker.tracker_counts("r", "b") == (0, 0)
    aid = uuid.uuid4()
    event = events.TrackerIncremented(agent_id=aid, task_name="r", tracker="r", batch_id="b")
    done = events.TrackerCompleted(agent_id=aid, task_name="r", tracker="r", batch_id="b")
    broker.track("r", "b", "incr", None, event, done, (600, 60))
    broker.track("r", "b", "incr", None, event, done, (600, 60))
    assert broker.tracker_counts("r", "b") == (2, 2)


async def test_log_reads_return_recorded_events_and_skip_foreign_entries() -> None:
    broker, client = Broker(), get_redis()
    assert await broker.read_log(count=10) == LogPage([], None, 0)
    first = queued()
    ids = [Position.parse(await EventLog(broker).append(first, check=False))]
    ids.append(Position.parse(await client.xadd(broker.keys.events, {b"other": b"x"})))
    progress = events.TaskProgress(agent_id=first.agent_id, task_name="t", message="m")
    ids.append(Position.parse(await EventLog(broker).append(progress, check=False)))
    page = await broker.read_log(count=10)
    assert [r.position for r in page.recorded] == [ids[0], ids[2]]
    assert (page.last, page.size) == (ids[2], 3)
    assert page.recorded[1].event == progress
    assert broker.read_log_sync(count=10) == page
    # After a position, up to another, in pages.
    assert broker.read_log_sync(ids[0], count=10).size == 2
    assert (await broker.read_log(until=ids[1], count=10)).last == ids[1]
    assert (await broker.read_log(count=2)).last == ids[1]
    tail = broker.tail_log_sync(2)
    assert (tail.size, tail.last, [r.position for r in tail.recorded]) == (2, ids[2], [ids[2]])
    assert (await broker.wait_log(ids[0], count=10, block_ms=10)).last == ids[2]
    assert broker.wait_log_sync(ids[2], count=10, block_ms=10).size == 0
    # A blocked read ended by Redis (the log deleted under it): an empty page, not an error.
    waiting = asyncio.ensure_future(broker.wait_log(ids[2], count=10, block_ms=5000))

    async def blocked() -> list[Any]:
        found: list[Any] = await client.client_list()
        return [c["id"] for c in found if c.get("cmd") == "xread" and "b" in c["flags"]]

    [reader] = await async_wait_for(blocked, what="the read to block")
    await client.client_unblock(reader, error=True)
    assert (await asyncio.wait_for(waiting, scaled(10))).size == 0


async def test_log_bounds_say_what_the_log_holds() -> None:
    broker, client = Broker(), get_redis()
    assert await broker.log_bounds() == EMPTY_LOG
    ids = [Position.parse(await EventLog(broker).append(queued(), check=False)) for _ in range(3)]
    assert await broker.log_bounds() == LogBounds(ORIGIN, False, ids[0], ids[2])
    await client.xdel(broker.keys.events, str(ids[1]))
    assert await broker.log_bounds() == LogBounds(ids[1], True, ids[0], ids[2])
    await client.xtrim(broker.keys.events, maxlen=0)
    assert await broker.log_bounds() == LogBounds(ids[1], True, None, ids[2])


def test_unprojected_since_is_the_oldest_event_no_projector_took() -> None:
    import redis

    broker = Broker()
    client = redis.Redis.from_url(ax.CONF.redis_url)
    assert broker.unprojected_since_ms() is None  # no log
    first = client.xadd(broker.keys.events, {b"event": b"{}"})
    second = client.xadd(broker.keys.events, {b"event": b"{}"})
    assert broker.unprojected_since_ms() == Position.parse(first).ms
    client.xgroup_create(broker.keys.events, "projector", id=first)
    assert broker.unprojected_since_ms() == Position.parse(second).ms
    client.xgroup_setid(broker.keys.events, "projector", id=second)
    assert broker.unprojected_since_ms() is None  # all taken
    client.xgroup_setid(broker.keys.events, "projector", id=first)
    client.set(broker.keys.projector_lease, "owner")
    assert broker.unprojected_since_ms() is None  # a projector holds the lease


async def test_log_lease_fences_reads_and_is_held_by_one_owner() -> None:
    broker, client = Broker(), get_redis()
    first, second = broker.log_lease("p:1", 10), broker.log_lease("p:2", 10)
    assert await first.acquire() and await first.acquire()
    assert not await second.acquire()
    await client.xgroup_create(broker.keys.events, PROJECTOR_GROUP, id="0", mkstream=True)
    entry_id = await EventLog(broker).append(queued(), check=False)
    assert await second.read(broker.keys.events, PROJECTOR_GROUP, ">", 10) is None
    [(read_id, fields)] = await first.read(broker.keys.events, PROJECTOR_GROUP, ">", 10) or []
    assert read_id == entry_id and fields is not None
    assert await first.read(broker.keys.events, PROJECTOR_GROUP, ">", 10) == []
    # Pending under the one consumer name, so that the next owner reads it again.
    await client.xdel(broker.keys.events, entry_id)
    assert await first.read(broker.keys.events, PROJECTOR_GROUP, "0", 10) == [(entry_id, None)]
    assert await first.renew() and not await second.renew()
    await second.release()
    assert await first.renew()
    await first.release()
    assert await second.acquire()


async def test_projector_delivered_is_its_group_s_last_delivered_id() -> None:
    broker, client = Broker(), get_redis()
    assert await broker.projector_delivered() is None  # no log
    entry_id = await EventLog(broker).append(queued(), check=False)
    assert await broker.projector_delivered() is None  # no group
    await client.xgroup_create(broker.keys.events, "audit", id="0")
    await client.xgroup_create(broker.keys.events, PROJECTOR_GROUP, id=entry_id)
    assert await broker.projector_delivered() == entry_id


async def test_lift_log_raises_the_last_id_and_moves_entries_above_the_floor() -> None:
    broker, client = Broker(), get_redis()
    ids = [
        (await client.xadd(broker.keys.events, {b"n": b"%d" % n}, id=f"{n}-0")).decode()
        for n in (1, 2, 3, 4)
    ]
    assert await broker.log_ids("0-0", "3-0", 10) == ids[:3]
    assert await broker.log_ids(ids[0], "+", 2) == ids[1:3]
    raised, moved = await broker.lift_log("100-0", ids[1], [ids[0]])
    assert raised and [old for old, _ in moved] == [ids[0], ids[2], ids[3]]
    found = await client.xrange(broker.keys.events)
    assert [f[b"n"] for _, f in found] == [b"2", b"1", b"3", b"4"]
    assert all(Position.parse(new) > Position(100, 0) for _, new in moved)
    assert [i.decode() for i, _ in found[1:]] == [new for _, new in moved]
    assert await broker.projector_delivered() == "100-0"  # the group, created at the floor
    # Above the floor already: nothing raised, nothing moved.
    assert await broker.lift_log("50-0", "", []) == (False, [])


async def test_trim_log_keeps_what_the_checkpoint_the_hot_window_and_groups_need() -> None:
    broker, client = Broker(), get_redis()
    assert await broker.trim_log("5-0", 0) == (0, None)  # no log
    ids = [
        (await client.xadd(broker.keys.events, {b"n": b"%d" % n}, id=f"{n}-0")).decode()
        for n in range(1, 11)
    ]
    # No projector group yet (a lost log not taken over): nothing goes.
    assert await broker.trim_log("8-0", 0) == (0, None)
    await client.xgroup_create(broker.keys.events, PROJECTOR_GROUP, id=ids[-1])
    # Below the checkpoint, not below it: entries 1 to 3 go.
    assert await broker.trim_log("4-0", 0) == (3, Position(4, 0))
    # Another group's oldest pending entry holds the trim back, then the entry after its
    # last delivered one once all is acknowledged.
    await client.xgroup_create(broker.keys.events, "audit", id=ids[4])
    await client.xreadgroup("audit", "reader", {broker.keys.events: ">"}, count=2)
    assert await broker.trim_log("9-0", 0) == (2, Position(6, 0))
    await client.xack(broker.keys.events, "audit", ids[5], ids[6])
    assert await broker.trim_log("9-0", 0) == (2, Position(7, 1))
    # The hot window keeps entries newer than its start by Redis's clock (these are from 1970).
    assert await broker.trim_log("10-0", 10**13) == (0, None)
    assert [i.decode() for i, _ in await client.xrange(broker.keys.events)] == ids[7:]


async def test_ensure_log_group_and_ack_log() -> None:
    broker, client = Broker(), get_redis()
    await broker.ensure_log_group("0-0")
    await broker.ensure_log_group("5-0")  # exists: left as it is
    assert await broker.projector_delivered() == "0-0"
    entry_id = await EventLog(broker).append(queued(), check=False)
    lease = broker.log_lease("p:1", 10)
    assert await lease.acquire()
    assert await lease.read(broker.keys.events, PROJECTOR_GROUP, ">", 10)
    assert (await client.xpending(broker.keys.events, PROJECTOR_GROUP))["pending"] == 1
    await broker.ack_log([entry_id])
    assert (await client.xpending(broker.keys.events, PROJECTOR_GROUP))["pending"] == 0


async def test_restore_marker_is_set_read_and_cleared() -> None:
    broker = Broker()
    assert await broker.restore_due() is None
    await broker.mark_restore_due("5-0")
    assert await broker.restore_due() == "5-0"
    await broker.restored()
    assert await broker.restore_due() is None


async def test_known_and_result_read_an_agent_s_keys() -> None:
    broker, client = Broker(), get_redis()
    event = queued()
    assert not await broker.known(event.agent_id)
    assert await broker.result(event.agent_id) is None
    await broker.enqueue(event)
    assert await broker.known(event.agent_id)
    stored = uuid.uuid4()
    await client.set(broker.keys.result(stored), b"outcome")
    assert await broker.known(stored)
    assert await broker.result(stored) == b"outcome"


async def test_held_and_running_for_cancel_pending() -> None:
    broker, client = Broker(), get_redis()
    waiting, parked, running = queued(), queued(), queued()
    await broker.enqueue(waiting)
    await broker.enqueue(parked, due=datetime.now(UTC) + timedelta(hours=1))
    await client.xadd(broker.keys.queue("q", Priority.HIGH), {b"event": b"not json"})
    assert broker.held_by_queues(["q", "empty"]) == {waiting.agent_id, parked.agent_id}
    await client.set(broker.keys.held(running.agent_id), "w:0")
    other = uuid.uuid4()
    assert broker.running_unqueued([running.agent_id, other]) == {running.agent_id}
    canceled = events.TaskCanceled(agent_id=other, task_name="t", message="m")
    EventLog(broker).append_sync(canceled, check=False)  # as cancel_pending records it
    found = await client.xrange(broker.keys.events)
    assert events.decode_entry(found[-1][1]) == canceled
    assert len(found) == 3


async def test_dead_letters_list_find_trim_and_remove() -> None:
    broker, client = Broker(), get_redis()
    assert await broker.dead_letters(10) == []
    await client.xadd(broker.keys.dead_letters, {b"reason": b"old"}, id="1-0")
    consumer, entry, event = await held(broker)
    assert await consumer.dead_letter(entry, "bad", None, None)
    await broker.dead_letter_log_entries([("1-1", {b"other": b"x"}, "not an event")])
    old, task, other = await broker.dead_letters(10)
    assert (old.id, old.reason, old.event, old.raw) == ("1-0", "old", None, b"")
    assert (task.stream, task.entry_id, task.reason) == (entry[0], entry[1].decode(), "bad")
    assert task.event == event
    assert (other.stream, other.entry_id) == (broker.keys.events, "1-1")
    assert (other.reason, other.event) == ("not an event", None)
    assert [d.id for d in await broker.dead_letters(1)] == ["1-0"]
    assert await broker.dead_letter_at(other.id) == other
    assert await broker.dead_letter_at("2-0") is None
    await broker.remove_dead_letter(other.id)
    assert await broker.trim_dead_letters(3_600_000) == 1  # the old one
    assert [d.id for d in await broker.dead_letters(10)] == [task.id]
    assert await broker.trim_dead_letters(0) == 1
    assert await client.xlen(broker.keys.dead_letters) == 0


async def test_refusals_are_agentexec_errors_and_outages_pass() -> None:
    broker, client = Broker(), get_redis()
    consumer = broker.consumer("q", "w:0")  # no groups yet
    with pytest.raises(GroupMissingError, match="read"):
        await consumer.read(10)
    with pytest.raises(GroupMissingError, match="claim_expired"):
        await consumer.claim_expired(broker.keys.queue("q", Priority.LOW), 0)
    await consumer.ensure_groups()
    assert await consumer.read(10) == []
    await client.set(broker.keys.delayed("q"), "not a sorted set")
    with pytest.raises(BrokerError, match="promote") as refused:
        await broker.promote("q", 0)
    assert not isinstance(refused.value, GroupMissingError)
    # Scripts run blocking, too; and the projector's fenced read of a log without its group.
    await client.set(broker.keys.tracker_counted("r", "b"), "not a set")
    aid = uuid.uuid4()
    event = events.TrackerIncremented(agent_id=aid, task_name="r", tracker="r", batch_id="b")
    done = events.TrackerCompleted(agent_id=aid, task_name="r", tracker="r", batch_id="b")
    with pytest.raises(BrokerError, match="track"):
        broker.track("r", "b", "incr", "k", event, done, (600, 60))
    lease = broker.log_lease("p:1", 10)
    assert await lease.acquire()
    with pytest.raises(GroupMissingError, match="read"):
        await lease.read(broker.keys.events, PROJECTOR_GROUP, ">", 10)


def test_track_refuses_to_write_undeclared_fan_in_keys(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = Broker().keys
    state = keys.tracker("r", "undeclared")
    client.hset(state, mapping={"fan_in_stream": "s", "fan_in_marker": "m", "fan_in_id": "f"})
    reply: Any = client.eval(
        scripts.TRACK.source,
        3,
        state,
        f"{state}:counted",
        keys.events,
        "decr",
        "",
        "{}",
        "{}",
        60,
        60,
    )
    assert reply == [b"s", b"m"]
    assert client.hget(state, "pending") is None and client.xlen(keys.events) == 0


# Task locks (LOCK, UNLOCK, UNPARK).


def waiting_events(event: TaskQueued, locks: list[Lock]) -> list[events.TaskWaiting]:
    return [
        events.TaskWaiting(
            agent_id=event.agent_id, task_name="t", message=lock.waiting_message, lock=lock.name
        )
        for lock in locks
    ]


async def take(
    consumer: Consumer, entry: Entry, event: TaskQueued, locks: list[Lock], since: int | None = None
) -> bool | None:
    now = int(time.time() * 1000)
    return await consumer.lock(
        entry, event, locks, waiting_events(event, locks), now, 30_000, since
    )


async def test_a_task_blocked_by_its_second_lock_gives_back_the_first_and_wakes_its_waiter() -> (
    None
):
    broker, client = Broker(), get_redis()
    keys = broker.keys
    key, tenant = Lock("key:k", 1), Lock("tenant:t", 1)
    holder_consumer, holder_entry, holder = await held(broker)
    assert await take(holder_consumer, holder_entry, holder, [key]) is True
    # Y and then Z wait for the key.
    consumer, y_entry, y = await held(broker)
    assert await take(consumer, y_entry, y, [key, tenant]) is False
    _, z_entry, z = await held(broker)
    assert await take(consumer, z_entry, z, [key]) is False
    assert await client.llen(keys.lock_waiting("q", key.name)) == 2
    # Another task takes the tenant's only slot.
    _, b_entry, b = await held(broker)
    assert await take(consumer, b_entry, b, [tenant]) is True
    # The key's holder ends: Y gets the key and is queued again, on the high stream.
    now = int(time.time() * 1000)
    assert await holder_consumer.unlock(holder.agent_id, [key], now) == 1
    high = keys.queue("q", Priority.HIGH)
    [y_again] = await consumer.read(10)
    assert y_again[0] == high
    assert await client.zscore(keys.lock_holders("q", key.name), str(y.agent_id)) is not None
    # Y finds the tenant full: it parks there and hands the key on to Z.
    assert await take(consumer, y_again, y, [key, tenant]) is False
    assert await client.zscore(keys.lock_holders("q", key.name), str(y.agent_id)) is None
    assert await client.zscore(keys.lock_holders("q", key.name), str(z.agent_id)) is not None
    assert await client.lrange(keys.lock_waiting("q", tenant.name), 0, -1) == [
        f"{y.agent_id} ".encode() + delayed_member(y.priority, bytes(y_again[2][b"event"]))
    ]
    assert await client.hget(keys.lock_waiters("q"), str(y.agent_id)) == b"tenant:t"
    [z_again] = await consumer.read(10)
    assert events.decode_entry(z_again[2]).agent_id == z.agent_id
    # The parks and wakes were recorded: each park is one task.waiting event.
    log = [events.decode_entry(f) for _, f in await client.xrange(keys.events)]
    parks = [(e.agent_id, e.lock) for e in log if isinstance(e, events.TaskWaiting)]
    assert parks == [(y.agent_id, "key:k"), (z.agent_id, "key:k"), (y.agent_id, "tenant:t")]


async def test_lock_run_again_after_a_lost_reply_parks_once() -> None:
    broker, client = Broker(), get_redis()
    key = Lock("key:k", 1)
    consumer, entry, holder = await held(broker)
    assert await take(consumer, entry, holder, [key]) is True
    assert await take(consumer, entry, holder, [key]) is True  # its own hold: taken again
    _, waiter_entry, waiter = await held(broker)
    since = int(time.time() * 1000) - 5000
    # Run again with the same event (as `Endings.persist` does): found, not appended again.
    waits = waiting_events(waiter, [key])
    for _ in range(2):
        now = int(time.time() * 1000)
        assert await consumer.lock(waiter_entry, waiter, [key], waits, now, 30_000, since) is False
    assert await client.llen(broker.keys.lock_waiting("q", key.name)) == 1
    log = [events.decode_entry(f) for _, f in await client.xrange(broker.keys.events)]
    assert len([e for e in log if isinstance(e, events.TaskWaiting)]) == 1
    # A canceled task takes nothing and does not park: START ends it.
    _, canceled_entry, canceled = await held(broker)
    await client.set(broker.keys.cancel_marker(canceled.agent_id), "1")
    assert await take(consumer, canceled_entry, canceled, [key]) is True
    holders = await client.zrange(broker.keys.lock_holders("q", key.name), 0, -1)
    assert holders == [str(holder.agent_id).encode()]


async def test_unpark_queues_a_waiting_task_again_once_and_sweeps_clear_lapsed_holds() -> None:
    broker, client = Broker(), get_redis()
    keys = broker.keys
    key = Lock("key:k", 1)
    consumer, entry, holder = await held(broker)
    now = int(time.time() * 1000)
    # A hold that lapses at once: its holder is gone.
    assert await consumer.lock(entry, holder, [key], waiting_events(holder, [key]), now, 1, None)
    _, w1_entry, w1 = await held(broker)
    _, w2_entry, w2 = await held(broker)
    await asyncio.sleep(0.01)
    later = int(time.time() * 1000)
    for e, ev in ((w1_entry, w1), (w2_entry, w2)):
        # Taken with a long lease by nobody: park both behind a live hold.
        await client.zadd(keys.lock_holders("q", key.name), {"ghost": later + 60_000})
        assert (
            await consumer.lock(e, ev, [key], waiting_events(ev, [key]), later, 30_000, None)
            is False
        )
    assert await broker.unpark("q", w2.agent_id) is True
    assert await broker.unpark("q", w2.agent_id) is False
    [again] = await consumer.read(10)
    assert events.decode_entry(again[2]).agent_id == w2.agent_id
    # Once the ghost's hold has lapsed, the sweep finds the lock due, and an unlock of
    # nobody wakes w1.
    lapsed = later + 60_001
    assert await broker.locks_due("q", lapsed - 2) == []
    assert await broker.locks_due("q", lapsed) == ["key:k"]
    assert await broker.unlock("q", None, [key], lapsed) == 1
    assert await broker.locks_due("q", lapsed) == []
    assert not await client.exists(keys.lock_waiting("q", key.name))
    assert not await client.hlen(keys.lock_waiters("q"))


# The scripts' headers, checked statically.

_LUA = resources.files("agentexec").joinpath("lua")
_SCRIPTS = sorted(p.name[:-4] for p in _LUA.iterdir() if p.name.endswith(".lua"))
_LIBS = sorted(p.name[:-4] for p in _LUA.joinpath("lib").iterdir() if p.name.endswith(".lua"))
_DOC = re.compile(r"^-- (KEYS|ARGV)\[(\d+)(\.\.)?", re.MULTILINE)
_USE = re.compile(r"\b(KEYS|ARGV)\[([^\]]+)\]")


def _header(text: str) -> str:
    lines = text.splitlines()
    end = next(i for i, line in enumerate(lines) if not line.startswith("--"))
    return "\n".join(lines[:end])


def test_every_loaded_script_is_a_file() -> None:
    loaded = {v.name for v in vars(scripts).values() if isinstance(v, scripts.Script)}
    assert loaded == set(_SCRIPTS)


@pytest.mark.parametrize("name", _SCRIPTS)
def test_header_documents_every_key_and_argument_used(name: str) -> None:
    text = scripts.source(name)
    header, body = _header(text), text[len(_header(text)) :]
    assert "Returns" in header, f"{name}.lua: say what it returns"
    documented: dict[str, set[int]] = {"KEYS": set(), "ARGV": set()}
    open_from: dict[str, int] = {}
    for kind, n, more in _DOC.findall(header):
        documented[kind].add(int(n))
        if more:
            open_from[kind] = min(open_from.get(kind, 1 << 30), int(n))
    used = _USE.findall(body) + [
        (kind, index)
        for lib in re.findall(r"^--@include (\w+)$", text, re.MULTILINE)
        for kind, index in _USE.findall(scripts.source(f"lib/{lib}"))
    ]
    for kind, index in used:
        if index.isdigit():
            n = int(index)
            assert n in documented[kind] or n >= open_from.get(kind, 1 << 30), (
                f"{name}.lua uses {kind}[{n}] without documenting it"
            )
        else:
            assert kind in open_from, f"{name}.lua indexes {kind}[{index}]: document a range"
    if "unpack(ARGV" in body or "#ARGV" in body:
        assert "ARGV" in open_from, f"{name}.lua reads a variable ARGV: document the range"


# The key argument of each command (1-based after the command name): every other argument of
# these commands is a value.
_KEY_AT = {"XGROUP": 2, "XINFO": 2}
_NO_KEY = {"PUBLISH"}
_CALL = re.compile(r"redis\.p?call\('(\w+)',")


def _key_names(text: str) -> set[str]:
    """Local names bound to a key: from KEYS, loop variables over KEYS, and parameters of the
    shared functions that their header lists as key parameters."""
    names = set(re.findall(r"local (\w+) = KEYS\[", text))
    names |= set(re.findall(r"for _, (\w+) in ipairs\(KEYS\)", text))
    for params in re.findall(r"^-- Key parameters: ([\w, ]+)\.$", text, re.MULTILINE):
        names |= {p.strip() for p in params.split(",")}
    return names


def _split(args: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in args:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth < 0:
                break
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return parts


@pytest.mark.parametrize("name", _SCRIPTS + [f"lib/{lib}" for lib in _LIBS])
def test_every_key_a_command_names_comes_from_keys(name: str) -> None:
    text = scripts.source(name)
    keys = _key_names(text)
    for match in _CALL.finditer(text):
        command = match.group(1)
        if command.upper() in _NO_KEY:
            continue
        args = _split(text[match.end() :].replace("\n", " "))
        if command.upper() == "XREADGROUP":
            named = [args[args.index("'STREAMS'") + 1]]
        elif command.upper() in {"EXISTS", "MGET", "DEL"}:
            named = args
        else:
            named = [args[_KEY_AT.get(command.upper(), 1) - 1]]
        for key in named:
            assert key.startswith(("KEYS[", "unpack(KEYS")) or key in keys, (
                f"{name}.lua: {command} names key {key!r}, not taken from KEYS"
            )


@pytest.mark.parametrize("lib", _LIBS)
def test_shared_functions_are_called_with_keys_for_key_parameters(lib: str) -> None:
    declared = re.search(r"^-- Key parameters: ([\w, ]+)\.$", scripts.source(f"lib/{lib}"), re.M)
    if declared is None:
        return
    text = scripts.source(f"lib/{lib}")
    key_params = {p.strip() for p in declared.group(1).split(",")}
    for function, params in re.findall(r"local function (\w+)\(([^)]*)\)", text):
        positions = [i for i, p in enumerate(params.split(",")) if p.strip() in key_params]
        for script in _SCRIPTS:
            source = scripts.source(script)
            keys = _key_names(source)
            for call in re.findall(rf"\b{function}\(([^\n]*)", source):
                args = _split(call)
                for i in positions:
                    assert args[i].startswith("KEYS[") or args[i] in keys, (
                        f"{script}.lua passes {args[i]!r} to {function}'s key parameter"
                    )


def test_scripts_ship_in_the_package() -> None:
    assert ax.__name__ == "agentexec"
    assert all(_LUA.joinpath(f"{name}.lua").is_file() for name in _SCRIPTS)
    # lift_log and trim_log (projector/), checkpoint_held (agent runs), session_change and
    # session_restore (conversation sessions), lock, unlock and unpark (task locks).
    assert len(_SCRIPTS) == 29
