"""Feeds: what one SSE client receives. The history after its position, then the live tail.

The history is read up to the tail before the feed subscribes to the hub (a long replay would
overflow a subscription), then once more after subscribing: every event appended meanwhile is
in that second read or delivered by the hub, and positions already sent are skipped, so each
event is sent once and in order. An agent's feed ends after the agent's terminal event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from uuid import UUID

import anyio

from agentexec.connection import REDIS_ERRORS, Reconnect
from agentexec.positions import Position

from .cursors import SEPARATOR, Cursor, cursor_part
from .history import Gap
from .hub import Accepts, Closed, CutOff, Hub, Resync, Subscription
from .messages import Delivery, retry_frame

__all__ = ["RETRY_MS", "stream"]

logger = logging.getLogger(__name__)

RETRY_MS = 1000
"""How soon (ms) browsers reconnect after a dropped connection (the SSE `retry:` field)."""

CHUNK = 64 * 1024
"""Most bytes of frames joined into one send. The server buffers a send whole: a feed that
fell behind must not hand it megabytes at once (each feed's copy, for every stuck client)."""


async def stream(
    hub: Hub,
    after: Cursor,
    *,
    agent_id: UUID | None = None,
    accepts: Accepts | None = None,
    closing: anyio.Event | None = None,
) -> AsyncIterator[bytes]:
    """The frames of one feed: every event after `after` (a position per partition; only
    `agent_id`'s, or only those `accepts`), live, until the client leaves, falls too far
    behind, `closing` is set (the server shuts down) or, for an agent's feed, the agent's
    task ends. An agent's feed reads its partition's log and its frames' ids are stream ids;
    the feed of every event merges the partitions, and its ids are cursors (`Cursor`)."""
    feed = _Feed(hub, after, agent_id, accepts)
    subscription: Subscription | None = None
    watcher: asyncio.Task[None] | None = None
    reason = "client left"
    try:
        yield retry_frame(RETRY_MS)
        async for frame in feed.history_kept():
            yield frame
        if not feed.ended:
            subscription = await hub.subscribe(agent_id, accepts)
            if closing is not None:
                watcher = asyncio.create_task(_close_on(closing, subscription))
            async for frame in feed.history_kept():
                yield frame
        while not feed.ended:
            assert subscription is not None
            try:
                batch = await subscription.take()
            except Resync:
                async for frame in feed.history_kept():
                    yield frame
                continue
            for chunk in feed.live(batch):
                yield chunk
        reason = "task ended"
    except CutOff:
        reason = "cut off: too slow"
    except Closed:
        reason = "server shutting down"
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except Exception:
        # The feed's boundary: log and end the stream; the client resumes from its last id.
        logger.exception("feed of %s: failed at %s", feed.what, feed.position)
        reason = "failed"
    finally:
        if watcher is not None:
            watcher.cancel()
        if subscription is not None:
            hub.unsubscribe(subscription)
        logger.info(
            "feed of %s after %s: closed at %s, %d sent (%s)",
            feed.what,
            after,
            feed.position,
            feed.sent,
            reason,
        )


async def _close_on(closing: anyio.Event, subscription: Subscription) -> None:
    await closing.wait()
    subscription.close()


class _Feed:
    """Where one feed is: its position in each partition's log, and whether its agent's task
    ended."""

    def __init__(
        self, hub: Hub, after: Cursor, agent_id: UUID | None, accepts: Accepts | None
    ) -> None:
        self.hub = hub
        self.positions = list(after)
        """The last position sent (or skipped) in each partition."""
        self.agent_id = agent_id
        self.partition = None if agent_id is None else hub.history.of(agent_id)
        self.accepts = accepts
        self.what = f"agent {agent_id}" if agent_id else "all events"
        self.sent = 0
        self.ended = False
        # The ids of the feed of every event are cursors; of one partition, stream ids.
        self.by_cursor = agent_id is None and len(after) > 1
        self.reconnect = Reconnect(f"feed of {self.what}: history")

    @property
    def cursor(self) -> Cursor:
        return Cursor(tuple(self.positions))

    @property
    def position(self) -> Position | Cursor:
        """Where the feed is, as its ids say it."""
        return self.cursor if self.partition is None else self.positions[self.partition]

    async def history_kept(self) -> AsyncIterator[bytes]:
        """`history`, read on from where it stopped while Redis is unreachable: an outage
        (or a cluster node refusing connections under a burst of feeds) delays a feed with
        backoff, it does not end it."""
        while True:
            try:
                async for frame in self.history():
                    self.reconnect.succeeded()
                    yield frame
                self.reconnect.succeeded()
                return
            except REDIS_ERRORS as e:
                await self.reconnect.failed(e)

    async def history(self) -> AsyncIterator[bytes]:
        """The frames of the history after the feed's position, up to the tail."""
        if self.partition is None:
            items = self.hub.history.replay_all(self.cursor)
        else:
            items = _in(
                self.partition,
                self.hub.history.replay(
                    self.positions[self.partition],
                    agent_id=self.agent_id,
                    partition=self.partition,
                ),
            )
        async for partition, item in items:
            before = self.cursor
            self.positions[partition] = item.position
            if isinstance(item, Gap) or self.accepts is None or self.accepts(item):
                self.sent += 1
                if not self.by_cursor:
                    yield item.frame
                elif isinstance(item, Gap):
                    yield item.frame_in(before, self.cursor)
                else:
                    yield item.frame_with(self.cursor)
                if self.agent_id is not None and isinstance(item, Delivery) and item.terminal:
                    self.ended = True
                    return

    def live(self, batch: list[Delivery]) -> Iterator[bytes]:
        """The frames of a batch from the hub, without what the history already sent, joined
        into chunks of about `CHUNK` bytes at most."""
        frames: list[bytes] = []
        size = 0
        positions, by_cursor = self.positions, self.by_cursor
        # The cursor's text, kept by part: a feed of many partitions writes one per event.
        parts = list(map(cursor_part, positions)) if by_cursor else []
        for delivery in batch:
            partition = delivery.partition
            if delivery.position <= positions[partition]:
                continue
            positions[partition] = delivery.position
            if by_cursor:
                parts[partition] = delivery.part
                frame = delivery.frame_with(SEPARATOR.join(parts))
            else:
                frame = delivery.frame
            if frames and size + len(frame) > CHUNK:
                yield b"".join(frames)
                frames, size = [], 0
            self.sent += 1
            frames.append(frame)
            size += len(frame)
            if self.agent_id is not None and delivery.terminal:
                self.ended = True
                break
        if frames:
            yield b"".join(frames)


async def _in(
    partition: int, items: AsyncIterator[Delivery | Gap]
) -> AsyncIterator[tuple[int, Delivery | Gap]]:
    async for item in items:
        yield partition, item
