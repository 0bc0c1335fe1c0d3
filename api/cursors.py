"""Cursors: where the feed of every event is in each partition of the log, and its SSE id.

With `AGENTEXEC_PARTITIONS=P` the log is P streams, and an entry id is unique only within its
partition, so the global feed (`/api/events`) resumes from one position per partition. Its
`id:` is that cursor: the P positions in partition order, joined by `_`, each a stream id
`ms-seq` written short (`ms` alone when `seq` is 0, so a partition not read yet is `0`):
`1733500000000-3_0_1733500000012`. `0` alone (or `0-0`) is the beginning of every
partition. With one partition (the default) the cursor is the one position, `ms-seq`, as it
has always been.

A task's feed reads one partition: its `id:` is the plain stream id of its events, and it
also accepts the global feed's cursor (it takes its partition's position from it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from agentexec.positions import ORIGIN, Position

__all__ = ["SEPARATOR", "Cursor", "cursor_part"]

SEPARATOR = "_"
"""Between the positions of a cursor (URL- and header-safe, and never in a stream id)."""


@dataclass(frozen=True)
class Cursor:
    """One position per partition, in partition order: a feed has sent every event up to it."""

    positions: tuple[Position, ...]

    @classmethod
    def origin(cls, count: int) -> Cursor:
        """Before the first event of each of `count` partitions."""
        return cls((ORIGIN,) * count)

    @classmethod
    def parse(cls, text: str, count: int | None = None) -> Cursor:
        """The cursor written `text`, of `count` partitions (None: any number); `"0"` (or
        `"0-0"`) is the origin of every partition (of one, when `count` is None).

        Raises ValueError naming the value and the fix when it is not one.
        """
        try:
            positions = tuple(Position.parse(part) for part in text.split(SEPARATOR))
        except ValueError:
            raise ValueError(_bad(text, "is not an event id")) from None
        if positions == (ORIGIN,):  # `0` (or `0-0`): before everything
            return cls.origin(count or 1)
        if count is not None and len(positions) != count:
            raise ValueError(
                _bad(
                    text,
                    f"has {len(positions)} position{'s' if len(positions) > 1 else ''}, but "
                    f"this log has {count} partitions (AGENTEXEC_PARTITIONS), one position each",
                )
            )
        return cls(positions)

    def __str__(self) -> str:
        if len(self.positions) == 1:
            return str(self.positions[0])
        return SEPARATOR.join(map(cursor_part, self.positions))

    def __len__(self) -> int:
        return len(self.positions)

    def __iter__(self) -> Iterator[Position]:
        return iter(self.positions)

    def __getitem__(self, partition: int) -> Position:
        return self.positions[partition]

    def moved(self, partition: int, position: Position) -> Cursor:
        """This cursor with `partition` at `position`."""
        positions = list(self.positions)
        positions[partition] = position
        return Cursor(tuple(positions))


def cursor_part(position: Position) -> str:
    """How a cursor of several partitions writes `position` (`ms` alone when `seq` is 0)."""
    return str(position.ms) if position.seq == 0 else str(position)


def _bad(text: str, why: str) -> str:
    return (
        f"{text[:200]!r} {why}; use the `id:` of the last event received from this feed "
        "(e.g. '1700000000000-0', or one position per partition joined by '_' from "
        "/api/events when AGENTEXEC_PARTITIONS is above 1), or '0' for the beginning of "
        "the history."
    )
