"""The SQL that aggregates activity rows for `agentexec.activity.statistics`: one statement
returning, per task name and overall (and per time bucket when asked), the counts by status,
the retries, and the count, sum, maximum and nearest-rank p50 and p95 of the queue waits and
run durations. A few rows reach Python, whatever the number of tasks.

Both databases compute the very same figures:

- PostgreSQL with `GROUPING SETS` and `percentile_disc(p) WITHIN GROUP (ORDER BY x)`, which
  takes the value at rank ceil(p * n): nearest-rank;
- SQLite, which has neither, with one aggregate per grouping set (`UNION ALL`) over
  `row_number()` windows, taking the value whose row number is ceil(p * n), written in
  integer arithmetic: (n + 1) / 2 and (95 * n + 99) / 100 (equal to the floating-point
  ceil(0.95 * n) for any count a table holds);
- sums in integer microseconds (the durations are whole microseconds), so they are exact and
  independent of the order rows are added in; maxima and percentiles are stored values.

Buckets are numbered by floor(microseconds since 1970-01-01 / bucket width in
microseconds), computed in SQL from the stored time (integer arithmetic on both databases).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    String,
    case,
    cast,
    func,
    literal_column,
    null,
    select,
    tuple_,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import array

from agentexec.events import Status

if TYPE_CHECKING:
    from .models import Activity

__all__ = ["DURATIONS", "PERCENTILES", "aggregate", "bucket_number", "errors", "percentiles"]

DURATIONS = {"wait": "queue_wait_seconds", "run": "run_seconds"}
"""The duration figures, by the prefix of their columns in an aggregate row."""

PERCENTILES = (50, 95)


def bucket_number(model: type[Activity], dialect: str, width_us: int) -> ColumnElement[Any]:
    """The bucket of `created_at`: floor(microseconds since 1970 / `width_us`)."""
    if dialect == "postgresql":
        micros: ColumnElement[Any] = cast(
            func.extract("epoch", model.created_at) * 1_000_000, BigInteger
        )
    else:
        # Stored as 'YYYY-MM-DD HH:MM:SS.ffffff'. The seconds from the text before the
        # fraction: given it, SQLite would round to the millisecond (59.9999 to the next minute).
        whole = func.substr(model.created_at, 1, 19)
        micros = cast(func.strftime("%s", whole), Integer) * 1_000_000 + cast(
            func.substr(model.created_at, 21, 6), Integer
        )
    width: ColumnElement[Any] = literal_column(str(int(width_us)), BigInteger)
    # Floor division on both databases, whose `/` and `%` truncate toward zero.
    return (micros - (micros % width + width) % width) // width


def _rank(p: int, n: ColumnElement[Any]) -> ColumnElement[Any]:
    """ceil(p / 100 * n) in integer arithmetic, at least 1."""
    return func.max((p * n + 99) // 100, 1)


def aggregate(
    model: type[Activity], dialect: str, found: Sequence[ColumnElement[bool]], width_us: int | None
) -> Select[Any]:
    """The statement of the figures of the rows matching `found`. Its rows carry `bucket`
    (None without `width_us`, and in the rows over all buckets) and `name` (None in the
    rows over all task names); a row with both None is always there, even for no rows.
    The percentiles of `wait` are `wait_p50` and `wait_p95`, or on PostgreSQL the list
    `wait_percentiles` of both (see `percentiles`); likewise for `run`."""
    raw: dict[str, Any] = {
        "name": model.agent_type,
        "status": type_coerce(model.status, String),
        "retries": model.retries,
        **{k: getattr(model, c) for k, c in DURATIONS.items()},
    }
    if width_us is not None:
        raw["bucket"] = bucket_number(model, dialect, width_us)
    columns = [e.label(k) for k, e in raw.items()]
    keys = ["bucket", "name"] if width_us is not None else ["name"]
    sets = [keys, ["bucket"], ["name"], []] if width_us is not None else [keys, []]
    if dialect == "postgresql":
        rows = select(*columns).where(*found).subquery()
        figures = _figures(rows, keys)
        for key in DURATIONS:
            # One sort of the group's values for both percentiles.
            ranks = func.percentile_disc(array([p / 100 for p in PERCENTILES]))
            values = ranks.within_group(rows.c[key])
            figures.append(values.label(f"{key}_percentiles"))
        grouping = func.grouping_sets(*(tuple_(*(rows.c[k] for k in s)) for s in sets))
        return select(*figures).group_by(grouping)
    parts = []
    for keyset in sets:
        windows = []
        for key in DURATIONS:
            value = raw[key]
            by = [raw[k] for k in keyset]
            windows += [
                func.row_number()
                .over(partition_by=[*by, value.is_(None)], order_by=value)
                .label(f"{key}_rn"),
                func.count(value).over(partition_by=by or None).label(f"{key}_n"),
            ]
        rows = select(*columns, *windows).where(*found).subquery()
        figures = _figures(rows, keys, keyset)
        for key in DURATIONS:
            rn, n = rows.c[f"{key}_rn"], rows.c[f"{key}_n"]
            figures += [
                func.max(case((rn == _rank(p, n), rows.c[key]))).label(f"{key}_p{p}")
                for p in PERCENTILES
            ]
        parts.append(select(*figures).group_by(*(rows.c[k] for k in keyset)))
    return parts[0].union_all(*parts[1:]) if len(parts) > 1 else parts[0]  # type: ignore[return-value]


def percentiles(row: Any, key: str) -> list[float | None]:
    """The percentiles (`PERCENTILES`) of `key` in an aggregate row, whatever the database."""
    both = row.get(f"{key}_percentiles", ())
    if both is not None and len(both) == len(PERCENTILES):
        return list(both)
    return [row.get(f"{key}_p{p}") for p in PERCENTILES]


def _figures(rows: Any, keys: list[str], keyset: list[str] | None = None) -> list[Any]:
    """The key columns (null outside `keyset`, when given) and the plain aggregates."""
    found: list[Any] = [
        rows.c[k].label(k) if keyset is None or k in keyset else null().label(k) for k in keys
    ]
    if "bucket" not in keys:
        found.insert(0, null().label("bucket"))
    found += [func.count().filter(rows.c.status == s.name).label(f"n_{s.name}") for s in Status]
    found += [
        func.count().filter(rows.c.retries > 0).label("retried"),
        func.coalesce(func.sum(rows.c.retries), 0).label("retries"),
    ]
    for key in DURATIONS:
        value = rows.c[key]
        found += [
            func.count(value).label(f"{key}_n"),
            func.sum(cast(func.round(value * 1_000_000), BigInteger)).label(f"{key}_sum"),
            func.max(value).label(f"{key}_max"),
        ]
    return found


def errors(
    model: type[Activity], dialect: str, found: Sequence[ColumnElement[bool]], width_us: int | None
) -> Select[Any]:
    """The errors of the matching tasks that ended ERROR: (task name, error, bucket or
    None), oldest first."""
    bucket = null() if width_us is None else bucket_number(model, dialect, width_us)
    query: Select[Any] = (
        select(model.agent_type, model.error, bucket)
        .where(*found, model.status == Status.ERROR, model.error.is_not(None))
        .order_by(model.created_at, model.id)
    )
    return query
