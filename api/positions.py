"""Positions in the event log: Redis stream entry ids, ordered as (milliseconds, sequence).

A feed's `id:` is the position of the event it carries; a client resuming with
`Last-Event-ID: P` gets every event after P.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["ORIGIN", "Position"]

_MAX = 2**63 - 1  # what SQL BIGINT holds; Redis ids stay far below it
_FORM = re.compile(r"(\d{1,20})(?:-(\d{1,20}))?")


class Position(NamedTuple):
    """A stream entry id. `str(position)` is the `ms-seq` form Redis and the feeds use."""

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
        match = _FORM.fullmatch(text.strip())
        if match is None or int(match.group(1)) > _MAX or int(match.group(2) or 0) > _MAX:
            raise ValueError(
                f"{text[:60]!r} is not an event id; use the `id:` of the last event received "
                "(e.g. '1700000000000-0'), or '0' for the beginning of the history."
            )
        return cls(int(match.group(1)), int(match.group(2) or 0))

    def before(self) -> Position:
        """The position just before this one (ORIGIN stays ORIGIN)."""
        if self.seq:
            return Position(self.ms, self.seq - 1)
        return Position(self.ms - 1, _MAX) if self.ms else self

    def after(self) -> Position:
        """The position just after this one."""
        return Position(self.ms, self.seq + 1) if self.seq < _MAX else Position(self.ms + 1, 0)


ORIGIN = Position(0, 0)
"""Before the first event: resuming from it replays the whole history."""
