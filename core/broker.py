"""`Broker`: the one home of the Redis client, the key names and the Lua scripts.

Callers speak in verbs (`enqueue`, `cancel`, `promote`, `track`, `append_held`, ...; a worker's
`read`, `start`, `finish`, `retry`, `renew`, ... on `Broker.consumer`, see
`agentexec.consumer`) and get typed results; only these two modules know the scripts' KEYS/ARGV
layouts (documented in the header of each `lua/<name>.lua`) and decode their replies. Verbs go
through the `Batcher`, so that many of them share one round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

import msgspec
import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster

from . import events
from .batcher import Batcher, get_batcher
from .connection import REDIS_ERRORS, Reconnect, check_eviction_policy
from .consumer import Consumer, refusals, translated
from .credentials import redact_url
from .errors import EventDecodeError, RedisOutOfMemoryError, RedisUnavailableError
from .events import Event, Priority, TaskCancelRequested, TaskQueued
from .locks import Lock
from .positions import ORIGIN, Position
from .scripts import (
    APPEND_HELD,
    APPEND_KNOWN,
    CANCEL,
    CHECKPOINT_HELD,
    ENQUEUE,
    ENQUEUE_LATER,
    ENQUEUE_PIPELINE,
    LIFT_LOG,
    PROJECTOR_READ,
    PROJECTOR_RELEASE,
    PROJECTOR_RENEW,
    PROMOTE,
    REMOVE_IDLE_CONSUMERS,
    REQUEUE_HELD,
    SESSION_CHANGE,
    SESSION_RESTORE,
    TRACK,
    TRIM_LOG,
    UNLOCK,
    UNPARK,
    Script,
)
from .streams import (
    AGENT_TTL,
    PROJECTOR_CONSUMER,
    PROJECTOR_GROUP,
    WORKERS_GROUP,
    Keys,
    delayed_member,
    ensure_group,
    is_missing_group,
    tracker_id,
)
from .tasks import TaskLease

if TYPE_CHECKING:
    from .eventlog import Recorded
    from .runtime import Runtime

__all__ = [
    "EMPTY_LOG",
    "Broker",
    "Count",
    "DeadLetter",
    "LogBounds",
    "LogEntries",
    "LogLag",
    "LogLease",
    "LogPage",
    "QueueDepth",
    "Queued",
    "SessionState",
]


@dataclass(frozen=True)
class Queued:
    """An enqueue's event id and agent id: the first enqueue's when it was deduplicated."""

    event_id: str
    agent_id: UUID


@dataclass(frozen=True)
class Count:
    """A tracker's counts after a change."""

    pending: int
    total: int
    counted: bool
    """False when the change's key had been counted before."""
    fan_in_id: UUID | None
    """Agent id of the fan-in, once one is registered."""


@dataclass(frozen=True)
class SessionState:
    """A conversation session's live state, read at one moment."""

    version: int
    """How many events changed the session so far (see `Broker.change_session`)."""
    length: int
    """How many items it holds."""
    last: bytes | None
    """Its latest item's JSON (None when empty)."""


@dataclass(frozen=True)
class QueueDepth:
    """The tasks of one queue (both priorities) at one moment."""

    waiting: int
    """In its streams, not yet read by a worker."""
    pending: int
    """Read by a worker and not ended yet: running, or held by a lease that expires."""
    delayed: int
    """Waiting for a retry's backoff or a later due time."""
    parked: int = 0
    """Parked until a task lock (`lock_key`, the tenant cap) has room: see `agentexec.locks`."""


@dataclass(frozen=True)
class LogLag:
    """How far the read model is behind the event log."""

    entries: int
    """Entries of the log the projector has not committed (delivered ones not acknowledged,
    and those not read yet). Where Redis does not know how many are not read yet, they are
    counted up to 10,000."""
    oldest_ms: int | None
    """The time (ms since the epoch, from its stream id) of the oldest such entry."""


@dataclass(frozen=True)
class LogPage:
    """Log entries read in one call: the events, in log order, and where the read ended."""

    recorded: list[Recorded]
    """The entries that decode; the others (no agentexec event, which the projector
    dead-letters) are skipped."""
    last: Position | None
    """The position of the last entry read, decodable or not; None when none was read."""
    size: int
    """How many entries were read, decodable or not."""

    @classmethod
    def of(cls, entries: Sequence[tuple[Any, Any]]) -> LogPage:
        # Imported here: the event log appends through the Broker.
        from .eventlog import Recorded

        recorded = []
        for entry_id, fields in entries:
            try:
                recorded.append(Recorded.from_entry(entry_id, fields))
            except EventDecodeError:
                continue
        last = Position.parse(entries[-1][0]) if entries else None
        return cls(recorded, last, len(entries))


@dataclass(frozen=True)
class LogBounds:
    """What the Redis log holds, at one moment."""

    deleted: Position
    """The latest entry deleted with XDEL (ORIGIN: none)."""
    removed: bool
    """Whether any entry was ever deleted or trimmed."""
    first: Position | None
    """The first entry held; None when the log is empty."""
    tail: Position
    """The last id Redis generated (ORIGIN for a log never written)."""


EMPTY_LOG = LogBounds(ORIGIN, False, None, ORIGIN)


