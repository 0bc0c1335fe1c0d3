"""`Consumer`: the `Broker`'s verbs for one worker reading one queue through the consumer group.

A worker reads entries (`read`, `wait`, `own_pending`, `claim_expired`), records a task's start
(`start`, a typed `Start`), ends its entry (`finish`, `retry`, `defer`, `dead_letter`), keeps
its leases (`renew`) and hands back what it still holds when it stops (`release`). The ending
verbs are rejected once another worker took the entry over; those that append an event take
`since`, the time of their first try, when run again after a lost reply, so that they do not
append twice.

With several partitions (see `agentexec.partitions`) a worker reads its queue's streams of
every partition, and each verb uses the keys of its entry's partition (the stream it came
from, which is its task's). On one server a blocking read waits on all of them in one
XREADGROUP; on a Redis Cluster, where one command reads one slot, one blocking read per
partition waits concurrently (see `wait`).
"""

from __future__ import annotations

import asyncio
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

from . import cluster, events, tenants
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
from .streams import AGENT_TTL, WORKERS_GROUP, Keys, delayed_member, ensure_group, refusal
from .tasks import TaskLease
from .transitions import Append, IfCanceled, Queue, Store, Write

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["Claim", "Consumer", "Entry", "EntryKey", "Start", "entry_key"]

Entry = tuple[str, bytes, dict[Any, Any]]
"""A queue entry a worker holds: (stream, entry id, fields)."""
EntryKey = tuple[str, bytes]
"""(stream, entry id): what names an entry, as an id is unique within its stream only (two
partitions' streams give the same id to entries added in the same millisecond)."""


def entry_key(entry: Entry) -> EntryKey:
    return entry[0], entry[1]


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
    deliveries: dict[EntryKey, int] = field(default_factory=dict)


