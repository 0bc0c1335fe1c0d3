"""The Broker's contract: each verb's documented effects in Redis and its typed result, one
script at a time, against a real redis-server; and the scripts' headers, checked statically."""

from __future__ import annotations

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
from agentexec.broker import Broker
from agentexec.connection import get_redis
from agentexec.consumer import Claim, Consumer, Entry, Start
from agentexec.events import Priority, TaskQueued
from agentexec.results import Outcome
from agentexec.streams import WORKERS_GROUP, delayed_member
from agentexec.tasks import TaskLease
from agentexec.transitions import Append, IfCanceled, Queue, Store

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
    assert claim.deliveries == {entry[1]: 2}
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
    assert len(_SCRIPTS) == 23  # with session_change and session_restore
