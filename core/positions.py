"""Positions in the event log: Redis stream entry ids, ordered as (milliseconds, sequence).

Every reader of the log (the projector and its checkpoints, feeds, replay, the monitor) speaks
of positions with this one type. `str(position)` is the `ms-seq` form that Redis, the
checkpoint table and the feeds' `id:` use; the archive stores the two numbers in two columns.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import NamedTuple

__all__ = ["MAX_SEQ", "ORIGIN", "Position"]

MAX_SEQ = 2**63 - 1
"""The largest number either part may have: what SQL BIGINT holds (Redis ids stay far below)."""

_FORM = re.compile(r"(\d{1,20})(?:-(\d{1,20}))?")


class Position(NamedTuple):
    """A stream entry id: frozen, ordered by (`ms`, `seq`) like Redis orders its entries."""

    ms: int
    seq: int

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"

    @classmethod
    def parse(cls, text: str | bytes) -> Position:
        """`"1700000000000-3"` -> Position(1700000000000, 3); `"17"` means `17-0`.

        Raises ValueError naming the value when it is not a stream id.
        """
        if isinstance(text, bytes):
            text = text.decode("ascii", "replace")
        ms, _, seq = text.partition("-")
        if ms.isdecimal() and seq.isdecimal() and len(ms) < 19 and len(seq) < 19:
            return cls(int(ms), int(seq))  # the form Redis gives, below any limit
        match = _FORM.fullmatch(text.strip())
        if match is None or int(match.group(1)) > MAX_SEQ or int(match.group(2) or 0) > MAX_SEQ:
            raise ValueError(
                f"{text[:60]!r} is not an event id; use the `id:` of the last event received "
                "(e.g. '1700000000000-0'), or '0' for the beginning of the history."
            )
        return cls(int(match.group(1)), int(match.group(2) or 0))

    @classmethod
    def first_at(cls, when: datetime) -> Position:
        """The first position Redis could give an entry appended at `when` (naive: UTC)."""
        return cls(_ms(when), 0)

    @classmethod
    def last_at(cls, when: datetime) -> Position:
        """The last position Redis could give an entry appended at `when` (naive: UTC)."""
        return cls(_ms(when), MAX_SEQ)

    def before(self) -> Position:
        """The position just before this one (ORIGIN stays ORIGIN)."""
        if self.seq:
            return Position(self.ms, self.seq - 1)
        return Position(self.ms - 1, MAX_SEQ) if self.ms else self

    def after(self) -> Position:
        """The position just after this one."""
        return Position(self.ms, self.seq + 1) if self.seq < MAX_SEQ else Position(self.ms + 1, 0)


ORIGIN = Position(0, 0)
"""Before the first event: reading after it reads the whole history."""


def _ms(when: datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)
