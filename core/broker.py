"""`Broker`: the one home of the Redis client, the key names and the Lua scripts.

Callers speak in verbs (`enqueue`, `cancel`, `promote`, `track`, `append_held`, ...; a worker's
`read`, `start`, `finish`, `retry`, `renew`, ... on `Broker.consumer`, see
`agentexec.consumer`) and get typed results; only these two modules know the scripts' KEYS/ARGV
layouts (documented in the header of each `lua/<name>.lua`) and decode their replies. Verbs go
through the `Batcher`, so that many of them share one round trip.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import redis
import redis.asyncio as aioredis

from . import events
from .batcher import Batcher, get_batcher
from .connection import REDIS_ERRORS, Reconnect, check_eviction_policy
from .consumer import Consumer
from .credentials import redact_url
from .errors import RedisOutOfMemoryError, RedisUnavailableError
from .events import Event, TaskCancelRequested, TaskQueued
from .scripts import (
    APPEND_HELD,
    APPEND_KNOWN,
    CANCEL,
    ENQUEUE,
    ENQUEUE_LATER,
    ENQUEUE_PIPELINE,
    PROMOTE,
    REMOVE_IDLE_CONSUMERS,
    REQUEUE_HELD,
    TRACK,
    Script,
)
from .streams import AGENT_TTL, PROJECTOR_GROUP, WORKERS_GROUP, Keys, delayed_member
from .tasks import TaskLease

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["Broker", "Count", "LogLag", "QueueDepth", "Queued"]


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
class QueueDepth:
    """The tasks of one queue (both priorities) at one moment."""

    waiting: int
    """In its streams, not yet read by a worker."""
    pending: int
    """Read by a worker and not ended yet: running, or held by a lease that expires."""
    delayed: int
    """Waiting for a retry's backoff or a later due time."""


