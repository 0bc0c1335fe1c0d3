"""`Consumer`: the `Broker`'s verbs for one worker reading one queue through the consumer group.

A worker reads entries (`read`, `wait`, `own_pending`, `claim_expired`), records a task's start
(`start`, a typed `Start`), ends its entry (`finish`, `retry`, `defer`, `dead_letter`), keeps
its leases (`renew`) and hands back what it still holds when it stops (`release`). The ending
verbs are rejected once another worker took the entry over; those that append an event take
`since`, the time of their first try, when run again after a lost reply, so that they do not
append twice.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar
from uuid import UUID

import msgspec
import redis

from . import events, tenants
from .connection import REDIS_ERRORS
from .events import (
    Priority,
    TaskCanceled,
    TaskCompleted,
    TaskFailed,
    TaskQueued,
    TaskRetried,
    TaskStarted,
    TaskWaiting,
)
from .locks import Lock
from .results import Outcome, encode_outcome
from .scripts import (
    DEAD_LETTER,
    DEFER,
    FINISH,
    LOCK,
    READ,
    RENEW,
    RETRY,
    START,
    TRANSITION,
)
from .streams import AGENT_TTL, WORKERS_GROUP, delayed_member, ensure_group, refusal
from .tasks import TaskLease
from .transitions import Append, IfCanceled, Queue, Store, Write

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["Claim", "Consumer", "Entry", "Start"]

Entry = tuple[str, bytes, dict[Any, Any]]
"""A queue entry a worker holds: (stream, entry id, fields)."""


class Start(StrEnum):
    """What `Consumer.start` did."""

    STARTED = "started"
    TAKEN_OVER = "taken_over"
    """Another worker holds the entry: only one of them may run it."""
    ENDED = "ended"
    """The task had already ended (a copy queued again after Redis lost its data): dropped."""
    RUNNING_ELSEWHERE = "running_elsewhere"
    """Another worker still runs the task, on an entry Redis lost: defer this copy."""
    CANCELED = "canceled"
    """The task, or its parent, was canceled before it started."""


P = ParamSpec("P")
R = TypeVar("R")


@contextlib.contextmanager
def refusals(what: str) -> Iterator[None]:
    """Raise Redis's refusals of `what` as `GroupMissingError` or `BrokerError`; outages
    (`REDIS_ERRORS`) pass as they are, for supervised loops to wait out."""
    try:
        yield
    except redis.ResponseError as e:
        if isinstance(e, REDIS_ERRORS):
            raise
        raise refusal(e, what) from e


def translated(verb: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """`verb`, with Redis's refusals raised as agentexec errors (see `refusals`)."""

    @functools.wraps(verb)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with refusals(verb.__name__):
            return await verb(*args, **kwargs)

    return run


_START_REFUSALS = {0: Start.TAKEN_OVER, -1: Start.ENDED, -2: Start.RUNNING_ELSEWHERE}


@dataclass(frozen=True)
class Claim:
    """Entries a worker took (back), with the delivery count of each."""

    entries: list[Entry] = field(default_factory=list)
    deliveries: dict[bytes, int] = field(default_factory=dict)


