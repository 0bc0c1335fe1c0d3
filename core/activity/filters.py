"""The filters of activity lists and statistics, as SQL conditions, and the list's cursor.

Every condition is one an index of `agentexec.activity.models` serves (see docs/activity.md,
"Indexes"). Times compare with `created_at` (when the task was first seen); naive datetimes
are taken as UTC.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict
from uuid import UUID

from sqlalchemy import Boolean, ColumnElement, String, false, literal, literal_column, tuple_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from agentexec.events import Status

from .schemas import parse_agent_id

if TYPE_CHECKING:
    from .models import Activity

__all__ = [
    "ACTIVE_NAMES",
    "CURSOR_PATTERN",
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
"""Metadata keys and the values they must have: a bool matches a JSON boolean, an int or a
float a JSON number equal to it (2 matches 2 and 2.0), a str a value written that way (as
REST compares: "2" matches 2 and "2", "true" matches true and "true")."""


def active(model: type[Activity]) -> ColumnElement[bool]:
    """`status IN ('QUEUED', 'RUNNING')` with literal values, the predicate of the partial
    index `ix_..._activity_active`: a bound parameter would keep the planners (SQLite's,
    PostgreSQL's generic plans) from proving that the index covers the query."""
    return model.status.in_([literal_column(f"'{name}'") for name in ACTIVE_NAMES])


def naive_utc(value: datetime) -> datetime:
    """`value` as stored: naive UTC (a naive value is taken as UTC already); a time whose
    UTC falls outside the years 1-9999 is clamped to them."""
    if value.tzinfo is not None:
        try:
            return value.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            return datetime.min if value.year == 1 else datetime.max
    return value


def _storable(text: str) -> bool:
    """False for a string no database stores (a NUL character): it matches nothing."""
    return "\x00" not in text


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
    tenant: str | None = None,
    metadata_filter: MetadataFilter | None = None,
    now: datetime | None = None,
    counting: bool = False,
) -> list[ColumnElement[bool]]:
    """The SQL conditions of these filters (all must hold). `tenant` is short for
    `metadata={"tenant": ...}`, `metadata_filter` agentexec 0.3.0's name of `metadata`.
    Raises ValueError for a bad status, a negative `running_longer_than`, or filters that
    name one metadata key with two values."""
    metadata = metadata_of(metadata, metadata_filter, tenant)
    found: list[ColumnElement[bool]] = []
    if status is not None:
        found.append(model.status.in_(statuses(status)))
    if task_name is not None:
        names = [task_name] if isinstance(task_name, str) else list(task_name)
        found.append(model.agent_type.in_([n for n in names if _storable(n)]))
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
        # A literal, as the partial index of running rows spells it (see `active`).
        found.append(model.status == literal_column("'RUNNING'"))
        # A count reads `started_at` from the partial index of running rows; a page walks
        # `(status, created_at, id)` in order, which SQLite must be told (see `_Unranged`).
        started = model.started_at if counting else _Unranged(model.started_at)
        found.append(started < cutoff)
    if retried is not None:
        found.append(model.retries > 0 if retried else model.retries == 0)
    return found


def metadata_of(
    metadata: MetadataFilter | None,
    metadata_filter: MetadataFilter | None = None,
    tenant: str | None = None,
) -> MetadataFilter | None:
    """One metadata filter from `metadata`, `metadata_filter` (0.3.0's name) and `tenant`
    (`{"tenant": ...}`); ValueError naming the key when two of them ask different values."""
    if metadata_filter is None and tenant is None:
        return metadata
    merged: dict[str, Any] = {}
    parts = (
        ("metadata", metadata),
        ("metadata_filter", metadata_filter),
        ("tenant", None if tenant is None else {"tenant": tenant}),
    )
    for name, part in parts:
        for key, value in (part or {}).items():
            if key in merged and merged[key] != value:
                raise ValueError(
                    f"{name} asks {key}={value!r} but another filter asks {key}="
                    f"{merged[key]!r}; give each metadata key once."
                )
            merged[key] = value
    return merged


def _metadata_equals(model: type[Activity], key: str, value: Any) -> ColumnElement[bool]:
    if isinstance(value, bool):
        return _MetadataIs(model.metadata_, key, "boolean", value)
    if isinstance(value, int | float):
        return _MetadataIs(model.metadata_, key, "number", value)
    if isinstance(value, str):
        return _MetadataIs(model.metadata_, key, "text", value) if _storable(value) else false()
    raise ValueError(
        f"metadata filter {key}={value!r}: the value is a {type(value).__name__}; give a "
        "str, int, float or bool."
    )