@dataclass(frozen=True)
class DeadLetter:
    """An entry that could not run (or a log entry that is no event), with the reason."""

    id: str
    """Its id in the dead-letter stream."""
    stream: str
    """The stream the entry came from."""
    entry_id: str
    reason: str
    event: TaskQueued | None
    """The task, when the entry decodes."""
    raw: bytes

    @classmethod
    def of(cls, entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
        raw = fields.get(events.EVENT_FIELD, b"")
        event: TaskQueued | None = None
        try:
            decoded = events.decode(raw)
            event = decoded if isinstance(decoded, TaskQueued) else None
        except EventDecodeError:
            pass
        return cls(
            id=entry_id.decode(),
            stream=fields.get(b"stream", b"").decode(),
            entry_id=fields.get(b"id", b"").decode(),
            reason=fields.get(b"reason", b"").decode(errors="replace"),
            event=event,
            raw=raw,
        )


LogEntries = list[tuple[str, dict[bytes, bytes] | None]]
"""(stream id, fields); fields are None for an entry deleted while pending."""


class LogLease:
    """The lease `key` held as `owner` for `seconds` at a time: a projector's ownership of
    the log (see `agentexec.projector.ownership`), and reads fenced by it."""

    def __init__(self, client: aioredis.Redis, key: str, owner: str, seconds: float) -> None:
        self.client = client
        self.key = key
        self.owner = owner
        self.ms = max(1, int(seconds * 1000))
        self._renew = client.register_script(PROJECTOR_RENEW.source)
        self._release = client.register_script(PROJECTOR_RELEASE.source)
        self._read = client.register_script(PROJECTOR_READ.source)

    @translated
    async def acquire(self) -> bool:
        """Take the lease if it is free (or already ours); True when we hold it."""
        if await self.client.set(self.key, self.owner, nx=True, px=self.ms):
            return True
        return bool(await self.renew())

    @translated
    async def renew(self) -> bool:
        """Extend the lease; False when it is not ours any more."""
        return bool(await self._renew(keys=[self.key], args=[self.owner, self.ms]))

    @translated
    async def release(self) -> None:
        await self._release(keys=[self.key], args=[self.owner])

    @translated
    async def read(self, stream: str, group: str, cursor: str, count: int) -> LogEntries | None:
        """XREADGROUP `cursor` (`">"` new entries, `"0"` pending ones) as
        `PROJECTOR_CONSUMER`, only while we hold the lease; None when we do not."""
        reply: Any = await self._read(
            keys=[self.key, stream], args=[self.owner, group, PROJECTOR_CONSUMER, count, cursor]
        )
        if not reply or reply[0] != 1:
            return None
        entries: LogEntries = []
        if len(reply) < 2 or not reply[1]:
            return entries
        for entry_id, flat in reply[1][0][1]:
            fields = dict(zip(flat[::2], flat[1::2], strict=True)) if flat else None
            entries.append((entry_id.decode(), fields))
        return entries


_outage = Reconnect("enqueue")
_fan_ins: dict[str, list[str]] = {}
"""Queue stream and agent marker of trackers' registered fan-ins, so that TRACK declares them
from the first try (bounded: a forgotten one costs one more round trip)."""
_FAN_INS_KEPT = 1024


class Broker:
    """Verbs over one runtime's keys and client (default the edge's runtime,
    `agentexec.runtime.current()`; `client` overrides the running loop's client of it; blocking
    verbs use the runtime's blocking client)."""

    def __init__(
        self, runtime: Runtime | None = None, client: aioredis.Redis | None = None
    ) -> None:
        if runtime is None:
            from .runtime import current

            runtime = current()
        self.runtime = runtime
        self.settings = runtime.settings
        self.partitions = runtime.partitions
        self.keys: Keys = runtime.keys
        """Partition 0's keys (all of them with one partition)."""
        self._client = client

    def keys_of(self, agent_id: UUID | str) -> Keys:
        """The keys of the partition agent id `agent_id` lives in."""
        return self.partitions.keys_of(agent_id)

    def _part(self, partition: int) -> Keys:
        return self.partitions.keys(partition)

    @property
    def client(self) -> aioredis.Redis:
        return self._client or self.runtime.redis()

    def _batcher(self) -> Batcher:
        return get_batcher(self.client)

    async def _run(self, script: Script, keys: list[Any], args: list[Any]) -> Any:
        with refusals(script.name):
            return await self._batcher().run_script(script, keys, args)

    def _run_sync(self, script: Script, keys: list[Any], args: list[Any]) -> Any:
        client = self.runtime.sync_redis()
        with refusals(script.name):
            try:
                return client.evalsha(script.sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                client.script_load(script.source)
                return client.evalsha(script.sha, len(keys), *keys, *args)

    # Queueing.

    def _enqueue_call(
        self, event: TaskQueued, target: str, dedup: str | None
    ) -> tuple[list[Any], list[Any]]:
        """KEYS and ARGV shared by every enqueue script. The agent marker (which lets activity
        writes tell known agent ids) doubles as the guard that makes a retry safe; a `dedup`
        name guards longer (`AGENTEXEC_IDEMPOTENCY_WINDOW`)."""
        keys = self.keys_of(event.agent_id)
        marker = keys.agent(event.agent_id)
        if dedup is not None:
            key, window = keys.dedup(dedup), self.settings.idempotency_window
        else:
            key, window = marker, AGENT_TTL
        return (
            [keys.events, target, key, marker],
            [events.encode(event), window, str(event.agent_id), AGENT_TTL],
        )

    async def enqueue(
        self,
        event: TaskQueued,
        *,
        due: datetime | None = None,
        dedup: str | None = None,
        what: str | None = None,
        consequence: str = "",
    ) -> Queued:
        """Append `event` to the log and its task to its queue (to the delayed set until
        `due`), at most once per agent id, and per `dedup` name (under `Keys.dedup`) when given.

        With `what`, retries while Redis is unreachable for up to `AGENTEXEC_ENQUEUE_TIMEOUT`
        seconds (safe: deduplicated), then raises `RedisUnavailableError` (or
        `RedisOutOfMemoryError`) naming `what` and its `consequence`."""
        if event.queue is None:
            raise ValueError(f"cannot queue {event.task_name!r}: its event has no queue")
        part = self.keys_of(event.agent_id)
        if due is None:
            keys, args = self._enqueue_call(event, part.queue(event.queue, event.priority), dedup)
            script = ENQUEUE
        else:
            keys, args = self._enqueue_call(event, part.delayed(event.queue), dedup)
            due_ms = int(due.timestamp() * 1000)
            member = delayed_member(event.priority, args[0])
            args += [due_ms, member, part.schedule_channel(event.queue)]
            script = ENQUEUE_LATER
        return _queued(await self._enqueue(script, keys, args, what, consequence))

    async def enqueue_pipeline(
        self, run: TaskQueued, first: TaskQueued, *, dedup: str | None, what: str, consequence: str
    ) -> Queued:
        """Record pipeline run `run` and queue its first step `first`, like `enqueue`."""
        assert first.queue is not None
        part = self.keys_of(run.agent_id)
        assert self.partitions.of(first.agent_id) == self.partitions.of(run.agent_id)
        keys, args = self._enqueue_call(run, part.queue(first.queue, first.priority), dedup)
        keys.append(part.agent(first.agent_id))
        args.append(events.encode(first))
        return _queued(await self._enqueue(ENQUEUE_PIPELINE, keys, args, what, consequence))

    async def _enqueue(
        self, script: Script, keys: list[Any], args: list[Any], what: str | None, consequence: str
    ) -> Any:
        if what is None:
            return await self._run(script, keys, args)
        deadline = time.monotonic() + self.settings.enqueue_timeout
        while True:
            try:
                await check_eviction_policy(
                    self.client, what, allow_eviction=self.settings.allow_eviction
                )
                reply = await self._run(script, keys, args)
                _outage.succeeded()
                return reply
            except REDIS_ERRORS as e:
                if time.monotonic() >= deadline and isinstance(
                    e, redis.exceptions.OutOfMemoryError
                ):
                    # Refused as a whole: the script's first write failed, nothing was stored.
                    raise RedisOutOfMemoryError(
                        f"{what}: Redis is out of memory (maxmemory reached, so it refuses "
                        f"writes) and stayed so for {self.settings.enqueue_timeout}s "
                        f"(AGENTEXEC_ENQUEUE_TIMEOUT): {e}. {consequence} Free memory in Redis "
                        "(let the projector and workers catch up, lower AGENTEXEC_RESULT_TTL) "
                        "or raise maxmemory: redis-cli CONFIG SET maxmemory <bytes>."
                    ) from e
                if time.monotonic() >= deadline:
                    url = redact_url(self.settings.redis_url)
                    timeout = self.settings.enqueue_timeout
                    raise RedisUnavailableError(
                        f"{what}: Redis at {url} was unreachable for {timeout}s "
                        f"(AGENTEXEC_ENQUEUE_TIMEOUT): {e}. {consequence}"
                    ) from e
                await _outage.failed(e)

    async def requeue_held(self, event: TaskQueued, dedup: str, due_ms: int) -> bool:
        """Park a task that ran when Redis lost its data in its delayed set until `due_ms`,
        once per `dedup` name, without an event; False when it was parked before."""
        assert event.queue is not None
        member = delayed_member(event.priority, events.encode(event))
        part = self.keys_of(event.agent_id)
        reply = await self._run(
            REQUEUE_HELD,
            [part.dedup(dedup), part.delayed(event.queue)],
            [self.settings.idempotency_window, due_ms, member],
        )
        return bool(reply)

    @translated
    async def restore_results(self, results: Sequence[tuple[UUID, bytes, int]]) -> None:
        """Store (agent id, encoded outcome, TTL) results unless one is stored, and wake their
        waiters as a finish does."""
        for start in range(0, len(results), 1000):
            chunk = results[start : start + 1000]
            async with self.client.pipeline(transaction=False) as pipe:
                for agent_id, outcome, ttl in chunk:
                    pipe.set(self.keys_of(agent_id).result(agent_id), outcome, ex=ttl, nx=True)
                await pipe.execute()
            # Not in the pipeline: a Redis Cluster client refuses PUBLISH there. The batcher
            # sends them in one round trip all the same.
            batcher = self._batcher()
            await asyncio.gather(
                *(
                    batcher.execute("PUBLISH", self.keys.result_channel(agent_id), outcome)
                    for agent_id, outcome, _ in chunk
                )
            )

    @translated
    async def promote(
        self, queue_name: str, now_ms: int, limit: int = 100, partition: int = 0
    ) -> float | None:
        """Move up to `limit` due tasks of `queue_name`'s delayed set in `partition` to their
        streams; returns the next due time (ms) of those left, None when none is."""
        part = self._part(partition)
        keys = [part.delayed(queue_name), *part.queues(queue_name)]
        due = await self._run(PROMOTE, keys, [now_ms, limit])
        return None if due is None else float(due)

    async def known(self, agent_id: UUID) -> bool:
        """Whether a task or activity used `agent_id` lately: its agent marker (see
        `Keys.agent`) or its stored result exists."""
        keys = self.keys_of(agent_id)
        found = await self.client.exists(keys.agent(agent_id), keys.result(agent_id))
        return bool(found)

    def known_sync(self, agent_id: UUID) -> bool:
        """`known`, blocking."""
        client = self.runtime.sync_redis()
        keys = self.keys_of(agent_id)
        return bool(client.exists(keys.agent(agent_id), keys.result(agent_id)))

    async def cancel(self, requested: TaskCancelRequested) -> bool:
        """Record the cancel request of a task (named after its agent marker) and tell the
        workers; False when it ended."""
        aid = requested.agent_id
        part = self.keys_of(aid)
        reply = await self._run(
            CANCEL,
            [part.result(aid), part.cancel_marker(aid), part.events, part.agent(aid)],
            [
                self.settings.idempotency_window,
                events.encode(requested),
                self.keys.cancel_channel,
                str(aid),
            ],
        )
        return reply is not None

    async def canceled(self, agent_ids: Sequence[UUID]) -> list[UUID]:
        """Those of `agent_ids` whose cancel was requested."""
        by_partition: dict[int, list[UUID]] = {}
        for agent_id in agent_ids:
            by_partition.setdefault(self.partitions.of(agent_id), []).append(agent_id)
        found: list[UUID] = []
        for partition, ids in by_partition.items():  # MGET spans one slot on a cluster
            part = self._part(partition)
            markers = await self.client.mget([part.cancel_marker(a) for a in ids])
            found += [a for a, m in zip(ids, markers, strict=True) if m is not None]
        return found

    def track(
        self,
        name: str,
        batch_id: str,
        op: str,
        dedup: str | None,
        event: Event,
        completed: Event,
        ttls: tuple[int, int],
        fan_in: TaskQueued | None = None,
    ) -> Count:
        """Apply tracker op `op` ('incr', 'decr' or 'fan_in', with the fan-in `fan_in`),
        counted once per `dedup` key when given; `ttls`: seconds the state lives while open
        and once complete. Blocking."""
        part = self.keys_of(tracker_id(name, batch_id))
        state = part.tracker(name, batch_id)
        keys = [state, part.tracker_counted(name, batch_id), part.events]
        args: list[Any] = [op, dedup or "", events.encode(event), events.encode(completed), *ttls]
        if fan_in is not None:
            assert fan_in.queue is not None
            assert self.partitions.keys_of(fan_in.agent_id) is part
            declared = [part.queue(fan_in.queue, fan_in.priority), part.agent(fan_in.agent_id)]
            args += [events.encode(fan_in), str(fan_in.agent_id), AGENT_TTL]
        else:
            declared = _fan_ins.get(state, [])
        while True:
            reply = self._run_sync(TRACK, [*keys, *declared], args)
            if len(reply) == 4:
                break
            # The registered fan-in is not the one declared: declare it and run again.
            declared = [reply[0].decode(), reply[1].decode()]
            _fan_ins[state] = declared
            if len(_fan_ins) > _FAN_INS_KEPT:
                del _fan_ins[next(iter(_fan_ins))]
        fan_in_id = UUID(reply[3].decode()) if reply[3] else None
        return Count(int(reply[0]), int(reply[1]), bool(reply[2]), fan_in_id)

    async def remove_idle_consumers(
        self, queue_name: str, idle_ms: int, partition: int = 0
    ) -> list[str]:
        """Remove the consumers of `queue_name`'s streams in `partition` idle for `idle_ms`
        with nothing pending; returns their names."""
        reply: Any = await self._run(
            REMOVE_IDLE_CONSUMERS,
            self._part(partition).queues(queue_name),
            [WORKERS_GROUP, idle_ms],
        )
        return [_text(name) for name in reply[1::2]]

    # Appends (the writer is `agentexec.eventlog.EventLog`). An event without a task name
    # gets the one its agent marker holds (see lua/lib/names.lua).

    def _known_call(self, event: Event, check: bool) -> tuple[list[Any], list[Any]]:
        aid = event.agent_id
        part = self.keys_of(aid)
        keys = [part.events, part.agent(aid), part.result(aid)]
        return keys, [events.encode(event), AGENT_TTL, "1" if check else "0"]

    async def append_known(self, event: Event, *, check: bool) -> str | None:
        """Append an event from outside its task's handler and keep its agent id known; with
        `check`, only if it is known already (None if not)."""
        reply = await self._run(APPEND_KNOWN, *self._known_call(event, check))
        return None if reply is None else _text(reply)

    def append_known_sync(self, event: Event, *, check: bool) -> str | None:
        """`append_known`, blocking."""
        reply = self._run_sync(APPEND_KNOWN, *self._known_call(event, check))
        return None if reply is None else _text(reply)

    def _held_call(self, event: Event, lease: TaskLease, dedup: str) -> tuple[list[Any], list[Any]]:
        aid = event.agent_id
        part = self.keys_of(aid)
        keys = [part.events, part.agent(aid), part.result(aid), lease.stream, part.dedup(dedup)]
        args = [events.encode(event), AGENT_TTL, lease.group, lease.entry_id, lease.consumer, 600]
        return keys, args

    async def append_held(self, event: Event, lease: TaskLease, dedup: str) -> str | None:
        """Append an event of the task holding `lease`, from its handler; None once that
        worker lost the task or the task ended. Runs again with the same `dedup` name (one per
        event) return the first append's id."""
        keys, args = self._held_call(event, lease, dedup)
        reply = await self._run(APPEND_HELD, keys, args)
        return None if reply is None else _text(reply)

    def append_held_sync(self, event: Event, lease: TaskLease, dedup: str) -> str | None:
        """`append_held`, blocking."""
        keys, args = self._held_call(event, lease, dedup)
        reply = self._run_sync(APPEND_HELD, keys, args)
        return None if reply is None else _text(reply)

    async def checkpoint_held(
        self, event: Event, lease: TaskLease, dedup: str, run: str, conversation: bytes
    ) -> str | None:
        """`append_held` for an `agent.checkpoint` event that also saves `conversation` as
        run `run`'s latest checkpoint of the agent, in the same step: a checkpoint is saved
        if and only if its event is in the log. Kept `AGENT_TTL` after the latest one."""
        keys, args = self._held_call(event, lease, dedup)
        keys.append(self.keys_of(event.agent_id).checkpoints(event.agent_id))
        args += [run, conversation]
        reply = await self._run(CHECKPOINT_HELD, keys, args)
        return None if reply is None else _text(reply)

    async def checkpoint(self, agent_id: UUID, run: str) -> bytes | None:
        """The conversation run `run` of agent `agent_id` saved last (see
        `checkpoint_held`), or None."""
        with refusals("checkpoint"):
            saved = await self.client.hget(self.keys_of(agent_id).checkpoints(agent_id), run)
        return saved.encode() if isinstance(saved, str) else saved

    # Conversation sessions (see `agentexec.sessions`): a list of items per session, changed
    # only together with the events that record the change.

    @translated
    async def session_state(self, key: UUID) -> SessionState:
        """The version, item count and latest item of session `key` (its agent id)."""
        part = self.keys_of(key)
        items = part.session_items(key)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.get(part.session_version(key))
            pipe.llen(items)
            pipe.lindex(items, -1)
            version, length, last = await pipe.execute()
        return SessionState(int((version or b"0").split(b":")[0]), int(length), last)

    @translated
    async def session_items(self, key: UUID, limit: int | None) -> tuple[list[bytes], int]:
        """The latest `limit` items of session `key` (all of them with None), oldest first,
        and how many it holds."""
        items = self.keys_of(key).session_items(key)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.lrange(items, 0 if limit is None else -limit, -1)
            pipe.llen(items)
            found, length = await pipe.execute()
        return (list(found) if limit != 0 else []), int(length)

    async def change_session(
        self,
        key: UUID,
        version: int,
        op: str,
        token: str,
        changes: Sequence[bytes],
        items: Sequence[bytes] = (),
        held: tuple[UUID, TaskLease] | None = None,
    ) -> tuple[int, list[str]] | Literal[False] | None:
        """Apply `op` ('add' with `items`, 'pop' or 'clear') to session `key` and append the
        encoded events `changes`, atomically, if the session is still at `version`. Returns
        the item count after the change and the events' ids (none when the change with
        `token`, one per change, had been applied: a run again after a lost reply); None
        when the version moved. With `held` (the agent id and lease of the task whose
        handler makes the change), fenced like `append_held`: False, nothing changed, once
        that worker lost the task or the task ended.

        A session lives in the partition of its key, a task in its own: when they differ
        (only with several partitions), the task's keys are in another slot than the
        session's on a cluster, so the fence is checked just before the change instead of in
        the same script. A worker whose lease lapses in that instant may then change the
        session once more; with one partition, or a session in its task's, it cannot."""
        part = self.keys_of(key)
        keys = [part.events, part.session_items(key), part.session_version(key)]
        fence: list[Any] = []
        if held is not None and self.partitions.of(held[0]) != self.partitions.of(key):
            if not await self._holds(*held):
                return False
            held = None
        if held is not None:
            agent_id, lease = held
            keys += [lease.stream, self.keys_of(agent_id).result(agent_id)]
            fence = [lease.group, lease.entry_id, lease.consumer]
        args = [version, op, token, len(changes), len(fence), *fence, *changes, *items]
        reply = await self._run(SESSION_CHANGE, keys, args)
        if isinstance(reply, int):
            return False
        if not reply:
            return None
        return int(reply[0]), [_text(entry_id) for entry_id in reply[1:]]

    @translated
    async def _holds(self, agent_id: UUID, lease: TaskLease) -> bool:
        """Whether the worker of `lease` may still write for `agent_id`'s task: its entry is
        pending to it (or to nobody: the stream or group is gone) and the task has no
        outcome, as lua/lib/ownership.lua's `may_end` and the fenced scripts judge."""
        if await self.client.exists(self.keys_of(agent_id).result(agent_id)):
            return False
        try:
            pending: Any = await self.client.xpending_range(
                lease.stream, lease.group, lease.entry_id, lease.entry_id, 1
            )
        except redis.ResponseError as e:
            if isinstance(e, REDIS_ERRORS) or not is_missing_group(e):
                raise
            return True
        return not pending or _text(pending[0]["consumer"]) == lease.consumer

    async def restore_session(self, key: UUID, version: int, items: Sequence[bytes]) -> bool:
        """Put back the live `items` of session `key` at `version`, after Redis lost them;
        False (nothing done) when the session was written since."""
        part = self.keys_of(key)
        keys = [part.session_items(key), part.session_version(key)]
        return bool(await self._run(SESSION_RESTORE, keys, [version, *items]))

    # Gauges, read at scrape time by `agentexec.metrics` (blocking: scrapes run on threads).

    def queue_depth(self, queue_name: str) -> QueueDepth:
        """The waiting, pending, delayed and parked tasks of `queue_name`. Entries are deleted when
        their task ends or moves (see lua/finish.lua, retry.lua...), so a stream holds the
        waiting and pending ones only. Blocking."""
        total = QueueDepth(0, 0, 0, 0)
        for partition in self.partitions:
            part = self._part(partition)
            with refusals("queue_depth"), self.runtime.sync_redis().pipeline(False) as pipe:
                for stream in part.queues(queue_name):
                    pipe.xlen(stream)
                    pipe.xpending(stream, WORKERS_GROUP)
                pipe.zcard(part.delayed(queue_name))
                pipe.hlen(part.lock_waiters(queue_name))
                replies = pipe.execute(raise_on_error=False)
            lengths = [_count(r) for r in replies[0:-2:2]]
            pending = sum(_pending(r) for r in replies[1:-2:2])
            total = QueueDepth(
                total.waiting + max(sum(lengths) - pending, 0),
                total.pending + pending,
                total.delayed + _count(replies[-2]),
                total.parked + _count(replies[-1]),
            )
        return total

    def log_lag(self) -> LogLag:
        """How far the projector groups are behind the event log, over its partitions (the
        oldest event waiting in any of them). Blocking."""
        with refusals("log_lag"):
            lags = [self._log_lag(self._part(p).events) for p in self.partitions]
        oldest = [lag.oldest_ms for lag in lags if lag.oldest_ms is not None]
        return LogLag(sum(lag.entries for lag in lags), min(oldest) if oldest else None)

    def _log_lag(self, stream: str) -> LogLag:
        client = self.runtime.sync_redis()
        try:
            groups: Any = client.xinfo_groups(stream)
        except redis.ResponseError as e:
            if isinstance(e, REDIS_ERRORS) or "no such key" not in str(e).lower():
                raise
            return LogLag(0, None)  # no log yet
        group = next((g for g in groups if _text(g["name"]) == PROJECTOR_GROUP), None)
        if group is None:  # no projector ever ran: the whole log is behind
            first: Any = client.xrange(stream, "-", "+", count=1)
            return LogLag(int(client.xlen(stream)), _ms(first[0][0]) if first else None)
        pending = int(group["pending"])
        last = _text(group["last-delivered-id"])
        lag = group.get("lag")
        if lag is None:  # unknown to Redis (entries deleted, or the group set by id): count
            counted: Any = client.xrange(stream, f"({last}", "+", count=_LAG_COUNTED)
            lag = len(counted)
        oldest = None
        if pending:
            summary: Any = client.xpending(stream, PROJECTOR_GROUP)
            oldest = summary["min"]
        elif lag:
            after: Any = client.xrange(stream, f"({last}", "+", count=1)
            oldest = after[0][0] if after else None
        return LogLag(pending + int(lag), None if oldest is None else _ms(oldest))

    def dead_letter_count(self) -> int:
        """How many dead letters are kept. Blocking."""
        with refusals("dead_letter_count"):
            client = self.runtime.sync_redis()
            return sum(int(client.xlen(self._part(p).dead_letters)) for p in self.partitions)

    def consumer(self, queue_name: str, name: str) -> Consumer:
        """The verbs of worker `name` (its consumer name) reading `queue_name`."""
        return Consumer(self, queue_name, name)

    # Reading the log.

    async def read_log(
        self,
        after: Position | None = None,
        *,
        until: Position | None = None,
        count: int,
        partition: int = 0,
    ) -> LogPage:
        """Up to `count` entries of `partition`'s log after `after` (None: from the first), up
        to `until`."""
        reply: Any = await self.client.xrange(
            self._part(partition).events,
            _after(after),
            "+" if until is None else str(until),
            count=count,
        )
        return LogPage.of(reply)

    def read_log_sync(
        self,
        after: Position | None = None,
        *,
        until: Position | None = None,
        count: int,
        partition: int = 0,
    ) -> LogPage:
        """`read_log`, blocking."""
        reply: Any = self.runtime.sync_redis().xrange(
            self._part(partition).events,
            _after(after),
            "+" if until is None else str(until),
            count=count,
        )
        return LogPage.of(reply)

    def tail_log_sync(self, count: int, partition: int = 0) -> LogPage:
        """The last `count` entries of `partition`'s log, in log order. Blocking."""
        stream = self._part(partition).events
        reply: Any = self.runtime.sync_redis().xrevrange(stream, "+", "-", count=count)
        return LogPage.of(list(reversed(reply)))

    @translated
    async def wait_log(
        self, after: Position, *, count: int, block_ms: int, partition: int = 0
    ) -> LogPage:
        """Up to `count` entries of `partition`'s log after `after`, waiting up to `block_ms`
        for the first; empty when none came, or when the log was deleted under the wait."""
        reply: Any = None
        with _deleted_under_read():
            reply = await self.client.xread(
                {self._part(partition).events: str(after)}, count=count, block=block_ms
            )
        return LogPage.of([entry for _, entries in reply or () for entry in entries])

    def log_reads(self) -> list[list[int]]:
        """The partitions whose logs one blocking read (`wait_logs`) may wait on together:
        all of them on one server; one per read on a Redis Cluster, where each partition's
        log is in a slot of its own (and a read of several slots is refused)."""
        if len(self.partitions) > 1 and isinstance(self.client, aiocluster.RedisCluster):
            return [[p] for p in self.partitions]
        return [list(self.partitions)]

    @translated
    async def wait_logs(
        self, after: Mapping[int, Position], *, count: int, block_ms: int
    ) -> dict[int, LogPage]:
        """`wait_log` of several partitions' logs in one XREAD (see `log_reads`): up to
        `count` entries of each partition's log after its position in `after`, waiting up to
        `block_ms` for the first of any; the pages of the partitions that had entries."""
        streams: dict[Any, Any] = {self._part(p).events: str(pos) for p, pos in after.items()}
        partition_of = {self._part(p).events: p for p in after}
        reply: Any = None
        with _deleted_under_read():
            reply = await self.client.xread(streams, count=count, block=block_ms)
        return {
            partition_of[_text(stream)]: LogPage.of(entries)
            for stream, entries in reply or ()
            if entries
        }

    def wait_log_sync(
        self, after: Position, *, count: int, block_ms: int, partition: int = 0
    ) -> LogPage:
        """`wait_log`, blocking."""
        reply: Any = None
        with _deleted_under_read():
            reply = self.runtime.sync_redis().xread(
                {self._part(partition).events: str(after)}, count=count, block=block_ms
            )
        return LogPage.of([entry for _, entries in reply or () for entry in entries])

    async def log_bounds(self, partition: int = 0) -> LogBounds:
        """What `partition`'s log holds now (`EMPTY_LOG` before its first append)."""
        try:
            info: dict[str, Any] = await self.client.xinfo_stream(self._part(partition).events)
        except redis.ResponseError as e:
            if isinstance(e, REDIS_ERRORS) or "no such key" not in str(e):
                raise
            return EMPTY_LOG
        first = info.get("first-entry")
        added = info.get("entries-added")
        return LogBounds(
            Position.parse(info.get("max-deleted-entry-id") or str(ORIGIN)),
            added is None or int(added) > int(info["length"]),
            Position.parse(first[0]) if first else None,
            Position.parse(info["last-generated-id"]),
        )

    def unprojected_since_ms(self) -> int | None:
        """The time (ms) of the oldest log event no projector has taken, in the partitions no
        projector holds the lease of; None when every one is held, or nothing waits.
        Blocking."""
        found = [self._unprojected_since_ms(self._part(p)) for p in self.partitions]
        waiting = [ms for ms in found if ms is not None]
        return min(waiting) if waiting else None

    def _unprojected_since_ms(self, part: Keys) -> int | None:
        client = self.runtime.sync_redis()
        if client.exists(part.projector_lease):
            return None
        try:
            groups: Any = client.xinfo_groups(part.events)
        except redis.ResponseError as e:
            if isinstance(e, REDIS_ERRORS):
                raise
            return None  # no log yet: nothing waits
        delivered = _projector_delivered(groups)
        after = None if delivered is None else Position.parse(delivered)
        entries: Any = client.xrange(part.events, _after(after), "+", count=1)
        return Position.parse(entries[0][0]).ms if entries else None

    # The projector's ownership of the log.

    def log_lease(self, owner: str, seconds: float, partition: int = 0) -> LogLease:
        """The lease on `partition`'s log that one projector (or a rebuild) holds at a time."""
        return LogLease(self.client, self._part(partition).projector_lease, owner, seconds)

    @translated
    async def projectors_running(self, owner: str, seconds: float) -> int:
        """Note that projector `owner` runs for `seconds` more; returns how many projectors
        of the namespace run (noted so, within their own seconds): each takes its share of
        the partitions' leases."""
        key = self._part(0).projector_members
        now, ms = int(time.time() * 1000), max(1, int(seconds * 1000))
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {owner: now + ms})
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zcard(key)
            pipe.pexpire(key, ms)
            reply: Any = await pipe.execute()
        return int(reply[2])

    @translated
    async def projector_stopped(self, owner: str) -> None:
        """Note that projector `owner` stopped: the others take its partitions' share."""
        await self.client.zrem(self._part(0).projector_members, owner)

    @translated
    async def projector_delivered(self, partition: int = 0) -> str | None:
        """The last id delivered to the projector's group of `partition`'s log; None when
        there is none (no group, or no log)."""
        try:
            groups: Any = await self.client.xinfo_groups(self._part(partition).events)
        except redis.ResponseError as e:
            if isinstance(e, REDIS_ERRORS) or "no such key" not in str(e).lower():
                raise
            return None
        return _projector_delivered(groups)

    @translated
    async def log_ids(self, after: str, until: str, count: int, partition: int = 0) -> list[str]:
        """The ids of up to `count` entries of `partition`'s log after `after`, up to `until`,
        events or not."""
        stream = self._part(partition).events
        page: Any = await self.client.xrange(stream, f"({after}", until, count=count)
        return [_text(entry_id) for entry_id, _ in page]

    async def lift_log(
        self, floor: str, after: str, ids: Sequence[str], partition: int = 0
    ) -> tuple[bool, list[tuple[str, str]]]:
        """Raise the log's last id to `floor` (creating the log and the projector's group at
        it when missing), and append again above it, in order, the entries after `after` up
        to it (none when `after` is "") and those of `ids`, deleting the originals. Returns
        whether the last id was raised, and the (old, new) ids of the entries moved."""
        reply: Any = await self._run(
            LIFT_LOG, [self._part(partition).events], [PROJECTOR_GROUP, floor, after, *ids]
        )
        pairs = [(_text(reply[i]), _text(reply[i + 1])) for i in range(1, len(reply), 2)]
        return bool(reply[0]), pairs

    async def trim_log(
        self, checkpoint: str, hot_window_ms: int, partition: int = 0
    ) -> tuple[int, Position | None]:
        """Remove the log's entries below the least of `checkpoint`, the start of the hot
        window (`hot_window_ms` back by Redis's clock) and every consumer group's oldest
        pending entry (or the entry after its last delivered one); nothing while the log has
        no projector group. Returns how many went and the bound (None: nothing could go)."""
        reply: Any = await self._run(
            TRIM_LOG, [self._part(partition).events], [PROJECTOR_GROUP, checkpoint, hot_window_ms]
        )
        bound = _text(reply[1])
        return int(reply[0]), Position.parse(bound) if bound else None

    async def ensure_log_group(self, start: str, partition: int = 0) -> None:
        """Create the projector's group on `partition`'s log (and the log) at `start` unless
        it exists."""
        with refusals("ensure_log_group"):
            stream = self._part(partition).events
            await ensure_group(self.client, stream, PROJECTOR_GROUP, start=start)

    @translated
    async def ack_log(self, ids: Sequence[str], partition: int = 0) -> None:
        """Acknowledge the projector's entries `ids` of `partition`'s log: committed, they
        are not read again."""
        await self.client.xack(self._part(partition).events, PROJECTOR_GROUP, *ids)

    @translated
    async def mark_restore_due(self, position: str, partition: int = 0) -> None:
        """Note that Redis lost the data the read model was built from, at checkpoint
        `position` of `partition`: its queued tasks and results are to be restored from the
        archive."""
        await self.client.set(self._part(partition).restore_due, position)

    @translated
    async def restore_due(self, partition: int = 0) -> str | None:
        """The checkpoint at which Redis lost `partition`'s data, while it is not restored
        yet."""
        found: Any = await self.client.get(self._part(partition).restore_due)
        return None if found is None else _text(found)

    @translated
    async def restored(self, partition: int = 0) -> None:
        await self.client.delete(self._part(partition).restore_due)

    # Reading state.

    async def result(self, agent_id: UUID | str) -> bytes | None:
        """The stored outcome of `agent_id`'s task (see `agentexec.results`), None before it
        ended or after `AGENTEXEC_RESULT_TTL`."""
        data: Any = await self._batcher().execute("GET", self.keys_of(agent_id).result(agent_id))
        return None if data is None else bytes(data)

    def tracker_counts(self, name: str, batch_id: str) -> tuple[int, int]:
        """A tracker's (pending, total); (0, 0) before its first change. Blocking."""
        pending, total = self.runtime.sync_redis().hmget(
            self.keys_of(tracker_id(name, batch_id)).tracker(name, batch_id), ["pending", "total"]
        )
        return int(pending or 0), int(total or 0)

    def held_by_queues(self, queues: Iterable[str]) -> set[UUID]:
        """Agent ids of the tasks these queues hold: in a stream (waiting, running, or handed
        back), in the delayed set (waiting for a retry) or parked on a task lock (see
        `agentexec.locks`). One transaction per queue, so that a task moving between them is
        seen in one of them. Blocking."""
        client = self.runtime.sync_redis()
        held: set[UUID] = set()
        for queue, part in ((q, self._part(p)) for q in queues for p in self.partitions):
            with client.pipeline(transaction=True) as pipe:
                for stream in part.queues(queue):
                    pipe.xrange(stream)
                pipe.zrange(part.delayed(queue), 0, -1)
                pipe.hkeys(part.lock_waiters(queue))
                *entries, delayed, parked = pipe.execute()
            for agent_id in parked:
                with contextlib.suppress(ValueError):
                    held.add(UUID(_text(agent_id)))
            payloads = [
                _fields(f).get(events.EVENT_FIELD, b"") for found in entries for _, f in found
            ]
            payloads += [member[2:] for member in delayed]
            for payload in payloads:
                try:
                    held.add(UUID(str(msgspec.json.decode(payload)["agent_id"])))
                except (msgspec.DecodeError, KeyError, TypeError, ValueError):
                    continue  # not a task event: nothing a worker will run
        return held

    def running_unqueued(self, agent_ids: Sequence[UUID]) -> set[UUID]:
        """Those of `agent_ids` a worker runs on an entry Redis lost (see `Keys.held`).
        Blocking."""
        with self.runtime.sync_redis().pipeline(transaction=False) as pipe:
            for agent_id in agent_ids:
                pipe.exists(self.keys_of(agent_id).held(agent_id))
            running = pipe.execute()
        return {a for a, r in zip(agent_ids, running, strict=True) if r}

    # Task locks (see `agentexec.locks`; a worker takes them with `Consumer.lock`).

    async def unlock(
        self,
        queue: str,
        agent_id: UUID | None,
        locks: Sequence[Lock],
        now_ms: int,
        partition: int = 0,
    ) -> int:
        """Release the holds of `agent_id` on `locks` of `queue` in its partition (None:
        none, only wake the waiters of holds that expired in `partition`) and wake the next
        waiters, each with a hold for a lease; returns how many woke."""
        part = self._part(partition) if agent_id is None else self.keys_of(agent_id)
        keys: list[Any] = [
            part.lock_index(queue),
            part.lock_waiters(queue),
            part.queue(queue, Priority.HIGH),
        ]
        args: list[Any] = ["" if agent_id is None else str(agent_id), now_ms, self._lease_ms()]
        for lock in locks:
            keys += [part.lock_holders(queue, lock.name), part.lock_waiting(queue, lock.name)]
            args += [lock.name, lock.capacity]
        return int(await self._run(UNLOCK, keys, args))

    @translated
    async def locks_due(
        self, queue: str, now_ms: int, count: int = 100, partition: int = 0
    ) -> list[str]:
        """Names of `queue`'s locks in `partition` with waiters whose earliest hold has
        expired by `now_ms`: their holders may have died, so a sweep wakes their waiters (see
        `unlock`)."""
        names: Any = await self.client.zrangebyscore(
            self._part(partition).lock_index(queue), "-inf", now_ms, start=0, num=count
        )
        return [_text(name) for name in names]

    @translated
    async def renew_holds(
        self, queue: str, holds: Sequence[tuple[UUID, Sequence[Lock]]], now_ms: int
    ) -> set[UUID]:
        """Extend the holds of running tasks, (agent id, locks) each, by a lease from
        `now_ms`; returns the agent ids that lost a hold: it lapsed (Redis was unreachable for
        longer than a lease) and is not taken again (`ZADD XX`), as another task may have the
        slot now."""
        expires = now_ms + self._lease_ms()
        asked: list[UUID] = []
        async with self.client.pipeline(transaction=False) as pipe:
            for agent_id, locks in holds:
                for lock in locks:
                    holders = self.keys_of(agent_id).lock_holders(queue, lock.name)
                    pipe.zadd(holders, {str(agent_id): expires}, xx=True, ch=True)
                    asked.append(agent_id)
            renewed = await pipe.execute()
        return {agent_id for agent_id, done in zip(asked, renewed, strict=True) if not done}

    async def unpark(self, queue: str, agent_id: UUID) -> bool:
        """Queue a task parked on one of `queue`'s locks on its stream again at once (a cancel
        request: START then ends it); False when it is not parked."""
        part = self.keys_of(agent_id)
        lock: Any = await self.client.hget(part.lock_waiters(queue), str(agent_id))
        if lock is None:
            return False
        name = _text(lock)
        keys = [
            part.lock_waiters(queue),
            part.lock_waiting(queue, name),
            part.lock_holders(queue, name),
            part.lock_index(queue),
            part.queue(queue, Priority.HIGH),
        ]
        return bool(await self._run(UNPARK, keys, [str(agent_id), name]))

    def _lease_ms(self) -> int:
        return max(1, int(self.settings.lease_seconds * 1000))

    # Dead letters (see `agentexec.workers.deadletters`; a worker's are written by
    # `Consumer.dead_letter`).

    async def dead_letters(self, count: int) -> list[DeadLetter]:
        """The oldest `count` dead letters (of every partition, by the time they were
        written)."""
        letters: list[DeadLetter] = []
        for partition in self.partitions:
            stream = self._part(partition).dead_letters
            entries: Any = await self.client.xrange(stream, count=count)
            letters += [DeadLetter.of(entry_id, fields) for entry_id, fields in entries]
        return sorted(letters, key=lambda letter: Position.parse(letter.id))[:count]

    async def dead_letter_at(self, dead_letter_id: str) -> DeadLetter | None:
        """The dead letter `dead_letter_id`, None when there is none."""
        for partition in self.partitions:
            stream = self._part(partition).dead_letters
            found: Any = await self.client.xrange(stream, dead_letter_id, dead_letter_id)
            if found:
                return DeadLetter.of(*found[0])
        return None

    async def remove_dead_letter(self, dead_letter_id: str) -> None:
        for partition in self.partitions:
            await self.client.xdel(self._part(partition).dead_letters, dead_letter_id)

    async def trim_dead_letters(self, retention_ms: int) -> int:
        """Delete the dead letters older than `retention_ms` by the server's clock; returns
        how many. Trimmed by id (`XTRIM MINID`): a dead letter's id is the time it was
        written."""
        seconds, micros = await self.client.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        minid = f"{max(0, now_ms - retention_ms)}-0"
        removed = 0
        for partition in self.partitions:
            stream = self._part(partition).dead_letters
            removed += int(await self.client.xtrim(stream, minid=minid, approximate=False))
        return removed

    @translated
    async def dead_letter_log_entries(
        self, undecodable: Sequence[tuple[str, Mapping[Any, Any], str]], partition: int = 0
    ) -> None:
        """Keep entries of `partition`'s log that are no agentexec event, (entry id, fields,
        reason) each, as dead letters, in one transaction."""
        part = self._part(partition)
        async with self.client.pipeline(transaction=True) as pipe:
            for entry_id, fields, reason in undecodable:
                letter: dict[Any, Any] = {**fields, b"stream": part.events}
                letter.update({b"id": entry_id, b"reason": reason})
                pipe.xadd(part.dead_letters, letter)
            await pipe.execute()


def _queued(reply: Any) -> Queued:
    event_id, agent_id = reply
    return Queued(event_id=_text(event_id), agent_id=UUID(_text(agent_id)))


_LAG_COUNTED = 10_000


def _count(reply: Any) -> int:
    return 0 if isinstance(reply, Exception) else int(reply)


def _pending(reply: Any) -> int:
    # A stream without the workers' group yet (no worker read it) has nothing pending.
    return 0 if isinstance(reply, Exception) else int(reply["pending"])


def _ms(entry_id: Any) -> int:
    return int(_text(entry_id).partition("-")[0])


def _projector_delivered(groups: Any) -> str | None:
    """The last id delivered to the projector's group, from XINFO GROUPS's reply."""
    for group in groups:
        if _text(group["name"]) == PROJECTOR_GROUP:
            return _text(group["last-delivered-id"])
    return None


@contextlib.contextmanager
def _deleted_under_read() -> Iterator[None]:
    """Let a blocked read end empty when the stream was deleted under it."""
    try:
        yield
    except redis.ResponseError as e:
        if isinstance(e, REDIS_ERRORS) or not is_missing_group(e):
            raise


def _after(position: Position | None) -> str:
    """XRANGE's start for the entries after `position` (None: from the first)."""
    return "-" if position is None else f"({position}"


def _fields(fields: Any) -> dict[Any, Any]:
    """A stream entry's fields as a dict: a Redis Cluster client's transaction leaves XRANGE's
    reply unparsed (a flat list of names and values)."""
    if isinstance(fields, dict):
        return fields
    return dict(zip(fields[::2], fields[1::2], strict=True))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
