"""Projection of conversation sessions: the `session_items` table from the session events.

The table holds each session's items as they stand, one row per item keyed by (session id,
position). Each event says where it acts, and the rows from there on are replaced: an
`items_added` at position `index` drops the rows at `index` and after and inserts its items
there, an `item_popped` at `index` drops the rows from `index` on, a `cleared` drops them all.
So the table is a pure fold of the events, a rebuild from the archive gives the same rows, and
an event that disagrees with the rows (a session whose live state Redis lost and that started
over) still applies cleanly instead of stopping the projector.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from sqlalchemy import Connection, Table, delete

from agentexec.activity.models import SessionItem
from agentexec.eventlog import Recorded
from agentexec.events import SessionCleared, SessionEvent, SessionItemPopped, SessionItemsAdded

__all__ = ["apply"]

_items: Table = SessionItem.__table__  # type: ignore[assignment]


def apply(conn: Connection, batch: Sequence[Recorded]) -> None:
    """Apply the session events of `batch` (in stream order) to the `session_items` table."""
    for recorded in batch:
        event = recorded.event
        if not isinstance(event, SessionEvent):
            continue
        rows = _items.c.session_id == event.session_id
        if isinstance(event, SessionItemsAdded | SessionItemPopped):
            conn.execute(delete(_items).where(rows, _items.c.position >= event.index))
        elif isinstance(event, SessionCleared):
            conn.execute(delete(_items).where(rows))
        if isinstance(event, SessionItemsAdded) and event.items:
            conn.execute(
                _items.insert(),
                [
                    {
                        "session_id": event.session_id,
                        "position": event.index + offset,
                        "item": msgspec.json.decode(item),
                        "event_id": recorded.event_id,
                        "created_at": recorded.ts,
                    }
                    for offset, item in enumerate(event.items)
                ],
            )
