"""Leases: what a worker knows of each entry it holds, their renewal, the takeover of expired
ones, and their release when the worker stops.

While a task runs, its entry's idle time is reset every third of a lease (`renew`); an entry
another worker took over meanwhile is abandoned: its handler is stopped, since its outcome
would be rejected. Entries whose lease expired (a dead host, a frozen process) are claimed by
any live worker, once it has room.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from uuid import UUID

import msgspec

from agentexec import events
from agentexec.connection import REDIS_ERRORS, Reconnect, supervise
from agentexec.consumer import Claim, Consumer, Entry, EntryKey
from agentexec.errors import BrokerError, GroupMissingError
from agentexec.locks import Lock

__all__ = ["Held", "Leases", "identify"]

logger = logging.getLogger(__name__)


@dataclass
class Held:
    """What this worker knows of one entry it holds, until its task is done here."""

    deliveries: int = 1
    """Times delivered: more than once when taken over or resumed."""
    agent: str | None = None
    """Agent id of its task, for its renewal, once looked up."""
    in_hand: UUID | None = None
    """The task this entry runs here, once it was given a hand (see `Leases.take_hand`)."""
    ending: bool = False
    """Its end script (finish, retry, dead letter, defer) is under way."""
    ended: bool = False
    """Its end script ran: gone from the stream, no lease left to renew."""
    locks: tuple[Lock, ...] = ()
    """The locks its task holds (see `agentexec.locks`), renewed with its lease."""


class Leases:
    def __init__(
        self,
        consumer: Consumer,
        running: dict[asyncio.Task[None], Entry],
        backlog: deque[Entry],
        concurrency: int,
        on_renewed: Callable[[], Awaitable[None]],
    ) -> None:
        self._consumer = consumer
        self._settings = consumer.settings
        self._running = running
        self._backlog = backlog
        self._concurrency = concurrency
        self._on_renewed = on_renewed
        self._held: dict[EntryKey, Held] = {}
        self._hands: dict[UUID, EntryKey] = {}
        """Entry of each task this process is starting, running or ending: a copy of it (queued
        again after Redis lost its data) must not start here meanwhile, which START cannot
        tell, since the task's held key names this worker's consumer."""
        self._claim_after = 0.0
        """No expired lease is claimed before this (monotonic): see `_renew`."""
        self._outage = False
        self._reconnect = Reconnect(f"lease renewal of worker {consumer.name}")

    def held(self, key: EntryKey) -> Held:
        return self._held.setdefault(key, Held())

    def take(self, claim: Claim) -> None:
        """Queue the entries of `claim` to run here."""
        self._backlog.extend(claim.entries)
        for key, deliveries in claim.deliveries.items():
            self.held(key).deliveries = deliveries

    def take_hand(self, agent_id: UUID, key: EntryKey) -> bool:
        """Mark entry `key` as the one running task `agent_id` here; False when another entry
        of the same task does."""
        if self._hands.setdefault(agent_id, key) != key:
            return False
        self.held(key).in_hand = agent_id
        return True

    def release_hand(self, key: EntryKey) -> None:
        held = self._held.get(key)
        if held is None or held.in_hand is None:
            return
        if self._hands.get(held.in_hand) == key:
            del self._hands[held.in_hand]
        held.in_hand = None

    def ending(self, key: EntryKey) -> None:
        self.held(key).ending = True

    def _ending(self, key: EntryKey) -> bool:
        held = self._held.get(key)
        return held is not None and held.ending

    def ended(self, key: EntryKey) -> None:
        self.held(key).ended = True
        self.release_hand(key)  # a retry's next entry may start here at once

    def done(self, key: EntryKey) -> None:
        """The task of entry `key` is done here: forget the entry."""
        self.release_hand(key)
        self._held.pop(key, None)

    async def run(self) -> None:
        """Reset the idle time of every entry this worker holds, and claim expired ones."""
        self._claim_after = 0.0
        await supervise(self._reconnect, self._renew)

    async def _renew(self) -> None:
        lease_ms = int(self._settings.lease_seconds * 1000)
        await asyncio.sleep(self._settings.lease_seconds / 3)
        by_stream: dict[str, list[tuple[bytes, str]]] = {}
        # Entries being ended too: an end script retried through an outage (Redis out of
        # memory refuses it, not the renewal) must not lose its lease meanwhile.
        held_here = [*self._running.values(), *self._backlog, *self._consumer.delivered]
        for stream, entry_id, fields in held_here:
            held = self.held((stream, entry_id))
            if held.ended:
                continue
            if held.agent is None:
                ident = identify(fields)
                held.agent = str(ident[0]) if ident else "unknown"
            by_stream.setdefault(stream, []).append((entry_id, held.agent))
        try:
            for stream, entries in by_stream.items():
                lost = await self._consumer.renew(stream, entries, lease_ms)
                # An entry whose end script ran meanwhile is gone: not a loss.
                lost = {i for i in lost if not self._ending((stream, i))}
                if lost:
                    self._abandon(stream, lost)
            holds = [
                (h.in_hand, h.locks)
                for h in self._held.values()
                if h.locks and h.in_hand is not None and not h.ended
            ]
            if holds:
                self._abandon_unlocked(await self._consumer.renew_holds(holds))
            await self._on_renewed()
            # After an outage, leases look expired to Redis although their workers lived
            # through it: claim only once every live worker has had a lease period to
            # renew its own, counted from when this worker found Redis back (each worker
            # retries on its own backoff, up to `maximum` seconds apart), not from its last
            # failure, which may be older than a lease when Redis comes back.
            if self._outage:
                self._outage = False
                self._claim_after = (
                    time.monotonic() + self._settings.lease_seconds + self._reconnect.maximum
                )
            if (
                len(self._backlog) < self._concurrency
                and time.monotonic() > self._claim_after
                and await self._redis_up_long_enough()
            ):
                for stream in self._consumer.streams:
                    claim = await self._consumer.claim_expired(stream, lease_ms)
                    if claim.deliveries or claim.entries:
                        logger.warning(
                            "worker %s: took over %d task(s) whose lease expired on %s",
                            self._consumer.name,
                            len(claim.deliveries),
                            stream,
                        )
                        self.take(claim)
        except GroupMissingError:
            pass  # the worker's read finds it gone and creates the groups again
        except Exception:
            self._outage = True
            raise

    async def _redis_up_long_enough(self) -> bool:
        """False while Redis has been up for less than a lease plus the longest backoff.

        A restarted Redis (with its data) shows every lease held before the restart as
        expired, while their workers, alive, are still in backoff. A worker that saw the
        outage waits by `_claim_after`; this covers one that did not, such as a worker
        started after Redis came back. Asked at each claim round, as a restart can come at
        any time (one `INFO` a third of a lease)."""
        # `INFO` counts whole seconds of the wall clock: up to one second more than elapsed.
        uptime = await self._consumer.uptime() - 1
        return uptime >= self._settings.lease_seconds + self._reconnect.maximum

    def _abandon(self, stream: str, lost: set[bytes]) -> None:
        """Stop work on entries another worker took over: their outcome would be rejected."""
        for task, (entry_stream, entry_id, _) in list(self._running.items()):
            if entry_stream == stream and entry_id in lost:
                logger.warning(
                    "worker %s: lost the lease on %s %s; stopping its handler",
                    self._consumer.name,
                    stream,
                    entry_id,
                )
                task.cancel()
        kept = [e for e in self._backlog if not (e[0] == stream and e[1] in lost)]
        for _, entry_id, _ in [e for e in self._backlog if e[0] == stream and e[1] in lost]:
            self._held.pop((stream, entry_id), None)
        self._backlog.clear()
        self._backlog.extend(kept)

    def _abandon_unlocked(self, agents: set[UUID]) -> None:
        """Stop the handlers of tasks that lost a hold on one of their locks (it lapsed while
        Redis was unreachable): another task of the lock may run now, and two must not. Their
        entries stay pending here, unrenewed, so that they run again after a lease."""
        if not agents:
            return
        for task, (stream, entry_id, _) in list(self._running.items()):
            held = self._held.get((stream, entry_id))
            if held is None or held.ended or held.in_hand not in agents:
                continue
            logger.warning(
                "worker %s: task of %s %s lost its hold on a lock (Redis was unreachable "
                "for longer than a lease); stopping its handler: it runs again later",
                self._consumer.name,
                stream,
                entry_id,
            )
            held.ended = True  # no longer renewed: taken over after a lease
            task.cancel()

    async def release(self) -> None:
        """Hand back every entry still held, so that another worker runs it at once."""
        released = 0
        try:
            for stream in self._consumer.streams:
                released += await self._consumer.release(stream)
        except (*REDIS_ERRORS, BrokerError) as e:
            logger.warning("worker %s: could not release held tasks (%s)", self._consumer.name, e)
        if released:
            logger.info(
                "worker %s: handed back %d unfinished task(s)", self._consumer.name, released
            )


def identify(fields: dict[bytes, bytes]) -> tuple[UUID, str] | None:
    """The agent id and task name of an entry that does not decode as an event, if readable."""
    try:
        data = msgspec.json.decode(fields.get(events.EVENT_FIELD, b""))
        return UUID(str(data["agent_id"])), str(data.get("task_name", ""))
    except (msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None
