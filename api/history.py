"""History: the events after a position, from Redis while it holds them, else from the archive.

Redis keeps a hot tail of the log; the projector archives every event in SQL (keyed by its
stream id) before the tail is trimmed. `History.replay(after)` walks forward from `after`:

- From Redis while it holds every event after the position: nothing was deleted after it
  (`XDEL`: Redis 7's `max-deleted-entry-id`) and it is not below the first entry kept (`XTRIM`).
- Else from the archive (contiguous from its first to its last event), then from Redis
  beyond the archive's end; the archive is also read where it has events Redis no longer has
  (Redis came back empty), and for one agent's history (an indexed query, not a scan).
- Where neither has what comes next, the events are gone: `replay` yields a `Gap` naming the
  lost range, then goes on with what is left. A position beyond the log's end (Redis lost
  its latest events) gets a `Gap` back to what Redis holds beyond the archive, rather than
  silence. Replaying from `ORIGIN` ("from the beginning")
  starts at the oldest event kept, without a gap.

The log is trimmed only below what the projector archived (docs/projector.md); a trim past
that is not visible in Redis, and is only detected where it left the position older than
both Redis and the archive.

Every event comes once, in log order. Entries that do not decode are skipped (the projector
dead-letters them). With several partitions each partition's log (and its part of the
archive) is replayed on its own; `History.replay_all` merges them by entry time.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

from sqlalchemy import Engine

from agentexec.broker import Broker
from agentexec.connection import get_redis
from agentexec.partitions import Partitions
from agentexec.positions import ORIGIN, Position
from agentexec.runtime import Runtime, current
from agentexec.streams import Keys

from .cursors import Cursor
from .messages import Delivery, reset_frame

if TYPE_CHECKING:
    from agentexec.projector.archive import Archive

__all__ = ["Bounds", "Gap", "History"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gap:
    """Events after `last` up to `resume` are in neither Redis nor the archive; or, with
    `resume` below `last`, the log ends before the position a feed resumed from (Redis lost
    its latest events, or the id is not from this log) and goes on after `resume`."""

    last: Position
    resume: Position
    partition: int = 0

    @property
    def position(self) -> Position:
        return self.resume

    @property
    def frame(self) -> bytes:
        """The reset frame of a feed of this partition alone (its ids are stream ids)."""
        return reset_frame(self.last, self.resume, self._reason(""))

    def frame_in(self, before: Cursor, after: Cursor) -> bytes:
        """The reset frame of the feed of every partition, at `before` up to the gap and
        `after` past it (its `id:`)."""
        return reset_frame(before, after, self._reason(f" of partition {self.partition}"))

    def _reason(self, of: str) -> str:
        if self.resume < self.last:
            return (
                f"the log{of} ends before {self.last} (Redis lost its latest events, or the "
                f"id is not from this log); what it holds after {self.resume} follows: reload "
                "the state (REST) and keep reading"
            )
        return (
            f"events{of} after {self.last} up to {self.resume} are no longer kept; reload the "
            "state (REST) and keep reading"
        )


@dataclass(frozen=True)
class Bounds:
    """What Redis and the archive hold, at one moment."""

    deleted: Position
    """The latest entry deleted from Redis with XDEL (ORIGIN: none)."""
    removed: bool
    """Whether any entry was ever deleted or trimmed from the Redis stream."""
    redis_first: Position | None
    tail: Position
    """The last id Redis generated (ORIGIN for a log never written)."""
    archive: tuple[Position, Position] | None
    """First and last archived event; None without an archive or when it is empty."""

    def holds_after(self, position: Position, archived: bool) -> bool:
        """Whether Redis holds every event after `position`.

        Redis does not say up to where it trimmed; stream ids being sparse, a position
        below its first entry may or may not have missed events. Right after the archive's
        end (`archived`) it has not: the log is trimmed only below what was archived.
        """
        if position < self.deleted:
            return False
        if archived or not self.removed:
            return True
        if self.redis_first is None:
            return position >= self.tail
        return position >= self.redis_first.before()

    def resumes(self) -> list[Position]:
        """Positions from which Redis or the archive hold every later event."""
        points = [self.deleted]
        if self.archive is not None:
            points.append(self.archive[0].before())
        if self.redis_first is not None:
            points.append(max(self.deleted, self.redis_first.before()))
        else:
            points.append(self.tail)
        return points


class History:
    """Reads the log of each of `partitions` and the archive in `engine` (optional) in pages
    of `page`, with `runtime`'s settings (default the edge's). Each partition's history is
    read on its own (`replay`); `replay_all` merges them for the feed of every event."""

    def __init__(
        self,
        partitions: Partitions,
        engine: Engine | None,
        *,
        redis_url: str | None = None,
        page: int = 500,
        runtime: Runtime | None = None,
    ) -> None:
        self.partitions = partitions
        self.runtime = Runtime((runtime or current()).settings, partitions)
        self.engine = engine
        self.redis_url = redis_url
        self.page = page
        self.archives: list[Archive] | None = None
        if engine is not None:
            # Imported on use: an API without a read model loads no SQL models.
            from agentexec.projector.archive import Archive

            self.archives = [Archive(engine, page=page, partition=p) for p in partitions]

    def keys(self, partition: int = 0) -> Keys:
        return self.partitions.keys(partition)

    def of(self, agent_id: UUID) -> int:
        """The partition of `agent_id`'s events."""
        return self.partitions.of(agent_id)

    async def tail(self, partition: int = 0) -> Position:
        """The position of the latest event appended to `partition`'s log (ORIGIN when the
        log is empty)."""
        return (await self._redis_bounds(partition))[3]

    async def tails(self) -> Cursor:
        """The position of the latest event of each partition."""
        return Cursor(tuple(await asyncio.gather(*map(self.tail, self.partitions))))

    async def bounds(self, partition: int = 0) -> Bounds:
        (deleted, removed, first, tail), archive = await asyncio.gather(
            self._redis_bounds(partition), asyncio.to_thread(self._archive_bounds, partition)
        )
        return Bounds(deleted, removed, first, tail, archive)

    async def replay_all(self, after: Cursor) -> AsyncIterator[tuple[int, Delivery | Gap]]:
        """`replay` of every partition after its position in `after`, with the partition of
        each item: each partition's events in log order, merged across partitions by the
        time of their entry ids (ties: the lower partition first)."""
        if len(self.partitions) == 1:
            async for only in self.replay(after[0]):
                yield 0, only
            return
        replays = [self.replay(position, partition=p) for p, position in enumerate(after)]
        heads: list[tuple[int, int, Delivery | Gap]] = []
        try:
            for p, replay in enumerate(replays):
                first = await _next(replay)
                if first is not None:
                    heapq.heappush(heads, (first.position.ms, p, first))
            while heads:
                _, p, item = heapq.heappop(heads)
                yield p, item
                following = await _next(replays[p])
                if following is not None:
                    heapq.heappush(heads, (following.position.ms, p, following))
        finally:
            for replay in replays:
                await replay.aclose()

    async def replay(
        self, after: Position, *, agent_id: UUID | None = None, partition: int = 0
    ) -> AsyncGenerator[Delivery | Gap]:
        """Every event of `partition`'s log after `after` (only `agent_id`'s when given: pass
        its partition), in log order, up to the current tail, with a `Gap` where events are
        lost. From ORIGIN: the whole history kept, without a gap at its start."""
        position, start, archived = after, after == ORIGIN, False
        while True:
            b = await self.bounds(partition)
            end = max(b.tail, b.archive[1]) if b.archive is not None else b.tail
            if position > end:
                # Else the feed would wait, silently, for ids above its own. What Redis holds
                # beyond the archive may be new (a Redis that came back empty): sent again.
                kept = b.redis_first.before() if b.redis_first is not None else b.tail
                resume = max(kept, b.archive[1]) if b.archive is not None else kept
                logger.warning(
                    "feed: resumed from %s, beyond the log's end %s; reset to %s",
                    position,
                    end,
                    resume,
                )
                yield Gap(position, resume, partition)
                position = resume
                continue
            in_redis = b.holds_after(position, archived)
            if self._use_archive(position, b, agent_id is not None, start, in_redis):
                assert b.archive is not None
                async for item in self._from_archive(position, b.archive[1], agent_id, partition):
                    yield item
                position, start, archived = b.archive[1], False, True
                continue
            if in_redis:
                async for item in self._from_redis(position, agent_id, partition):
                    yield item
                return
            resume = min(p for p in b.resumes() if p > position)
            if not start:
                logger.info("feed: events after %s up to %s are gone; reset", position, resume)
                yield Gap(position, resume, partition)
            position, start, archived = resume, False, False

    @staticmethod
    def _use_archive(
        position: Position, b: Bounds, one_agent: bool, start: bool, in_redis: bool
    ) -> bool:
        if b.archive is None or position >= b.archive[1]:
            return False
        first = b.archive[0]
        redis_first = b.redis_first
        if position < first.before() and not (
            start and (redis_first is None or redis_first >= first)
        ):
            return False  # the archive does not reach back to `position`
        # The archive has events Redis lacks (Redis came back empty, say).
        lacking = redis_first is None or redis_first > max(position.after(), first)
        # One agent's history is an indexed query in the archive, in Redis a scan.
        return not in_redis or lacking or one_agent

    def broker(self) -> Broker:
        """The Broker of the partitions' logs, over the running loop's client of `redis_url`."""
        return Broker(self.runtime, get_redis(self.redis_url, self.runtime.settings))

    async def _redis_bounds(
        self, partition: int
    ) -> tuple[Position, bool, Position | None, Position]:
        b = await self.broker().log_bounds(partition)
        return b.deleted, b.removed, b.first, b.tail

    def _archive_bounds(self, partition: int) -> tuple[Position, Position] | None:
        bounds = self.archives[partition].bounds() if self.archives is not None else None
        if bounds is None:
            return None
        return Position(*bounds[0]), Position(*bounds[1])

    async def _from_redis(
        self, after: Position, agent_id: UUID | None, partition: int
    ) -> AsyncIterator[Delivery | Gap]:
        broker = self.broker()
        cursor: Position | None = after
        while True:
            page = await broker.read_log(cursor, count=self.page, partition=partition)
            for recorded in page.recorded:
                if agent_id is None or recorded.event.agent_id == agent_id:
                    yield Delivery.of(recorded, partition)
            if page.size < self.page:
                return
            cursor = page.last

    async def _from_archive(
        self, after: Position, last: Position, agent_id: UUID | None, partition: int
    ) -> AsyncIterator[Delivery | Gap]:
        assert self.archives is not None
        archive = self.archives[partition]
        pages = archive.read(after, last, agent_id=agent_id, skip_undecodable=True)
        # One page per thread hop; the archive gives its connection back before each page.
        while (page := await asyncio.to_thread(next, pages, None)) is not None:
            for recorded in page:
                yield Delivery.of(recorded, partition)


async def _next(items: AsyncIterator[Delivery | Gap]) -> Delivery | Gap | None:
    try:
        return await anext(items)
    except StopAsyncIteration:
        return None
