"""History: the events after a position, from Redis while it holds them, else from the archive.

Redis keeps a hot tail of the log; the projector archives every event in SQL (keyed by its
stream id) before the tail is trimmed. `History.replay(after)` walks forward from `after`:

- Redis holds every event after its `max-deleted-entry-id` (Redis 7): from there on, Redis.
- Below that, or when the archive has events Redis no longer holds, the archive (contiguous
  from its first to its last event); then Redis beyond the archive's end.
- Where neither has what comes next, the events are gone: `replay` yields a `Gap` naming the
  lost range, then goes on with what is left. Replaying from `ORIGIN` ("from the beginning")
  starts at the oldest event kept, without a gap.

Every event comes once, in log order. Entries that do not decode are skipped (the projector
dead-letters them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import redis
from sqlalchemy import Engine, select, tuple_

from agentexec import events
from agentexec.connection import get_redis
from agentexec.errors import EventDecodeError
from agentexec.streams import Keys

from .messages import Delivery, TaskNames, reset_frame
from .positions import ORIGIN, Position

__all__ = ["Bounds", "Gap", "History"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gap:
    """Events after `last` up to `resume` are in neither Redis nor the archive."""

    last: Position
    resume: Position

    @property
    def position(self) -> Position:
        return self.resume

    @property
    def frame(self) -> bytes:
        return reset_frame(
            self.last,
            self.resume,
            f"events after {self.last} up to {self.resume} are no longer kept; reload the "
            "state (REST) and keep reading",
        )


@dataclass(frozen=True)
class Bounds:
    """What Redis and the archive hold, at one moment."""

    deleted: Position
    """Redis holds every event after this one (nothing was ever deleted: ORIGIN)."""
    redis_first: Position | None
    tail: Position
    """The last id Redis generated (ORIGIN for a log never written)."""
    archive: tuple[Position, Position] | None
    """First and last archived event; None without an archive or when it is empty."""


class History:
    """Reads the log of `keys` and the archive in `engine` (optional) in pages of `page`."""

    def __init__(
        self,
        keys: Keys,
        engine: Engine | None,
        names: TaskNames,
        *,
        redis_url: str | None = None,
        page: int = 500,
    ) -> None:
        self.keys = keys
        self.engine = engine
        self.names = names
        self.redis_url = redis_url
        self.page = page

    async def tail(self) -> Position:
        """The position of the latest event appended (ORIGIN when the log is empty)."""
        return (await self._redis_bounds())[2]

    async def bounds(self) -> Bounds:
        (deleted, first, tail), archive = await asyncio.gather(
            self._redis_bounds(), asyncio.to_thread(self._archive_bounds)
        )
        return Bounds(deleted, first, tail, archive)

    async def replay(
        self, after: Position, *, agent_id: UUID | None = None
    ) -> AsyncIterator[Delivery | Gap]:
        """Every event after `after` (only `agent_id`'s when given), in log order, up to the
        current tail, with a `Gap` where events are lost. From ORIGIN: the whole history
        kept, without a gap at its start."""
        position, start = after, after == ORIGIN
        while True:
            b = await self.bounds()
            if self._use_archive(position, b, agent_id is not None, start):
                assert b.archive is not None
                async for item in self._from_archive(position, b.archive[1], agent_id):
                    yield item
                position, start = b.archive[1], False
                continue
            if position >= b.deleted:
                async for item in self._from_redis(position, agent_id):
                    yield item
                return
            candidates = [b.deleted]
            if b.archive is not None:
                candidates.append(b.archive[0].before())
            resume = min(c for c in candidates if c > position)
            if not start:
                logger.info("feed: events after %s up to %s are gone; reset", position, resume)
                yield Gap(position, resume)
            position, start = resume, False

    @staticmethod
    def _use_archive(position: Position, b: Bounds, one_agent: bool, start: bool) -> bool:
        if b.archive is None or position >= b.archive[1]:
            return False
        first = b.archive[0]
        redis_lacks_start = b.redis_first is None or b.redis_first > first
        covers = position >= first.before() or (start and redis_lacks_start)
        if not covers:
            return False
        redis_lacks = b.redis_first is None or b.redis_first > max(position.after(), first)
        # One agent's history is an indexed query in the archive; in Redis, a scan.
        return position < b.deleted or redis_lacks or one_agent

    async def _redis_bounds(self) -> tuple[Position, Position | None, Position]:
        client = get_redis(self.redis_url)
        try:
            info: dict[str, Any] = await client.xinfo_stream(self.keys.events)
        except redis.ResponseError as e:
            if "no such key" not in str(e):
                raise
            return ORIGIN, None, ORIGIN
        first = info.get("first-entry")
        return (
            Position.parse(info.get("max-deleted-entry-id") or b"0-0"),
            Position.parse(first[0]) if first else None,
            Position.parse(info["last-generated-id"]),
        )

    def _archive_bounds(self) -> tuple[Position, Position] | None:
        if self.engine is None:
            return None
        from agentexec.activity.models import ArchivedEvent

        table = ArchivedEvent.__table__.c
        with self.engine.connect() as conn:
            first = conn.execute(
                select(table.stream_ms, table.stream_seq)
                .order_by(table.stream_ms, table.stream_seq)
                .limit(1)
            ).first()
            last = conn.execute(
                select(table.stream_ms, table.stream_seq)
                .order_by(table.stream_ms.desc(), table.stream_seq.desc())
                .limit(1)
            ).first()
        if first is None or last is None:
            return None
        return Position(first[0], first[1]), Position(last[0], last[1])

    async def _from_redis(
        self, after: Position, agent_id: UUID | None
    ) -> AsyncIterator[Delivery | Gap]:
        client = get_redis(self.redis_url)
        cursor = after
        while True:
            page: Any = await client.xrange(self.keys.events, f"({cursor}", "+", count=self.page)
            for raw_id, fields in page:
                cursor = Position.parse(raw_id)
                try:
                    event = events.decode_entry(fields)
                except EventDecodeError:
                    continue
                if agent_id is None or event.agent_id == agent_id:
                    yield Delivery(cursor, event, await self.names.resolve(event))
                else:
                    self.names.known(event)
            if len(page) < self.page:
                return

    async def _from_archive(
        self, after: Position, last: Position, agent_id: UUID | None
    ) -> AsyncIterator[Delivery | Gap]:
        cursor = after
        while True:
            rows = await asyncio.to_thread(self._archive_page, cursor, last, agent_id)
            for ms, seq, data in rows:
                cursor = Position(ms, seq)
                try:
                    event = events.decode(data.encode())
                except EventDecodeError:
                    continue
                yield Delivery(cursor, event, await self.names.resolve(event))
            if len(rows) < self.page:
                return

    def _archive_page(
        self, after: Position, last: Position, agent_id: UUID | None
    ) -> list[tuple[int, int, str]]:
        from agentexec.activity.models import ArchivedEvent

        assert self.engine is not None
        table = ArchivedEvent.__table__.c
        key = tuple_(table.stream_ms, table.stream_seq)
        query = select(table.stream_ms, table.stream_seq, table.data).where(
            key > tuple_(after.ms, after.seq), key <= tuple_(last.ms, last.seq)
        )
        if agent_id is not None:
            query = query.where(table.agent_id == agent_id)
        query = query.order_by(table.stream_ms, table.stream_seq).limit(self.page)
        with self.engine.connect() as conn:
            return [(int(ms), int(seq), str(data)) for ms, seq, data in conn.execute(query)]
