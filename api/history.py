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
dead-letters them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
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

    @property
    def position(self) -> Position:
        return self.resume

    @property
    def frame(self) -> bytes:
        if self.resume < self.last:
            reason = (
                f"the log ends before {self.last} (Redis lost its latest events, or the id "
                f"is not from this log); what it holds after {self.resume} follows: reload "
                "the state (REST) and keep reading"
            )
        else:
            reason = (
                f"events after {self.last} up to {self.resume} are no longer kept; reload the "
                "state (REST) and keep reading"
            )
        return reset_frame(self.last, self.resume, reason)


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
    """Reads the log of `keys` and the archive in `engine` (optional) in pages of `page`,
    with `runtime`'s settings (default the edge's)."""

    def __init__(
        self,
        keys: Keys,
        engine: Engine | None,
        *,
        redis_url: str | None = None,
        page: int = 500,
        runtime: Runtime | None = None,
    ) -> None:
        self.keys = keys
        self.runtime = Runtime((runtime or current()).settings, Partitions.single(keys))
        self.engine = engine
        self.redis_url = redis_url
        self.page = page
        self.archive: Archive | None = None
        if engine is not None:
            # Imported on use: an API without a read model loads no SQL models.
            from agentexec.projector.archive import Archive

            self.archive = Archive(engine, page=page)

    async def tail(self) -> Position:
        """The position of the latest event appended (ORIGIN when the log is empty)."""
        return (await self._redis_bounds())[3]

    async def bounds(self) -> Bounds:
        (deleted, removed, first, tail), archive = await asyncio.gather(
            self._redis_bounds(), asyncio.to_thread(self._archive_bounds)
        )
        return Bounds(deleted, removed, first, tail, archive)

    async def replay(
        self, after: Position, *, agent_id: UUID | None = None
    ) -> AsyncIterator[Delivery | Gap]:
        """Every event after `after` (only `agent_id`'s when given), in log order, up to the
        current tail, with a `Gap` where events are lost. From ORIGIN: the whole history
        kept, without a gap at its start."""
        position, start, archived = after, after == ORIGIN, False
        while True:
            b = await self.bounds()
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
                yield Gap(position, resume)
                position = resume
                continue
            in_redis = b.holds_after(position, archived)
            if self._use_archive(position, b, agent_id is not None, start, in_redis):
                assert b.archive is not None
                async for item in self._from_archive(position, b.archive[1], agent_id):
                    yield item
                position, start, archived = b.archive[1], False, True
                continue
            if in_redis:
                async for item in self._from_redis(position, agent_id):
                    yield item
                return
            resume = min(p for p in b.resumes() if p > position)
            if not start:
                logger.info("feed: events after %s up to %s are gone; reset", position, resume)
                yield Gap(position, resume)
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
        """The Broker of the log of `keys`, over the running loop's client of `redis_url`."""
        return Broker(self.runtime, get_redis(self.redis_url, self.runtime.settings))

    async def _redis_bounds(self) -> tuple[Position, bool, Position | None, Position]:
        b = await self.broker().log_bounds()
        return b.deleted, b.removed, b.first, b.tail

    def _archive_bounds(self) -> tuple[Position, Position] | None:
        bounds = self.archive.bounds() if self.archive is not None else None
        if bounds is None:
            return None
        return Position(*bounds[0]), Position(*bounds[1])

    async def _from_redis(
        self, after: Position, agent_id: UUID | None
    ) -> AsyncIterator[Delivery | Gap]:
        broker = self.broker()
        cursor: Position | None = after
        while True:
            page = await broker.read_log(cursor, count=self.page)
            for recorded in page.recorded:
                if agent_id is None or recorded.event.agent_id == agent_id:
                    yield Delivery.of(recorded)
            if page.size < self.page:
                return
            cursor = page.last

    async def _from_archive(
        self, after: Position, last: Position, agent_id: UUID | None
    ) -> AsyncIterator[Delivery | Gap]:
        assert self.archive is not None
        pages = self.archive.read(after, last, agent_id=agent_id, skip_undecodable=True)
        # One page per thread hop; the archive gives its connection back before each page.
        while (page := await asyncio.to_thread(next, pages, None)) is not None:
            for recorded in page:
                yield Delivery.of(recorded)
