"""The aggregation of activity rows for `agentexec.activity.statistics`: per task name and
overall (and per time bucket when asked), the counts by status, the retries, and the count,
sum, maximum and nearest-rank p50 and p95 of the queue waits and run durations.

Both databases compute the very same figures:

- PostgreSQL in one statement, with `GROUPING SETS` and `percentile_disc(p) WITHIN GROUP
  (ORDER BY x)`, which takes the value at rank ceil(p * n): nearest-rank; a few rows reach
  Python, whatever the number of tasks;
- SQLite, which has neither, in Python (`fold`) from the rows of the window: SQLite runs in
  the process, so reading the rows once costs less than aggregating them in SQL (measured:
  `row_number()` windows six times slower, plain aggregates plus the values read twice);
  percentiles at the same rank, sums from the same whole microseconds;
- sums in integer microseconds (the durations are whole microseconds), so they are exact and
  independent of the order rows are added in; maxima and percentiles are stored values.

Buckets are numbered by floor(microseconds since 1970-01-01 / bucket width in
microseconds), computed in SQL from the stored time (integer arithmetic on both databases).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
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
    "fold",
    "percentile",
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
    """On PostgreSQL, the statement of the figures of the rows matching `found`. Its rows
    carry `bucket` (None without `width_us`, and in the rows over all buckets) and `name`
    (None in the rows over all task names); a row with both None is always there, even for
    no rows. `wait_percentiles` holds the `PERCENTILES` of `wait`, likewise for `run`.
    On SQLite, the statement of the rows to `fold` into the same."""
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
    # SQLite has neither: the rows of the window, folded in Python by `fold`.
    return select(*columns).where(*found)


def fold(rows: Sequence[Any], bucketed: bool) -> list[dict[str, Any]]:
    """The rows `aggregate` returns on PostgreSQL, computed from the tasks' own rows (the
    statement `aggregate` returns on SQLite): the same figures by the same definitions."""
    groups: defaultdict[tuple[Any, Any], list[Any]] = defaultdict(list)
    for row in rows:
        groups[None, row[0]].append(row)
        if bucketed:
            groups[row[5], row[0]].append(row)
            groups[row[5], None].append(row)
    return [_fold(None, None, rows)] + [_fold(b, n, found) for (b, n), found in groups.items()]


def _fold(bucket: Any, name: Any, rows: Sequence[Any]) -> dict[str, Any]:
    """One group's figures, column by column (several times faster than row by row)."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * 5
    statuses, retries = Counter(columns[1]), columns[2]
    found: dict[str, Any] = {"bucket": bucket, "name": name}
    found.update({f"n_{s.name}": statuses[s.name] for s in Status})
    found["retried"] = len(rows) - retries.count(0) - retries.count(None)
    found["retries"] = sum(filter(None, retries))
    for key, values in zip(DURATIONS, columns[3:5], strict=True):
        ordered = sorted(v for v in values if v is not None)
        found[f"{key}_n"] = len(ordered)
        found[f"{key}_sum"] = sum(round(v * 1_000_000) for v in ordered)
        found[f"{key}_max"] = ordered[-1] if ordered else None
        found[f"{key}_percentiles"] = [
            percentile(ordered, p) if ordered else None for p in PERCENTILES
        ]
    return found


def percentile(ordered: Sequence[float], p: float) -> float:
    """The nearest-rank `p`-th percentile (0 < p <= 100) of `ordered` (ascending, not
    empty): the value at rank ceil(p/100 * n)."""
    rank = max(math.ceil(p / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def _figures(rows: Any, keys: list[str]) -> list[Any]:
    """The key columns and the plain aggregates."""
    found: list[Any] = [rows.c[k].label(k) for k in keys]
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
