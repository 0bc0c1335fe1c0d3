"""The SSE hub: one Redis reader per API process, fanning each new event out to every feed.

The reader tails the event log with a blocking `XREAD` from the last position it read, so no
event is skipped between reads. With several partitions it keeps a position per partition
and waits on every partition's log in one `XREAD` (on a Redis Cluster, where each is in a slot
of its own, in one read per partition, all at once).

Each subscription has a bounded buffer; the reader never waits for a subscriber: one whose
buffer is full is cut off (its feed ends, and its client resumes from its last event id), so
a slow or stuck client cannot hold the others back.

The reader starts with the first subscription and stops with the last. After a Redis outage
it goes on from where it was; when Redis deleted events it had not read yet meanwhile, every
subscription is told to re-read its history (`Resync`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import logging
from collections import deque
from collections.abc import Callable
from uuid import UUID

from agentexec.connection import Reconnect, supervise
from agentexec.runtime import Runtime, current

from .cursors import Cursor
from .history import History
from .messages import Delivery

__all__ = ["Closed", "CutOff", "Hub", "Resync", "Subscription"]

logger = logging.getLogger(__name__)

Accepts = Callable[[Delivery], bool]


class CutOff(Exception):
    """The subscriber fell too far behind: its buffer filled up."""


class Closed(Exception):
    """The server is shutting down: the feed ends (its client resumes elsewhere or later)."""


class Resync(Exception):
    """Events the subscriber had not received were deleted from Redis while the hub was
    disconnected: it must re-read its history from its last position."""


class Subscription:
    """A feed's place in the hub: a bounded buffer of deliveries, filled by the reader."""

    def __init__(self, agent_id: UUID | None, accepts: Accepts | None, size: int) -> None:
        self.agent_id = agent_id
        self.accepts = accepts
        self.size = size
        self._items: deque[Delivery] = deque()
        self._wake = asyncio.Event()
        self._failure: type[Exception] | None = None

    def offer(self, delivery: Delivery) -> bool:
        """Buffer `delivery`; False (and the subscription cut off) when the buffer is full."""
        if len(self._items) >= self.size:
            self._items.clear()  # a cut-off feed sends none of them: release them now
            self._fail(CutOff)
            return False
        self._items.append(delivery)
        self._wake.set()
        return True

    def close(self) -> None:
        self._fail(Closed)

    def resync(self) -> None:
        self._items.clear()
        self._fail(Resync)

    def _fail(self, failure: type[Exception]) -> None:
        if self._failure not in (CutOff, Closed):
            self._failure = failure
        self._wake.set()

    async def take(self) -> list[Delivery]:
        """Wait for deliveries and return all buffered ones, oldest first.

        Raises `CutOff` once the buffer overflowed, `Closed` once closed, `Resync` when
        history must be re-read.
        """
        while not self._items and self._failure is None:
            self._wake.clear()
            await self._wake.wait()
        if self._failure is not None:
            failure = self._failure
            if failure is Resync:
                self._failure = None
            raise failure()
        items = list(self._items)
        self._items.clear()
        return items


