"""Refusals: a batch the database will not store, told apart from a database that is down.

A database that is unreachable, locked, short of resources or missing its tables fails every
batch alike: the projector tries the same batch again, with backoff, until it is back. A
database that refuses a batch's values (a NUL in PostgreSQL text, a string longer than its
column, an integer beyond the column's range) would refuse that batch forever while taking
any other: the projector then splits the batch until the offending event is alone, stores it
in a safe form (`storable`), and dead-letters it with its id and the reason if even that is
refused. Only data and integrity errors count as refusals: an unexpected error is retried as
an outage, so that a defect can never dead-letter every event.
"""

from __future__ import annotations

from typing import Any, cast

import msgspec
from sqlalchemy import Column, String, Table
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from agentexec import events
from agentexec.activity.models import Activity, ArchivedEvent
from agentexec.eventlog import Recorded

__all__ = ["TRUNCATED", "refused", "storable"]

TRUNCATED = "[truncated]"
"""Ends a string that was cut to fit its column."""

_REFUSING_CLASSES = ("22", "23")
"""SQLSTATE classes about the values sent: data exception, integrity constraint violation."""

_activity: Table = Activity.__table__  # type: ignore[assignment]
_archive: Table = ArchivedEvent.__table__  # type: ignore[assignment]


def _length(*columns: Column[Any]) -> int:
    return min(cast(String, c.type).length or 2**31 for c in columns)


_BOUNDED = {
    "task_name": _length(_activity.c.agent_type, _archive.c.task_name),
    "queue": _length(_activity.c.queue),
    "worker": _length(_activity.c.worker),
}
"""Event fields stored in columns of bounded length, and the length."""


def refused(error: BaseException) -> bool:
    """True when `error` says the database (or its driver) refused the values of the batch,
    which another batch would not meet; False when it says nothing about the values."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return False
    orig = error.orig if isinstance(error, StatementError) and error.orig is not None else error
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(sqlstate, str) and len(sqlstate) == 5:
        return sqlstate[:2] in _REFUSING_CLASSES
    if isinstance(error, DataError | IntegrityError):
        return True
    # Raised by a driver before anything reached the server (psycopg's NUL check, sqlite3's
    # integer range), or a driver error SQLAlchemy did not wrap.
    kinds = {cls.__name__ for cls in type(orig).__mro__}
    return isinstance(orig, ValueError | OverflowError) or bool(
        kinds & {"DataError", "IntegrityError"}
    )


def storable(recorded: Recorded) -> Recorded | None:
    """`recorded` with every NUL character escaped (as the four characters `\\x00`) and every
    string longer than its column cut to it, ending with `TRUNCATED`; None when there is
    nothing to change. The archive keeps this form, so a rebuild stores the same."""
    event = recorded.event
    changes: dict[str, Any] = {}
    for name in event.__struct_fields__:
        value = getattr(event, name)
        safe = _safe(value)
        limit = _BOUNDED.get(name)
        if limit is not None and isinstance(safe, str) and len(safe) > limit:
            safe = safe[: limit - len(TRUNCATED)] + TRUNCATED
        if safe is not value:
            changes[name] = safe
    if not changes:
        return None
    safe_event = msgspec.structs.replace(event, **changes)
    return Recorded(recorded.position, safe_event, events.encode(safe_event), recorded.source)


def _safe(value: Any) -> Any:
    """`value` with NUL escaped in every string it holds; `value` itself when it has none."""
    if isinstance(value, str):
        return value.replace("\x00", "\\x00") if "\x00" in value else value
    if isinstance(value, dict):
        items = [(_safe(k), _safe(v)) for k, v in value.items()]
        if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(items, value.items(), strict=True)):
            return value
        return dict(items)
    if isinstance(value, list):
        safe = [_safe(v) for v in value]
        return value if all(a is b for a, b in zip(safe, value, strict=True)) else safe
    return value