class _MetadataIs(ColumnElement[bool]):
    """`metadata[key]` matches `value` as `MetadataFilter` says, with the same rows on every
    database. No cast of the stored text: a value of another type in some row (a float where
    an int is asked for, a word where a number is) must not fail the query on PostgreSQL."""

    __visit_name__ = "agentexec_metadata_is"
    inherit_cache = True
    type = Boolean()
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("kind", InternalTraversal.dp_string),
        ("field", InternalTraversal.dp_clauseelement),
        ("path", InternalTraversal.dp_clauseelement),
        ("value", InternalTraversal.dp_clauseelement),
        ("json", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: Any, key: str, kind: str, value: str | float) -> None:
        self.column = column
        self.kind = kind
        self.field = literal(key, String)
        self.path = literal(f'$."{key}"', String)  # as SQLAlchemy spells SQLite's JSON paths
        self.value = literal(value)
        self.json = literal(json.dumps(value), String)


@compiles(_MetadataIs, "postgresql")
def _metadata_is_postgresql(element: _MetadataIs, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = compiler.process(element.column, **kw), compiler.process(element.field, **kw)
    if element.kind == "text":
        return f"({column} ->> {key}) = {compiler.process(element.value, **kw)}"
    # jsonb equality compares JSON types and numbers by value.
    json_value = compiler.process(element.json, **kw)
    return f"CAST({column} -> {key} AS JSONB) = CAST({json_value} AS JSONB)"


@compiles(_MetadataIs)
def _metadata_is_sqlite(element: _MetadataIs, compiler: SQLCompiler, **kw: Any) -> str:
    column, path = compiler.process(element.column, **kw), compiler.process(element.path, **kw)
    kind, value = f"json_type({column}, {path})", compiler.process(element.value, **kw)
    extracted = f"json_extract({column}, {path})"
    if element.kind == "boolean":
        return f"{kind} = CASE WHEN {value} THEN 'true' ELSE 'false' END"
    if element.kind == "number":
        return f"({kind} IN ('integer', 'real') AND {extracted} = {value})"
    # Booleans as PostgreSQL's ->> writes them, not as json_extract's 1 and 0.
    text = (
        f"CASE {kind} WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
        f"ELSE CAST({extracted} AS TEXT) END"
    )
    return f"{text} = {value}"


class _Unranged(ColumnElement[Any]):
    """A column that SQLite must not read a range of an index for (`+column`): given
    `started_at < cutoff`, SQLite would read a running-too-long page through the partial
    index of running rows and sort them all by time, instead of walking
    `(status, created_at, id)` in order (5.9 ms against 0.15 ms at 2,000 running tasks).
    Other databases get the column as it is."""

    __visit_name__ = "agentexec_unranged"
    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: Any) -> None:
        self.column = column.expression
        self.type = self.column.type


@compiles(_Unranged)
def _unranged(element: _Unranged, compiler: SQLCompiler, **kw: Any) -> str:
    return str(compiler.process(element.column, **kw))


@compiles(_Unranged, "sqlite")
def _unranged_sqlite(element: _Unranged, compiler: SQLCompiler, **kw: Any) -> str:
    return f"+{compiler.process(element.column, **kw)}"


CURSOR_PATTERN = r"^[01]_[0-9]{1,17}_[0-9a-f]{32}$"
"""What a cursor looks like: `<segment>_<created_at in microseconds since 1970>_<row id>`."""

_EPOCH = datetime(1970, 1, 1)


class Cursor(NamedTuple):
    """Where a page of a list ended: its segment (0 active, 1 the others), and the
    `created_at` and row id of its last activity."""

    segment: int
    created_at: datetime
    row_id: UUID

    def encode(self) -> str:
        micros = (self.created_at - _EPOCH) // timedelta(microseconds=1)
        return f"{self.segment}_{micros}_{self.row_id.hex}"

    @classmethod
    def decode(cls, value: str) -> Cursor:
        """Raises ValueError naming the value when it is not a cursor a list returns."""
        try:
            if not re.fullmatch(CURSOR_PATTERN, value):
                raise ValueError(value)
            segment, micros, row = value.split("_")
            at = _EPOCH + timedelta(microseconds=int(micros))
            return cls(int(segment), at, UUID(row))
        except (ValueError, OverflowError):
            raise ValueError(
                f"cursor {value!r} is not one a list returns; pass the `next_cursor` of the "
                "previous page, or no cursor for the first page."
            ) from None

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
    tenant: str | None
    """Only the tasks of this tenant: short for `metadata={"tenant": ...}`."""
    metadata_filter: MetadataFilter | None
    """agentexec 0.3.0's name of `metadata`."""
