"""Checkpoints: how far the projector has applied a stream, kept in SQL beside the read model.

A batch advances its checkpoint with a compare-and-set as the first statement of its
transaction. The row lock that statement takes (PostgreSQL) or the write lock (SQLite) is held
until commit, so of two projectors holding the same batch only one commits; the other gets
`FencedError` and rolls back. A checkpoint is stored in the text form of its `Position`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, Table, insert, select, update

from agentexec.activity.models import Checkpoint
from agentexec.errors import FencedError
from agentexec.positions import ORIGIN as _ORIGIN
from agentexec.positions import Position

__all__ = ["ORIGIN", "advance", "after", "later", "load", "parse_id", "reset"]

ORIGIN = str(_ORIGIN)
"""The position before the first entry of any stream."""

_table: Table = Checkpoint.__table__  # type: ignore[assignment]


def parse_id(entry_id: str) -> Position:
    """`"1700000000000-3"` -> `Position(1700000000000, 3)`; raises ValueError when either
    part is not an integer.

    Looser than `Position.parse`, which checks what clients send: a checkpoint moved back by
    hand may read `1000--1`, which is just below `1000-0`."""
    ms, _, seq = entry_id.partition("-")
    return Position(int(ms), int(seq or 0))


def after(a: str, b: str) -> bool:
    """True when stream id `a` comes after `b`."""
    return parse_id(a) > parse_id(b)


def later(a: str, b: str) -> str:
    """The later of two stream ids."""
    return a if parse_id(a) >= parse_id(b) else b


def load(conn: Connection, name: str, owner: str) -> str:
    """The checkpoint of stream `name`, created at `ORIGIN` when missing."""
    position = conn.execute(select(_table.c.position).where(_table.c.name == name)).scalar()
    if position is None:
        conn.execute(
            insert(_table).values(name=name, position=ORIGIN, owner=owner, updated_at=_now())
        )
        position = ORIGIN
    return str(position)


def advance(conn: Connection, name: str, expected: str, position: str, owner: str) -> None:
    """Move the checkpoint from `expected` to `position` in the caller's transaction.

    Raises `FencedError` (with the current position) when it is no longer at `expected`.
    """
    result = conn.execute(
        update(_table)
        .where(_table.c.name == name, _table.c.position == expected)
        .values(position=position, owner=owner, updated_at=_now())
    )
    if result.rowcount != 1:
        current = conn.execute(select(_table.c.position).where(_table.c.name == name)).scalar()
        raise FencedError(name, expected, current)


def reset(conn: Connection, name: str, position: str, owner: str) -> None:
    """Set the checkpoint unconditionally (used by rebuild, which holds the lease)."""
    load(conn, name, owner)
    conn.execute(
        update(_table)
        .where(_table.c.name == name)
        .values(position=position, owner=owner, updated_at=_now())
    )


def _now() -> datetime:
    # Naive UTC, as the column stores it: a plain DateTime binds an aware value as given.
    return datetime.now(UTC).replace(tzinfo=None)
