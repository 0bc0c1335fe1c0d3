"""The filters of activity lists and statistics, as SQL conditions, and the list's cursor.

Every condition is one an index of `agentexec.activity.models` serves (see docs/activity.md,
"Indexes"). Times compare with `created_at` (when the task was first seen); naive datetimes
are taken as UTC.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict
from uuid import UUID

from sqlalchemy import ColumnElement, String, cast, literal_column, tuple_

from agentexec.events import Status

from .schemas import parse_agent_id

if TYPE_CHECKING:
    from .models import Activity

__all__ = [
    "ACTIVE_NAMES",
    "Cursor",
    "ListFilters",
    "MetadataFilter",
    "active",
    "conditions",
    "naive_utc",
    "statuses",
]

ACTIVE_NAMES = ("QUEUED", "RUNNING")
"""The stored names of the active statuses, in the order the partial index spells them."""

MetadataFilter = Mapping[str, str | int | float | bool]
"""Metadata keys and the values they must have (compared as JSON strings, numbers or
booleans by the type of the value given)."""


def active(model: type[Activity]) -> ColumnElement[bool]:
    """`status IN ('QUEUED', 'RUNNING')` with literal values, the predicate of the partial
    index `ix_..._activity_active`: a bound parameter would keep the planners (SQLite's,
    PostgreSQL's generic plans) from proving that the index covers the query."""
    return model.status.in_([literal_column(f"'{name}'") for name in ACTIVE_NAMES])


def naive_utc(value: datetime) -> datetime:
    """`value` as stored: naive UTC (a naive value is taken as UTC already)."""
    if value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def statuses(value: Status | str | Iterable[Status | str]) -> list[Status]:
    """One status or several, either spelling; raises ValueError naming a bad one."""
    items = [value] if isinstance(value, str) else list(value)
    found = []
    for item in items:
        try:
            found.append(Status(item))
        except ValueError:
            names = ", ".join(s.wire for s in Status)
            raise ValueError(f"status {item!r} is not one of {names}.") from None
    return found


def conditions(
    model: type[Activity],
    *,
    status: Status | str | Iterable[Status | str] | None = None,
    task_name: str | Iterable[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    parent_id: UUID | str | None = None,
    metadata: MetadataFilter | None = None,
    running_longer_than: timedelta | None = None,
    retried: bool | None = None,
    now: datetime | None = None,
) -> list[ColumnElement[bool]]:
    """The SQL conditions of these filters (all must hold). Raises ValueError for a bad
    status, a `since` not before `until`, or a negative `running_longer_than`."""
    found: list[ColumnElement[bool]] = []
    if status is not None:
        found.append(model.status.in_(statuses(status)))
    if task_name is not None:
        names = [task_name] if isinstance(task_name, str) else list(task_name)
        found.append(model.agent_type.in_(names))
    if since is not None and until is not None and naive_utc(since) >= naive_utc(until):
        raise ValueError(f"since {since.isoformat()} is not before until {until.isoformat()}.")
    if since is not None:
        found.append(model.created_at >= naive_utc(since))
    if until is not None:
        found.append(model.created_at < naive_utc(until))
    if parent_id is not None:
        found.append(model.parent_id == parse_agent_id(parent_id))
    for key, value in (metadata or {}).items():
        found.append(_metadata_equals(model, key, value))
    if running_longer_than is not None:
        if running_longer_than < timedelta(0):
            raise ValueError(f"running_longer_than {running_longer_than} is negative.")
        cutoff = naive_utc(now or datetime.now(UTC)) - running_longer_than
        found.append(model.status == Status.RUNNING)
        found.append(model.started_at < cutoff)
    if retried is not None:
        found.append(model.retries > 0 if retried else model.retries == 0)
    return found


def _metadata_equals(model: type[Activity], key: str, value: Any) -> ColumnElement[bool]:
    field: Any = model.metadata_[key]
    found: ColumnElement[bool]
    if isinstance(value, bool):
        found = field.as_boolean() == value
    elif isinstance(value, int):
        found = field.as_integer() == value
    elif isinstance(value, float):
        found = field.as_float() == value
    elif isinstance(value, str):
        found = cast(field.as_string(), String) == value
    else:
        raise ValueError(
            f"metadata filter {key}={value!r}: the value is a {type(value).__name__}; give a "
            "str, int, float or bool."
        )
    return found


class Cursor(NamedTuple):
    """Where a page of a list ended: its segment (0 active, 1 the others), and the
    `created_at` and row id of its last activity."""

    segment: int
    created_at: datetime
    row_id: UUID

    def encode(self) -> str:
        text = f"{self.segment}|{self.created_at.isoformat()}|{self.row_id.hex}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        """Raises ValueError naming the value when it is not a cursor a list returned."""
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
            segment, created, row = raw.split("|")
            cursor = cls(int(segment), datetime.fromisoformat(created), UUID(row))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise ValueError(
                f"cursor {value!r} is not one a list returned; pass the `next_cursor` of the "
                "previous page, or no cursor for the first page."
            ) from None
        if cursor.segment not in (0, 1):
            raise ValueError(f"cursor {value!r} names no segment of the list.")
        return cursor

    def after(self, model: type[Activity]) -> ColumnElement[bool]:
        """The rows after this one, newest first: `(created_at, id) < (..., ...)`, a range
        of the `(created_at, id)` indexes."""
        return tuple_(model.created_at, model.id) < tuple_(self.created_at, self.row_id)


class ListFilters(TypedDict, total=False):
    """The filters `ax.activity.list` and `ax.activity.stats` take (see `conditions`)."""

    status: Status | str | Iterable[Status | str] | None
    task_name: str | Iterable[str] | None
    since: datetime | None
    until: datetime | None
    parent_id: UUID | str | None
    metadata: MetadataFilter | None
    running_longer_than: timedelta | None
    retried: bool | None