class Consumer:
    def __init__(self, broker: Broker, queue_name: str, name: str) -> None:
        self._broker = broker
        self.keys = broker.keys
        self.settings = broker.settings
        self.queue_name = queue_name
        self.name = name
        self.streams = self.keys.queues(queue_name)
        """The queue's streams, highest priority first."""

    async def ensure_groups(self) -> None:
        """Create the consumer group on each of the queue's streams unless it exists."""
        for stream in self.streams:
            await ensure_group(self._broker.client, stream, WORKERS_GROUP)

    @translated
    async def own_pending(self) -> Claim:
        """The entries a previous process with this consumer name held when it died."""
        client: Any = self._broker.client
        claim = Claim()
        for stream in self.streams:
            cursor = "0"
            while True:
                reply = await client.xreadgroup(
                    WORKERS_GROUP, self.name, {stream: cursor}, count=100
                )
                items = reply[0][1] if reply else []
                if not items:
                    break
                cursor = items[-1][0]
                claim.entries.extend((stream, i, f) for i, f in items if f)
                claim.deliveries.update(await self._deliveries(stream, [i for i, _ in items]))
        return claim

    @translated
    async def read(self, count: int) -> list[Entry]:
        """Up to `count` new entries of the highest priority stream that has any, without
        blocking, in one round trip."""
        reply = await self._broker._run(READ, self.streams, [WORKERS_GROUP, self.name, count])
        return _entries(reply)

    @translated
    async def wait(self, count: int, block_ms: int) -> list[Entry]:
        """Up to `count` new entries of any priority, blocking up to `block_ms` until one
        arrives; higher priorities first."""
        reply = await self._broker.client.xreadgroup(
            WORKERS_GROUP, self.name, dict.fromkeys(self.streams, ">"), count=count, block=block_ms
        )
        entries = _entries(reply)
        entries.sort(key=lambda e: self.streams.index(e[0]))
        return entries

    @translated
    async def claim_expired(self, stream: str, lease_ms: int, count: int = 10) -> Claim:
        """Take over up to `count` entries of `stream` whose lease expired."""
        client = self._broker.client
        _, claimed, _ = await client.xautoclaim(
            stream, WORKERS_GROUP, self.name, lease_ms, count=count
        )
        return Claim(
            [(stream, i, f) for i, f in claimed if f],
            await self._deliveries(stream, [i for i, _ in claimed]),
        )

    async def _deliveries(self, stream: str, ids: list[bytes]) -> dict[bytes, int]:
        if not ids:
            return {}
        pending = await self._broker.client.xpending_range(
            stream, WORKERS_GROUP, min(ids), max(ids), len(ids) + 100, consumername=self.name
        )
        wanted = set(ids)
        return {
            item["message_id"]: int(item["times_delivered"])
            for item in pending
            if item["message_id"] in wanted
        }

    def lease(self, entry: Entry) -> TaskLease:
        """The lease of the task of `entry`, which fences its handler's appends."""
        return TaskLease(entry[0], entry[1], WORKERS_GROUP, self.name)

    async def start(
        self,
        entry: Entry,
        started: TaskStarted,
        parent_id: UUID | None,
        since: int | None = None,
    ) -> Start:
        """Append `started` unless the task must not start here (see `Start`)."""
        aid = started.agent_id
        keys = [
            self.keys.events,
            entry[0],
            self.keys.result(aid),
            self.keys.held(aid),
            self.keys.cancel_marker(aid),
        ]
        if parent_id is not None:
            keys.append(self.keys.cancel_marker(parent_id))
        args: list[Any] = [events.encode(started), WORKERS_GROUP, entry[1], self.name]
        reply = await self._broker._run(START, keys, _since(args, since))
        if reply is None:
            return Start.CANCELED
        if isinstance(reply, int):
            return _START_REFUSALS[reply]
        return Start.STARTED

    async def lock(
        self,
        entry: Entry,
        queued: TaskQueued,
        locks: Sequence[Lock],
        waiting: Sequence[TaskWaiting],
        now_ms: int,
        lease_ms: int,
        since: int | None = None,
    ) -> bool | None:
        """Take `locks` for the task of `entry` (`queued`), or park the entry in the waiting
        list of the first full one with its `waiting` event (one per lock, in order). True:
        the task holds them all (or was canceled: START ends it); False: parked; None:
        another worker holds the entry."""
        stream, entry_id, fields = entry
        queue = self.queue_name
        keys: list[Any] = [
            stream,
            self.keys.events,
            self.keys.lock_index(queue),
            self.keys.lock_waiters(queue),
            self.keys.queue(queue, Priority.HIGH),
        ]
        for lock in locks:
            keys += [
                self.keys.lock_holders(queue, lock.name),
                self.keys.lock_waiting(queue, lock.name),
            ]
        keys.append(self.keys.cancel_marker(queued.agent_id))
        if queued.parent_id is not None:
            keys.append(self.keys.cancel_marker(queued.parent_id))
        member = delayed_member(queued.priority, bytes(fields[events.EVENT_FIELD]))
        args: list[Any] = [WORKERS_GROUP, entry_id, self.name, str(queued.agent_id), now_ms]
        args += [lease_ms, member, len(locks), "" if since is None else since]
        for lock, event in zip(locks, waiting, strict=True):
            args += [lock.name, lock.capacity, events.encode(event)]
        reply = await self._broker._run(LOCK, keys, args)
        return None if reply is None else bool(reply)

    async def unlock(self, agent_id: UUID | None, locks: Sequence[Lock], now_ms: int) -> int:
        """Release the holds of `agent_id` on `locks` (None: only wake the waiters of holds
        that expired) and wake their next waiters; returns how many woke."""
        return await self._broker.unlock(self.queue_name, agent_id, locks, now_ms)

    async def renew_holds(self, holds: Sequence[tuple[UUID, Sequence[Lock]]]) -> set[UUID]:
        """Extend the holds of this worker's running tasks, (agent id, locks) each, by a
        lease; returns the agent ids that lost one (see `Broker.renew_holds`)."""
        return await self._broker.renew_holds(self.queue_name, holds, int(time.time() * 1000))

    async def defer(self, entry: Entry, priority: Priority, due_ms: int) -> bool:
        """Park `entry` unchanged in the queue's delayed set until `due_ms`, without an event;
        False when another worker holds it."""
        stream, entry_id, fields = entry
        member = delayed_member(priority, bytes(fields[events.EVENT_FIELD]))
        reply = await self._broker._run(
            DEFER,
            [stream, self.keys.delayed(self.queue_name)],
            [WORKERS_GROUP, entry_id, self.name, member, due_ms],
        )
        return reply is not None

    async def retry(
        self,
        entry: Entry,
        again: TaskQueued,
        retried: TaskRetried,
        due_ms: int,
        since: int | None = None,
    ) -> bool:
        """Append `retried` and park the next attempt `again` in the delayed set until `due_ms`;
        False when another worker holds the entry."""
        stream, entry_id, _ = entry
        member = delayed_member(again.priority, events.encode(again))
        keys = [stream, self.keys.delayed(self.queue_name), self.keys.events]
        args: list[Any] = [
            WORKERS_GROUP,
            entry_id,
            self.name,
            member,
            due_ms,
            events.encode(retried),
        ]
        return await self._broker._run(RETRY, keys, _since(args, since)) is not None

    async def finish(
        self,
        entry: Entry,
        event: TaskCompleted | TaskFailed | TaskCanceled,
        outcome: Outcome,
        writes: Sequence[Write] = (),
    ) -> bool:
        """Append the terminal `event`, store and publish `outcome`, ack the entry and apply
        `writes`, atomically; False (nothing done) when another worker holds the entry or the
        task already ended."""
        stream, entry_id, _ = entry
        aid = event.agent_id
        keys: list[Any] = [self.keys.events, self.keys.result(aid), stream]
        args = [events.encode(event), *self._outcome(aid, outcome)]
        args += [WORKERS_GROUP, entry_id, self.name, *self._transition(writes, keys)]
        return await self._broker._run(FINISH, keys, args) is not None

    async def dead_letter(
        self, entry: Entry, reason: str, failed: TaskFailed | None, outcome: Outcome | None
    ) -> bool:
        """Move `entry` to the dead-letter stream with `reason`; with `failed` and `outcome`
        (its task is known) the task ends with them. False when another worker holds the
        entry or the task had ended."""
        stream, entry_id, fields = entry
        letter: list[Any] = []
        for name, value in {
            **fields,
            b"stream": stream,
            b"id": entry_id,
            b"reason": reason,
        }.items():
            letter += [name, value]
        known: list[Any] = ["0", "", "", 0, ""]
        result_key = self.keys.result("unknown")
        if failed is not None and outcome is not None:
            known = ["1", events.encode(failed), *self._outcome(failed.agent_id, outcome)]
            result_key = self.keys.result(failed.agent_id)
        keys = [stream, self.keys.dead_letters, self.keys.events, result_key]
        args = [WORKERS_GROUP, entry_id, self.name, *known, *letter]
        return bool(await self._broker._run(DEAD_LETTER, keys, args))

    async def transition(self, writes: Sequence[Write]) -> None:
        """Apply `writes` alone (a dead-lettered task's transition)."""
        keys: list[Any] = []
        args = self._transition(writes, keys)
        await self._broker._run(TRANSITION, keys, args)

    @translated
    async def renew(
        self, stream: str, held: Sequence[tuple[bytes, str]], lease_ms: int
    ) -> set[bytes]:
        """Reset the idle time of the (entry id, agent id) entries of `stream` this worker
        still holds, for `lease_ms`; returns the ids of those it lost."""
        keys = [stream, *(self.keys.result(a) for _, a in held)]
        keys += [self.keys.held(a) for _, a in held]
        args = [WORKERS_GROUP, self.name, lease_ms, *(i for i, _ in held)]
        return set(await self._broker._run(RENEW, keys, args) or ())

    async def uptime(self) -> float:
        """Seconds since the Redis server started, as `INFO` reports them: a difference of
        whole seconds of the wall clock, so up to one second more than has elapsed."""
        info = await self._broker.client.info("server")
        return float(info["uptime_in_seconds"])

    @translated
    async def release(self, stream: str) -> int:
        """Hand back every entry of `stream` this worker holds, at the end of its stream, so
        that another worker runs it at once; returns how many."""
        client = self._broker.client
        pending = await client.xpending_range(
            stream, WORKERS_GROUP, "-", "+", 10_000, consumername=self.name
        )
        for item in pending:
            entry_id = item["message_id"]
            found = await client.xrange(stream, entry_id, entry_id)
            async with client.pipeline(transaction=True) as pipe:
                if found:
                    fields: Any = found[0][1]
                    pipe.xadd(stream, fields)
                pipe.xack(stream, WORKERS_GROUP, entry_id)
                pipe.xdel(stream, entry_id)
                await pipe.execute()
        return len(pending)

    def _outcome(self, agent_id: UUID, outcome: Outcome) -> list[Any]:
        return [
            encode_outcome(outcome),
            self.settings.result_ttl,
            self.keys.result_channel(agent_id),
        ]

    def _transition(self, writes: Sequence[Write], keys: list[Any]) -> list[Any]:
        """ARGV of `writes` for lua/lib/apply.lua, adding the keys they touch to `keys` (each
        op names its key by 1-based index into KEYS)."""

        def key(name: str) -> int:
            if name not in keys:
                keys.append(name)
            return keys.index(name) + 1

        def encode(writes: Iterable[Write]) -> list[Any]:
            args: list[Any] = []
            for write in writes:
                if isinstance(write, Append):
                    args += ["x", key(self.keys.events), events.encode(write.event)]
                elif isinstance(write, Queue):
                    queued = write.event
                    if queued.queue is None:
                        raise ValueError(
                            f"cannot queue {queued.task_name!r}: its event has no queue"
                        )
                    data = events.encode(queued)
                    args += ["x", key(self.keys.events), data]
                    args += ["x", key(self.keys.queue(queued.queue, queued.priority)), data]
                    # The marker holds the task name and tenant (see lua/lib/names.lua).
                    name = msgspec.json.encode(queued.task_name)
                    tenant = tenants.tenant_of(queued.metadata)
                    if tenant is not None:
                        name += b',"tenant":' + msgspec.json.encode(tenant)
                    args += ["s", key(self.keys.agent(queued.agent_id)), name, AGENT_TTL]
                elif isinstance(write, Store):
                    data = encode_outcome(write.outcome)
                    args += [
                        "s",
                        key(self.keys.result(write.agent_id)),
                        data,
                        self.settings.result_ttl,
                    ]
                    args += ["p", self.keys.result_channel(write.agent_id), data]
                else:
                    assert isinstance(write, IfCanceled)
                    marker = key(self.keys.cancel_marker(write.agent_id))
                    then, otherwise = encode(write.then), encode(write.otherwise)
                    args += ["?", marker, len(then), len(otherwise), *then, *otherwise]
            return args

        return encode(writes)


def _since(args: list[Any], since: int | None) -> list[Any]:
    return args if since is None else [*args, since]


def _entries(reply: Any) -> list[Entry]:
    entries: list[Entry] = []
    for stream, items in reply or ():
        name = stream.decode() if isinstance(stream, bytes) else stream
        # Entries deleted while pending come back with no fields: nothing to run. A script's
        # reply (READ) has the fields as a flat list.
        entries.extend(
            (name, entry_id, fields if isinstance(fields, dict) else _pairs(fields))
            for entry_id, fields in items
            if fields
        )
    return entries


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))