class Hub:
    """Tails the logs of `history`'s partitions for the feeds of one process (one event loop).

    With several partitions, one blocking XREAD waits on every partition's log on one server;
    on a Redis Cluster one per partition waits concurrently (`Broker.log_reads`). Each
    partition's events are dispatched in log order; those read together are merged by the time
    of their entry ids."""

    def __init__(
        self,
        history: History,
        *,
        redis_url: str | None = None,
        buffer: int = 1000,
        batch: int = 1000,
        runtime: Runtime | None = None,
    ) -> None:
        self.block_ms = (runtime or current()).settings.block_ms
        self.history = history
        self.redis_url = redis_url
        self.buffer = buffer
        self.batch = batch
        self.position: Cursor | None = None
        """The last position read in each partition (None while the reader is not running)."""
        self._by_agent: dict[UUID, set[Subscription]] = {}
        self._all: set[Subscription] = set()
        self._reader: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        count = len(history.partitions)
        self._logs = (
            history.keys().events
            if count == 1
            else f"the {count} partitions' logs of {history.partitions.prefix}"
        )
        self._reconnect = Reconnect(f"SSE hub on {self._logs}")

    @property
    def subscribers(self) -> int:
        return len(self._all) + sum(len(s) for s in self._by_agent.values())

    async def subscribe(
        self, agent_id: UUID | None = None, accepts: Accepts | None = None
    ) -> Subscription:
        """A new subscription to every event appended after the hub's current position (or
        only `agent_id`'s, or only those `accepts`), starting the reader when needed.

        Returns once the reader knows its position: read the history up to the tail after
        this, and every event is either in that history or delivered (or in both).
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (tests, a restarted app): start afresh
            self._by_agent.clear()
            self._all.clear()
            self._reader = self._started = None
            self._loop = loop
        subscription = Subscription(agent_id, accepts, self.buffer)
        if agent_id is None:
            self._all.add(subscription)
        else:
            self._by_agent.setdefault(agent_id, set()).add(subscription)
        try:
            if self._reader is None or self._reader.done():
                self._started = loop.create_future()
                self._reader = asyncio.create_task(self._read(self._started))
            assert self._started is not None
            await asyncio.shield(self._started)
        except BaseException:
            self.unsubscribe(subscription)
            raise
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Drop `subscription`; the reader stops with the last one."""
        if subscription.agent_id is None:
            self._all.discard(subscription)
        else:
            agents = self._by_agent.get(subscription.agent_id)
            if agents is not None:
                agents.discard(subscription)
                if not agents:
                    del self._by_agent[subscription.agent_id]
        if not self._all and not self._by_agent and self._reader is not None:
            self._reader.cancel()
            self._reader = None

    async def close(self) -> None:
        """Stop the reader; subscriptions get nothing more."""
        reader, self._reader = self._reader, None
        self._by_agent.clear()
        self._all.clear()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self, started: asyncio.Future[None]) -> None:
        self.position = None
        try:
            while self.position is None:
                try:
                    self.position = await self.history.tails()
                    self._reconnect.succeeded()
                except Exception as e:
                    await self._reconnect.failed(e)
            started.set_result(None)
            logger.info("SSE hub: reading %s from %s", self._logs, self.position)
            # Any error of a step is an outage: feeds wait, they are not cut off.
            groups = self.history.broker().log_reads()
            if len(groups) == 1:
                await supervise(self._reconnect, functools.partial(self._step, groups[0]))
            else:
                await asyncio.gather(*(self._supervised(group) for group in groups))
        except asyncio.CancelledError:
            logger.info("SSE hub: stopped at %s", self.position)
            raise
        except Exception as e:
            # The reader's boundary: feeds must not hang on a dead reader.
            logger.exception("SSE hub: reader failed; its feeds are cut off")
            if not started.done():
                started.set_exception(e)
            for subscription in [*self._all, *(s for v in self._by_agent.values() for s in v)]:
                subscription._fail(CutOff)
            raise
        finally:
            self.position = None

    async def _supervised(self, partitions: list[int]) -> None:
        reconnect = Reconnect(f"SSE hub on {self.history.keys(partitions[0]).events}")
        await supervise(reconnect, functools.partial(self._step, partitions, reconnect))

    async def _step(self, partitions: list[int], reconnect: Reconnect | None = None) -> None:
        reconnect = reconnect or self._reconnect
        assert self.position is not None
        # The history's Broker: the hub reads the logs the history bounds (`_check_deleted`).
        broker = self.history.broker()
        after = {p: self.position[p] for p in partitions}
        # Empty, too, when a stream was deleted under the read.
        pages = await broker.wait_logs(after, count=self.batch, block_ms=self.block_ms)
        if reconnect.down:
            reconnect.succeeded()
            for p in partitions:
                await self._check_deleted(p)
        read = [[(r.position.ms, p, r) for r in page.recorded] for p, page in pages.items()]
        for _, p, recorded in heapq.merge(*read, key=lambda item: item[:2]):
            # Only now: a step that fails before this reads the event again.
            self.position = self.position.moved(p, recorded.position)
            self._dispatch(Delivery.of(recorded, p))
        for p, page in pages.items():
            if page.last is not None:
                self.position = self.position.moved(p, page.last)

    def _dispatch(self, delivery: Delivery) -> None:
        agents = self._by_agent.get(delivery.event.agent_id)
        for group in (self._all, agents) if agents else (self._all,):
            for subscription in list(group):
                if subscription.accepts is None or subscription.accepts(delivery):
                    if not subscription.offer(delivery):
                        logger.info(
                            "SSE hub: a subscriber fell %d events behind; cut off",
                            subscription.size,
                        )
                        self.unsubscribe(subscription)

    async def _check_deleted(self, partition: int) -> None:
        """After an outage: were events of `partition` after our position deleted meanwhile,
        or does its log now end before it (Redis came back empty, or from an older
        snapshot)?"""
        assert self.position is not None
        position = self.position[partition]
        bounds = await self.history.bounds(partition)
        if bounds.tail < position:
            # Reading on from our position would skip every new id below it, silently.
            logger.warning(
                "SSE hub: the log of partition %d now ends at %s, before %s where it was "
                "read; reading from there, and feeds are reset",
                partition,
                bounds.tail,
                position,
            )
            self.position = self.position.moved(partition, bounds.tail)
            for group in [self._all, *self._by_agent.values()]:
                for subscription in group:
                    subscription.resync()
        elif not bounds.holds_after(position, archived=False):
            logger.warning(
                "SSE hub: events of partition %d after %s were deleted while Redis was "
                "unreachable; feeds re-read their history",
                partition,
                position,
            )
            for group in [self._all, *self._by_agent.values()]:
                for subscription in group:
                    subscription.resync()