class Consumer:
    def __init__(self, broker: Broker, queue_name: str, name: str) -> None:
        self._broker = broker
        self.partitions = broker.partitions
        self.settings = broker.settings
        self.queue_name = queue_name
        self.name = name
        self._partition: dict[str, int] = {}
        self._rank: dict[str, int] = {}
        for partition in self.partitions:
            for rank, stream in enumerate(self.partitions.keys(partition).queues(queue_name)):
                self._partition[stream] = partition
                self._rank[stream] = rank
        self.streams = list(self._partition)
        """The queue's streams of every partition, each partition's highest priority first."""
        self._by_slot = len(self.partitions) > 1 and cluster.is_cluster_url(self.settings.redis_url)
        """One read per partition: a Redis Cluster reads one slot per command."""
        self._turn = 0
        """The partition a non-blocking read looks at first, in turn, so that a busy one does
        not starve the others."""
        self._reads: dict[int, asyncio.Task[list[Entry]]] = {}
        """Blocking reads of partitions under way (on a cluster, see `wait`)."""
        self._delivered: list[Entry] = []
        self._failed: BaseException | None = None

    def keys(self, stream: str) -> Keys:
        """The keys of the partition `stream` (one of this queue's) belongs to."""
        return self.partitions.keys(self._partition[stream])

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

    def _rotation(self) -> list[int]:
        first = self._turn
        self._turn = (first + 1) % len(self.partitions)
        count = len(self.partitions)
        return [(first + i) % count for i in range(count)]

    @translated
    async def read(self, count: int) -> list[Entry]:
        """Up to `count` new entries of the highest priority stream that has any, without
        blocking: in one round trip on one server, one per partition on a cluster (each
        partition's high priority first there). Entries a blocking read delivered meanwhile
        (see `wait`) come first."""
        if self._delivered:
            delivered, self._delivered = self._delivered, []
            return self._by_priority(delivered)
        order = self._rotation()
        if self._by_slot:
            for partition in order:
                streams = self.partitions.keys(partition).queues(self.queue_name)
                reply = await self._broker._run(READ, streams, [WORKERS_GROUP, self.name, count])
                entries = _entries(reply)
                if entries:
                    return entries
            return []
        queues = [self.partitions.keys(p).queues(self.queue_name) for p in order]
        streams = [stream for priority in zip(*queues, strict=True) for stream in priority]
        reply = await self._broker._run(READ, streams, [WORKERS_GROUP, self.name, count])
        return _entries(reply)

    @translated
    async def wait(self, count: int, block_ms: int) -> list[Entry]:
        """Up to `count` new entries of any priority and partition, blocking up to `block_ms`
        until one arrives; higher priorities first.

        On a Redis Cluster with several partitions, one blocking read per partition waits
        concurrently, and this returns what those that ended have read; the others go on
        waiting (what they read comes with a later call: `delivered` until then), so that no
        entry is delivered to a read abandoned mid-way. `stop_reads` ends them."""
        if not self._by_slot:
            reply = await self._broker.client.xreadgroup(
                WORKERS_GROUP,
                self.name,
                dict.fromkeys(self.streams, ">"),
                count=count,
                block=block_ms,
            )
            return self._by_priority(_entries(reply))
        for partition in self.partitions:
            if partition not in self._reads:
                read = asyncio.ensure_future(self._wait_partition(partition, count, block_ms))
                read.add_done_callback(functools.partial(self._read_ended, partition))
                self._reads[partition] = read
        if not self._delivered and self._failed is None:
            await asyncio.wait(list(self._reads.values()), return_when=asyncio.FIRST_COMPLETED)
        entries, self._delivered = self._delivered, []
        failed, self._failed = self._failed, None
        if failed is not None and not entries:
            raise failed
        return self._by_priority(entries)

    def _read_ended(self, partition: int, read: asyncio.Task[list[Entry]]) -> None:
        if self._reads.get(partition) is read:
            del self._reads[partition]
        if read.cancelled():
            return
        failed = read.exception()
        if failed is not None:
            self._failed = self._failed or failed
        else:
            self._delivered += read.result()

    @property
    def delivered(self) -> list[Entry]:
        """Entries a blocking read delivered that `wait` has not returned yet (see `wait`):
        this worker holds them, and renews their leases."""
        return list(self._delivered)

    async def _wait_partition(self, partition: int, count: int, block_ms: int) -> list[Entry]:
        streams = self.partitions.keys(partition).queues(self.queue_name)
        reply = await self._broker.client.xreadgroup(
            WORKERS_GROUP, self.name, dict.fromkeys(streams, ">"), count=count, block=block_ms
        )
        return _entries(reply)

    async def stop_reads(self) -> None:
        """End the blocking reads still under way (see `wait`): what they delivered meanwhile
        stays pending to this consumer, for `release` to hand back."""
        reads, self._reads = list(self._reads.values()), {}
        for read in reads:
            read.cancel()
        await asyncio.gather(*reads, return_exceptions=True)

    def _by_priority(self, entries: list[Entry]) -> list[Entry]:
        """`entries` with higher priorities first (each partition's streams are in priority
        order)."""
        entries.sort(key=lambda e: self._rank[e[0]])
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

    async def _deliveries(self, stream: str, ids: list[bytes]) -> dict[EntryKey, int]:
        if not ids:
            return {}
        pending = await self._broker.client.xpending_range(
            stream, WORKERS_GROUP, min(ids), max(ids), len(ids) + 100, consumername=self.name
        )
        wanted = set(ids)
        return {
            (stream, item["message_id"]): int(item["times_delivered"])
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
        part = self.keys(entry[0])
        keys = [part.events, entry[0], part.result(aid), part.held(aid), part.cancel_marker(aid)]
        if parent_id is not None:
            if not await self._parent_marker(entry[0], parent_id, keys):
                return Start.CANCELED
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
        part = self.keys(stream)
        keys: list[Any] = [
            stream,
            part.events,
            part.lock_index(queue),
            part.lock_waiters(queue),
            part.queue(queue, Priority.HIGH),
        ]
        for lock in locks:
            keys += [part.lock_holders(queue, lock.name), part.lock_waiting(queue, lock.name)]
        keys.append(part.cancel_marker(queued.agent_id))
        if queued.parent_id is not None:
            if not await self._parent_marker(stream, queued.parent_id, keys):
                return True  # canceled: START ends it
        member = delayed_member(queued.priority, bytes(fields[events.EVENT_FIELD]))
        args: list[Any] = [WORKERS_GROUP, entry_id, self.name, str(queued.agent_id), now_ms]
        args += [lease_ms, member, len(locks), "" if since is None else since]
        for lock, event in zip(locks, waiting, strict=True):
            args += [lock.name, lock.capacity, events.encode(event)]
        reply = await self._broker._run(LOCK, keys, args)
        return None if reply is None else bool(reply)

    async def _parent_marker(self, stream: str, parent_id: UUID, keys: list[Any]) -> bool:
        """Add the cancel marker of the parent of a task of `stream` to a script's `keys`
        when it is in the task's partition; else look at it now, as a script touches one
        partition's keys (a cancel of the parent after this look reaches the running task as
        a notice, see `workers.cancellation`). False when the parent was canceled."""
        partition = self.partitions.of(parent_id)
        if partition == self._partition[stream]:
            keys.append(self.partitions.keys(partition).cancel_marker(parent_id))
            return True
        return not await self._broker.canceled([parent_id])

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
            [stream, self.keys(stream).delayed(self.queue_name)],
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
        part = self.keys(stream)
        keys = [stream, part.delayed(self.queue_name), part.events]
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
        part = self.keys(stream)
        keys: list[Any] = [part.events, part.result(aid), stream]
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
        part = self.keys(stream)
        known: list[Any] = ["0", "", "", 0, ""]
        result_key = part.result("unknown")
        if failed is not None and outcome is not None:
            known = ["1", events.encode(failed), *self._outcome(failed.agent_id, outcome)]
            result_key = part.result(failed.agent_id)
        keys = [stream, part.dead_letters, part.events, result_key]
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
        part = self.keys(stream)
        keys = [stream, *(part.result(a) for _, a in held)]
        keys += [part.held(a) for _, a in held]
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
            self._broker.keys.result_channel(agent_id),  # shared by every partition
        ]

    def _transition(self, writes: Sequence[Write], keys: list[Any]) -> list[Any]:
        """ARGV of `writes` for lua/lib/apply.lua, adding the keys they touch to `keys` (each
        op names its key by 1-based index into KEYS). Each write uses the keys of the
        partition of the task it is about: a script runs with the keys of one partition, so
        they must all be the ending task's (a pipeline's steps and its run are)."""
        of = self.partitions.keys_of

        def key(name: str) -> int:
            if name not in keys:
                keys.append(name)
            return keys.index(name) + 1

        def encode(writes: Iterable[Write]) -> list[Any]:
            args: list[Any] = []
            for write in writes:
                if isinstance(write, Append):
                    appended = write.event
                    args += ["x", key(of(appended.agent_id).events), events.encode(appended)]
                elif isinstance(write, Queue):
                    queued = write.event
                    if queued.queue is None:
                        raise ValueError(
                            f"cannot queue {queued.task_name!r}: its event has no queue"
                        )
                    data = events.encode(queued)
                    part = of(queued.agent_id)
                    args += ["x", key(part.events), data]
                    args += ["x", key(part.queue(queued.queue, queued.priority)), data]
                    # The marker holds the task name and tenant (see lua/lib/names.lua).
                    name = msgspec.json.encode(queued.task_name)
                    tenant = tenants.tenant_of(queued.metadata)
                    if tenant is not None:
                        name += b',"tenant":' + msgspec.json.encode(tenant)
                    args += ["s", key(part.agent(queued.agent_id)), name, AGENT_TTL]
                elif isinstance(write, Store):
                    data = encode_outcome(write.outcome)
                    args += [
                        "s",
                        key(of(write.agent_id).result(write.agent_id)),
                        data,
                        self.settings.result_ttl,
                    ]
                    args += ["p", self._broker.keys.result_channel(write.agent_id), data]
                else:
                    assert isinstance(write, IfCanceled)
                    marker = key(of(write.agent_id).cancel_marker(write.agent_id))
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