@dataclass(frozen=True)
class LogLag:
    """How far the read model is behind the event log."""

    entries: int
    """Entries of the log the projector has not committed (delivered ones not acknowledged,
    and those not read yet). Where Redis does not know how many are not read yet, they are
    counted up to 10,000."""
    oldest_ms: int | None
    """The time (ms since the epoch, from its stream id) of the oldest such entry."""


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
        self.keys: Keys = runtime.keys
        self._client = client

    @property
    def client(self) -> aioredis.Redis:
        return self._client or self.runtime.redis()

    def _batcher(self) -> Batcher:
        return get_batcher(self.client)

    async def _run(self, script: Script, keys: list[Any], args: list[Any]) -> Any:
        return await self._batcher().run_script(script, keys, args)

    def _run_sync(self, script: Script, keys: list[Any], args: list[Any]) -> Any:
        client = self.runtime.sync_redis()
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
        marker = self.keys.agent(event.agent_id)
        if dedup is not None:
            key, window = self.keys.dedup(dedup), self.settings.idempotency_window
        else:
            key, window = marker, AGENT_TTL
        return (
            [self.keys.events, target, key, marker],
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
        if due is None:
            keys, args = self._enqueue_call(
                event, self.keys.queue(event.queue, event.priority), dedup
            )
            script = ENQUEUE
        else:
            keys, args = self._enqueue_call(event, self.keys.delayed(event.queue), dedup)
            due_ms = int(due.timestamp() * 1000)
            member = delayed_member(event.priority, args[0])
            args += [due_ms, member, self.keys.schedule_channel(event.queue)]
            script = ENQUEUE_LATER
        return _queued(await self._enqueue(script, keys, args, what, consequence))

    async def enqueue_pipeline(
        self, run: TaskQueued, first: TaskQueued, *, dedup: str | None, what: str, consequence: str
    ) -> Queued:
        """Record pipeline run `run` and queue its first step `first`, like `enqueue`."""
        assert first.queue is not None
        keys, args = self._enqueue_call(run, self.keys.queue(first.queue, first.priority), dedup)
        keys.append(self.keys.agent(first.agent_id))
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
        reply = await self._run(
            REQUEUE_HELD,
            [self.keys.dedup(dedup), self.keys.delayed(event.queue)],
            [self.settings.idempotency_window, due_ms, member],
        )
        return bool(reply)

    async def restore_results(self, results: Sequence[tuple[UUID, bytes, int]]) -> None:
        """Store (agent id, encoded outcome, TTL) results unless one is stored, and wake their
        waiters as a finish does."""
        for start in range(0, len(results), 1000):
            async with self.client.pipeline(transaction=False) as pipe:
                for agent_id, outcome, ttl in results[start : start + 1000]:
                    pipe.set(self.keys.result(agent_id), outcome, ex=ttl, nx=True)
                    pipe.publish(self.keys.result_channel(agent_id), outcome)
                await pipe.execute()

    async def promote(self, queue_name: str, now_ms: int, limit: int = 100) -> float | None:
        """Move up to `limit` due tasks of `queue_name`'s delayed set to their streams; returns
        the next due time (ms) of those left, None when none is."""
        keys = [self.keys.delayed(queue_name), *self.keys.queues(queue_name)]
        due = await self._run(PROMOTE, keys, [now_ms, limit])
        return None if due is None else float(due)

    async def known(self, agent_id: UUID) -> bool:
        """Whether a task or activity used `agent_id` lately: its agent marker (see
        `Keys.agent`) or its stored result exists."""
        found = await self.client.exists(self.keys.agent(agent_id), self.keys.result(agent_id))
        return bool(found)

    def known_sync(self, agent_id: UUID) -> bool:
        """`known`, blocking."""
        client = self.runtime.sync_redis()
        return bool(client.exists(self.keys.agent(agent_id), self.keys.result(agent_id)))

    async def cancel(self, requested: TaskCancelRequested) -> bool:
        """Record the cancel request of a task (named after its agent marker) and tell the
        workers; False when it ended."""
        aid = requested.agent_id
        reply = await self._run(
            CANCEL,
            [
                self.keys.result(aid),
                self.keys.cancel_marker(aid),
                self.keys.events,
                self.keys.agent(aid),
            ],
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
        markers = await self.client.mget([self.keys.cancel_marker(a) for a in agent_ids])
        return [a for a, m in zip(agent_ids, markers, strict=True) if m is not None]

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
        state = self.keys.tracker(name, batch_id)
        keys = [state, self.keys.tracker_counted(name, batch_id), self.keys.events]
        args: list[Any] = [op, dedup or "", events.encode(event), events.encode(completed), *ttls]
        if fan_in is not None:
            assert fan_in.queue is not None
            declared = [
                self.keys.queue(fan_in.queue, fan_in.priority),
                self.keys.agent(fan_in.agent_id),
            ]
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

    async def remove_idle_consumers(self, queue_name: str, idle_ms: int) -> list[str]:
        """Remove the consumers of `queue_name` idle for `idle_ms` with nothing pending;
        returns their names."""
        reply: Any = await self._run(
            REMOVE_IDLE_CONSUMERS, self.keys.queues(queue_name), [WORKERS_GROUP, idle_ms]
        )
        return [_text(name) for name in reply[1::2]]

    # Appends (the writer is `agentexec.eventlog.EventLog`). An event without a task name
    # gets the one its agent marker holds (see lua/lib/names.lua).

    def _known_call(self, event: Event, check: bool) -> tuple[list[Any], list[Any]]:
        aid = event.agent_id
        keys = [self.keys.events, self.keys.agent(aid), self.keys.result(aid)]
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
        keys = [
            self.keys.events,
            self.keys.agent(aid),
            self.keys.result(aid),
            lease.stream,
            self.keys.dedup(dedup),
        ]
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

    # Gauges, read at scrape time by `agentexec.metrics` (blocking: scrapes run on threads).

    def queue_depth(self, queue_name: str) -> QueueDepth:
        """The waiting, pending and delayed tasks of `queue_name`. Entries are deleted when
        their task ends or moves (see lua/finish.lua, retry.lua...), so a stream holds the
        waiting and pending ones only. Blocking."""
        streams = self.keys.queues(queue_name)
        with self.runtime.sync_redis().pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xlen(stream)
                pipe.xpending(stream, WORKERS_GROUP)
            pipe.zcard(self.keys.delayed(queue_name))
            replies = pipe.execute(raise_on_error=False)
        lengths = [_count(r) for r in replies[0:-1:2]]
        pending = [_pending(r) for r in replies[1:-1:2]]
        waiting = max(sum(lengths) - sum(pending), 0)
        return QueueDepth(waiting, sum(pending), _count(replies[-1]))

    def log_lag(self) -> LogLag:
        """How far the projector group is behind the event log. Blocking."""
        client = self.runtime.sync_redis()
        stream = self.keys.events
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
        return int(self.runtime.sync_redis().xlen(self.keys.dead_letters))

    def consumer(self, queue_name: str, name: str) -> Consumer:
        """The verbs of worker `name` (its consumer name) reading `queue_name`."""
        return Consumer(self, queue_name, name)


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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
