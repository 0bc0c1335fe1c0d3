"""Statistics of the activity read model: per task name, counts by status, success and retry
rates, queue wait and run durations, the most frequent errors, and the same per time bucket.

Two indexed queries select the few columns of the tasks in the window (`created_at` in
[since, until)), and the errors of those that ended ERROR; the figures are computed here, in
Python, the same way whatever the database, so SQLite and PostgreSQL give identical results:

- percentiles are nearest-rank: p = the value at rank ceil(p/100 * n) of the n values in
  ascending order (a value that occurred; no interpolation);
- means are `math.fsum` of the values over n, rounded to the microsecond, rates to 6 places;
- errors are normalised by `normalise_error` and counted.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Awaitable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, overload

from sqlalchemy import String, select, type_coerce
from sqlalchemy.orm import Session

from agentexec.events import Status

from .filters import MetadataFilter, conditions, naive_utc
from .freshness import check_projected
from .reads import is_async
from .schemas import (
    ActivityStatsSchema,
    DurationStatsSchema,
    ErrorCountSchema,
    StatsBucketSchema,
    TaskStatsSchema,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["MAX_BUCKETS", "normalise_error", "percentile", "stats"]

MAX_BUCKETS = 10_000
"""The most buckets one call returns; a window that needs more asks for a bigger bucket."""

TOP_ERRORS = 5

_ENDED = ("COMPLETE", "ERROR", "CANCELED")
_VARIABLE = re.compile(
    r"(?P<id>\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b)"
    r"|(?P<hex>\b0x[0-9a-f]+\b|\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b)"
    r"|(?P<n>\d+(?:\.\d+)?)",
    re.IGNORECASE,
)
_MAX_ERROR = 200


def normalise_error(message: str) -> str:
    """`message`'s first line with its variable parts replaced: UUIDs by `<id>`, hex
    numbers and digests by `<hex>`, numbers by `<n>`; cut at 200 characters. Errors that
    differ only in those parts count as one."""
    text = message.strip()
    line = text.splitlines()[0] if text else ""
    return _VARIABLE.sub(lambda m: f"<{m.lastgroup}>", line)[:_MAX_ERROR]


def percentile(ordered: Sequence[float], p: float) -> float:
    """The nearest-rank `p`-th percentile (0 < p <= 100) of `ordered` (ascending, not
    empty): the value at rank ceil(p/100 * n)."""
    rank = max(math.ceil(p / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def _durations(values: list[float]) -> DurationStatsSchema:
    if not values:
        return DurationStatsSchema()
    values.sort()
    return DurationStatsSchema(
        count=len(values),
        mean=round(math.fsum(values) / len(values), 6),
        p50=percentile(values, 50),
        p95=percentile(values, 95),
        max=values[-1],
    )


def _errors(errors: list[tuple[str, str]]) -> list[ErrorCountSchema]:
    """`errors` are (normalised, as written) pairs, oldest first."""
    counted = Counter(key for key, _ in errors)
    examples: dict[str, str] = {}
    for key, message in errors:
        examples.setdefault(key, message)
    # Most frequent first, ties by message: the same order on every database.
    top = sorted(counted.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_ERRORS]
    return [ErrorCountSchema(message=m, count=n, example=examples[m]) for m, n in top]


def _figures(task_name: str | None, rows: Sequence[Any], errors: list[Any]) -> TaskStatsSchema:
    """Rows are (task name, status name, retries, queue wait, run, ...) of the tasks; errors
    (task name, normalised, as written) of those that ended ERROR, oldest first (so the
    example is the same on every database). Column-wise, for speed on large windows."""
    _, statuses, retries, waits, runs = list(zip(*rows, strict=True))[:5] if rows else ((),) * 5
    counted = Counter(statuses)
    total = len(rows)
    retried = total - retries.count(0) - retries.count(None)
    ended = sum(counted[s] for s in _ENDED)
    return TaskStatsSchema(
        task_name=task_name,
        total=total,
        counts={s.wire: counted[s.name] for s in Status},
        success_rate=round(counted["COMPLETE"] / ended, 6) if ended else None,
        retry_rate=round(retried / total, 6) if total else None,
        retries=sum(filter(None, retries)),
        queue_wait=_durations([w for w in waits if w is not None]),
        run=_durations([r for r in runs if r is not None]),
        errors=_errors([e[1:3] for e in errors]),
    )


def _summary(
    rows: Sequence[Any], errors: list[Any]
) -> tuple[TaskStatsSchema, list[TaskStatsSchema]]:
    """Overall and per task name (see `_figures`)."""
    by_name: defaultdict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_name[row[0]].append(row)
    errors_by_name: defaultdict[str, list[Any]] = defaultdict(list)
    for error in errors:
        errors_by_name[error[0]].append(error)
    overall = _figures(None, rows, errors)
    return overall, [_figures(n, by_name[n], errors_by_name[n]) for n in sorted(by_name)]


_EPOCH = datetime(1970, 1, 1)


@overload
def stats(
    session: Session,
    *,
    task_name: str | Iterable[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    metadata: MetadataFilter | None = None,
    bucket: timedelta | None = None,
) -> ActivityStatsSchema: ...
@overload
def stats(
    session: AsyncSession,
    *,
    task_name: str | Iterable[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    metadata: MetadataFilter | None = None,
    bucket: timedelta | None = None,
) -> Awaitable[ActivityStatsSchema]: ...
def stats(
    session: Session | AsyncSession,
    *,
    task_name: str | Iterable[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    metadata: MetadataFilter | None = None,
    bucket: timedelta | None = None,
) -> ActivityStatsSchema | Awaitable[ActivityStatsSchema]:
    """Statistics of the tasks created in [`since`, `until`) (each bound optional; naive
    datetimes are UTC), of the names `task_name` (one or several; default all) whose
    metadata holds `metadata`: `overall`, and one entry per task name. `ax.activity.stats`.

    With `bucket` (a timedelta of at least a second), also the same per bucket of creation
    time, buckets aligned on multiples of `bucket` since 1970-01-01 UTC, from the one holding
    the first task selected to the one holding the last, empty ones between included. Raises
    ValueError for a bucket under a second, or for more than `MAX_BUCKETS` buckets.

    Durations are per task, summed over its attempts (see docs/activity.md, "Timing");
    percentile and mean definitions are in this module's docstring. Reads the tasks of the
    window: keep windows bounded on large tables (docs/benchmarks.md has the times)."""
    from .models import Activity

    width = None
    if bucket is not None:
        width = bucket.total_seconds()
        if width < 1:
            raise ValueError(f"bucket {bucket} is under a second; use e.g. timedelta(hours=1).")
    found = conditions(Activity, task_name=task_name, since=since, until=until, metadata=metadata)
    # The stored name, without the enum's per-row conversion.
    status = type_coerce(Activity.status, String)
    when = [Activity.created_at] if width is not None else []
    rows_query = select(
        Activity.agent_type,
        status,
        Activity.retries,
        Activity.queue_wait_seconds,
        Activity.run_seconds,
        *when,
    ).where(*found)
    errors_query = (
        select(Activity.agent_type, Activity.error, *when)
        .where(*found, Activity.status == Status.ERROR, Activity.error.is_not(None))
        .order_by(Activity.created_at, Activity.id)
    )
    low = None if since is None else naive_utc(since)
    high = None if until is None else naive_utc(until)

    def build(rows: Sequence[Any], found_errors: Sequence[Any]) -> ActivityStatsSchema:
        normalised: dict[str, str] = {}
        errors = []
        for name, message, *rest in found_errors:
            key = normalised.get(message)
            if key is None:
                key = normalised[message] = normalise_error(message)
            errors.append((name, key, message, *rest))
        overall, tasks = _summary(rows, errors)
        return ActivityStatsSchema(
            since=low,
            until=high,
            bucket_seconds=width,
            overall=overall,
            tasks=tasks,
            buckets=[] if width is None else _buckets(rows, errors, width),
        )

    check_projected()
    # On the session's connection, not through the ORM: plain rows load several times faster.
    if is_async(session):

        async def run() -> ActivityStatsSchema:
            conn = await session.connection()
            rows = (await conn.execute(rows_query)).all()
            return build(rows, (await conn.execute(errors_query)).all())

        return run()
    conn = session.connection()
    return build(conn.execute(rows_query).all(), conn.execute(errors_query).all())


def _buckets(rows: Sequence[Any], errors: list[Any], width: float) -> list[StatsBucketSchema]:
    """Rows and errors carry their `created_at` last."""
    if not rows:
        return []

    def index(at: datetime) -> int:
        return math.floor((at - _EPOCH).total_seconds() / width)

    row_buckets: defaultdict[int, list[Any]] = defaultdict(list)
    for row in rows:
        row_buckets[index(row[-1])].append(row)
    error_buckets: defaultdict[int, list[Any]] = defaultdict(list)
    for error in errors:
        error_buckets[index(error[-1])].append(error)
    first, last = min(row_buckets), max(row_buckets)
    if last - first + 1 > MAX_BUCKETS:
        raise ValueError(
            f"a bucket of {timedelta(seconds=width)} splits the tasks into "
            f"{last - first + 1} buckets, more than {MAX_BUCKETS}; use a bigger bucket or "
            "a shorter window (since/until)."
        )
    found = []
    for number in range(first, last + 1):
        start = _EPOCH + timedelta(seconds=number * width)
        overall, tasks = _summary(row_buckets.get(number, []), error_buckets.get(number, []))
        found.append(
            StatsBucketSchema(
                start=start.replace(tzinfo=UTC),
                end=(start + timedelta(seconds=width)).replace(tzinfo=UTC),
                overall=overall,
                tasks=tasks,
            )
        )
    return found
