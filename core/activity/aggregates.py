"""The SQL that aggregates activity rows for `agentexec.activity.statistics`: one statement
returning, per task name and overall (and per time bucket when asked), the counts by status,
the retries, and the count, sum, maximum and nearest-rank p50 and p95 of the queue waits and
run durations. A few rows reach Python, whatever the number of tasks.

Both databases compute the very same figures:

- PostgreSQL with `GROUPING SETS` and `percentile_disc(p) WITHIN GROUP (ORDER BY x)`, which
  takes the value at rank ceil(p * n): nearest-rank;
- SQLite, which has neither, with one plain aggregate per grouping set (`UNION ALL`), the
  percentiles taken in Python from the values (`values`, `ranked`) with the same rank:
  SQLite is in the process, so reading the values costs less than ranking them in SQL
  (`row_number()` windows were six times slower);
- sums in integer microseconds (the durations are whole microseconds), so they are exact and
  independent of the order rows are added in; maxima and percentiles are stored values.

Buckets are numbered by floor(microseconds since 1970-01-01 / bucket width in
microseconds), computed in SQL from the stored time (integer arithmetic on both databases).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    String,
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

__all__ = [
    "DURATIONS",
    "PERCENTILES",
    "aggregate",
    "bucket_number",
    "errors",
    "percentile",
    "percentiles",
    "ranked",
    "values",
]

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


def aggregate(
    model: type[Activity], dialect: str, found: Sequence[ColumnElement[bool]], width_us: int | None
) -> Select[Any]:
    """The statement of the figures of the rows matching `found`. Its rows carry `bucket`
    (None without `width_us`, and in the rows over all buckets) and `name` (None in the
    rows over all task names); a row with both None is always there, even for no rows.
    On PostgreSQL the list `wait_percentiles` holds the percentiles of `wait`, likewise
    `run_percentiles` (see `percentiles`)."""
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
    # SQLite has neither: one plain aggregate per grouping set; percentiles from `values`.
    rows = select(*columns).where(*found).subquery()
    parts = [
        select(*_figures(rows, keys, keyset)).group_by(*(rows.c[k] for k in keyset))
        for keyset in sets
    ]
    return parts[0].union_all(*parts[1:])  # type: ignore[return-value]


def values(
    model: type[Activity], dialect: str, found: Sequence[ColumnElement[bool]], width_us: int | None
) -> Select[Any]:
    """The durations of the matching tasks, for `ranked`: (bucket or None, name, wait,
    run)."""
    bucket = null() if width_us is None else bucket_number(model, dialect, width_us)
    query: Select[Any] = select(
        bucket, model.agent_type, *(getattr(model, c) for c in DURATIONS.values())
    ).where(*found)
    return query


def ranked(
    rows: Iterable[Any], bucketed: bool
) -> dict[tuple[Any, Any], dict[str, list[float | None]]]:
    """The percentiles of the durations `values` returned, per (bucket, name) as in the rows
    of `aggregate`: nearest-rank, the value at rank ceil(p / 100 * n) of the sorted values,
    as `percentile_disc` takes it."""
    found: defaultdict[tuple[Any, Any], list[list[float]]] = defaultdict(
        lambda: [[] for _ in DURATIONS]
    )
    for bucket, name, *durations in rows:
        groups = [(bucket, name), (bucket, None), (None, name), (None, None)]
        for group in groups if bucketed else groups[2:]:
            lists = found[group]
            for i, value in enumerate(durations):
                if value is not None:
                    lists[i].append(value)
    return {
        group: {
            key: [percentile(ordered, p) if ordered else None for p in PERCENTILES]
            for key, ordered in zip(DURATIONS, map(sorted, lists), strict=True)
        }
        for group, lists in found.items()
    }


def percentile(ordered: Sequence[float], p: float) -> float:
    """The nearest-rank `p`-th percentile (0 < p <= 100) of `ordered` (ascending, not
    empty): the value at rank ceil(p/100 * n)."""
    rank = max(math.ceil(p / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def percentiles(
    row: Any, key: str, ranks: dict[tuple[Any, Any], dict[str, list[float | None]]]
) -> Any:
    """The percentiles (`PERCENTILES`) of `key` in an aggregate row: from the row on
    PostgreSQL, else from `ranks` (see `ranked`)."""
    if f"{key}_percentiles" in row:
        return row[f"{key}_percentiles"]
    return ranks[row["bucket"], row["name"]][key]


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
