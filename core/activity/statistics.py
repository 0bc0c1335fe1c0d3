"""Statistics of the activity read model: per task name, counts by status, success and retry
rates, queue wait and run durations, the most frequent errors, and the same per time bucket.

The tasks of the window (`created_at` in [since, until)) are aggregated by one statement on
PostgreSQL, from one read of their rows on SQLite (see `agentexec.activity.aggregates`), and an
indexed query reads the errors of those that ended ERROR; SQLite and PostgreSQL give
identical results:

- percentiles are nearest-rank: p = the value at rank ceil(p/100 * n) of the n values in
  ascending order (a value that occurred; no interpolation);
- means are the exact sum of the values in microseconds over n, rounded to the microsecond,
  rates to 6 places;
- errors are normalised by `normalise_error` and counted.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Awaitable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, overload

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agentexec.events import Status

from .aggregates import aggregate, fold, percentile
from .aggregates import errors as error_query
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
    # Every alternative starts with a digit or a hex letter: checking that first lets the
    # engine pass over the other characters quickly (errors are normalised per call).
    r"(?=[\da-f])(?:"
    r"(?P<id>\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b)"
    r"|(?P<hex>\b0x[0-9a-f]+\b|\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b)"
    r"|(?P<n>\d+(?:\.\d+)?))",
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


def _durations(row: Any, key: str) -> DurationStatsSchema:
    n = row[f"{key}_n"]
    if not n:
        return DurationStatsSchema()
    p50, p95 = row[f"{key}_percentiles"]
    return DurationStatsSchema(
        count=n,
        mean=round(int(row[f"{key}_sum"]) / n / 1_000_000, 6),
        p50=p50,
        p95=p95,
        max=row[f"{key}_max"],
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


def _figures(
    task_name: str | None, row: Any | None, errors: list[tuple[str, str]]
) -> TaskStatsSchema:
    """The statistics of one aggregate row (None: no task) and its errors."""
    if row is None:
        return TaskStatsSchema(
            task_name=task_name,
            total=0,
            counts={s.wire: 0 for s in Status},
            success_rate=None,
            retry_rate=None,
            retries=0,
            queue_wait=DurationStatsSchema(),
            run=DurationStatsSchema(),
            errors=[],
        )
    counted = {s: int(row[f"n_{s.name}"]) for s in Status}
    total = sum(counted.values())
    ended = sum(counted[Status(s)] for s in _ENDED)
    return TaskStatsSchema(
        task_name=task_name,
        total=total,
        counts={s.wire: counted[s] for s in Status},
        success_rate=round(counted[Status.COMPLETE] / ended, 6) if ended else None,
        retry_rate=round(row["retried"] / total, 6) if total else None,
        retries=int(row["retries"]),
        queue_wait=_durations(row, "wait"),
        run=_durations(row, "run"),
        errors=_errors(errors),
    )


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
    tenant: str | None = None,
    metadata_filter: MetadataFilter | None = None,
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
    tenant: str | None = None,
    metadata_filter: MetadataFilter | None = None,
) -> Awaitable[ActivityStatsSchema]: ...
def stats(
    session: Session | AsyncSession,
    *,
    task_name: str | Iterable[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    metadata: MetadataFilter | None = None,
    bucket: timedelta | None = None,
    tenant: str | None = None,
    metadata_filter: MetadataFilter | None = None,
) -> ActivityStatsSchema | Awaitable[ActivityStatsSchema]:
    """Statistics of the tasks created in [`since`, `until`) (each bound optional; naive
    datetimes are UTC), of the names `task_name` (one or several; default all) whose
    metadata holds `metadata` (`metadata_filter`, agentexec 0.3.0's name, is the same; `tenant`
    is short for `metadata={"tenant": ...}`): `overall`, and one entry per task name.
    `ax.activity.stats`.

    With `bucket` (a timedelta of at least a second), also the same per bucket of creation
    time, buckets aligned on multiples of `bucket` since 1970-01-01 UTC, from the one holding
    the first task selected to the one holding the last, empty ones between included. Raises
    ValueError for a bucket under a second, or for more than `MAX_BUCKETS` buckets.

    Durations are per task, summed over its attempts (see docs/activity.md, "Timing");
    percentile and mean definitions are in this module's docstring. Aggregates in SQL (a
    few rows reach Python) but reads every task of the window: keep windows bounded on large
    tables (docs/benchmarks.md has the times)."""
    from .models import Activity

    width_us = None
    if bucket is not None:
        width_us = bucket // timedelta(microseconds=1)
        if width_us < 1_000_000:
            raise ValueError(f"bucket {bucket} is under a second; use e.g. timedelta(hours=1).")
    found = conditions(
        Activity,
        task_name=task_name,
        since=since,
        until=until,
        metadata=metadata,
        metadata_filter=metadata_filter,
        tenant=tenant,
    )
    low = None if since is None else naive_utc(since)
    high = None if until is None else naive_utc(until)
    span = select(func.min(Activity.created_at), func.max(Activity.created_at)).where(*found)

    def build(rows: Sequence[Any], found_errors: Sequence[Any]) -> ActivityStatsSchema:
        by_key = {(row["bucket"], row["name"]): row for row in rows}
        normalised: dict[str, str] = {}
        errors: defaultdict[tuple[Any, Any], list[tuple[str, str]]] = defaultdict(list)
        for name, message, number in found_errors:
            key = normalised.get(message)
            if key is None:
                key = normalised[message] = normalise_error(message)
            groups = ((number, name), (number, None), (None, name), (None, None))
            for group in groups if number is not None else groups[2:]:
                errors[group].append((key, message))
        names = sorted({name for _, name in by_key if name is not None})
        found_buckets = sorted({b for b, _ in by_key if b is not None})
        return ActivityStatsSchema(
            since=low,
            until=high,
            bucket_seconds=None if width_us is None else width_us / 1_000_000,
            overall=_figures(None, by_key.get((None, None)), errors[None, None]),
            tasks=[_figures(n, by_key[None, n], errors[None, n]) for n in names],
            buckets=[]
            if width_us is None or not found_buckets
            else [
                _bucket(number, width_us, by_key, errors)
                for number in range(found_buckets[0], found_buckets[-1] + 1)
            ],
        )

    def queries(dialect: str) -> tuple[Any, Any]:
        return (
            aggregate(Activity, dialect, found, width_us),
            error_query(Activity, dialect, found, width_us),
        )

    def figures(dialect: str, result: Any) -> Sequence[Any]:
        if dialect == "postgresql":
            return result.mappings().all()  # type: ignore[no-any-return]
        return fold(result.all(), width_us is not None)

    check_projected()
    # On the session's connection, not through the ORM: plain rows load several times faster.
    if is_async(session):

        async def run() -> ActivityStatsSchema:
            conn = await session.connection()
            if width_us is not None:
                _check_span((await conn.execute(span)).one(), width_us)
            rows_query, errors_query = queries(conn.dialect.name)
            rows = figures(conn.dialect.name, await conn.execute(rows_query))
            return build(rows, (await conn.execute(errors_query)).all())

        return run()
    conn = session.connection()
    if width_us is not None:
        _check_span(conn.execute(span).one(), width_us)
    rows_query, errors_query = queries(conn.dialect.name)
    rows = figures(conn.dialect.name, conn.execute(rows_query))
    return build(rows, conn.execute(errors_query).all())


def _number(at: datetime, width_us: int) -> int:
    """The bucket of `at`, as `aggregates.bucket_number` computes it in SQL."""
    return ((at - _EPOCH) // timedelta(microseconds=1)) // width_us


def _check_span(span: Any, width_us: int) -> None:
    """Refuse, before reading them, tasks spread over more than `MAX_BUCKETS` buckets."""
    first, last = span
    if first is None:
        return
    count = _number(last, width_us) - _number(first, width_us) + 1
    if count > MAX_BUCKETS:
        raise ValueError(
            f"a bucket of {timedelta(microseconds=width_us)} splits the tasks into "
            f"{count} buckets, more than {MAX_BUCKETS}; use a bigger bucket or "
            "a shorter window (since/until)."
        )


def _bucket(
    number: int,
    width_us: int,
    by_key: dict[tuple[Any, Any], Any],
    errors: defaultdict[tuple[Any, Any], list[tuple[str, str]]],
) -> StatsBucketSchema:
    start = _EPOCH + timedelta(microseconds=number * width_us)
    names = sorted(name for b, name in by_key if b == number and name is not None)
    return StatsBucketSchema(
        start=start.replace(tzinfo=UTC),
        end=(start + timedelta(microseconds=width_us)).replace(tzinfo=UTC),
        overall=_figures(None, by_key.get((number, None)), errors[number, None]),
        tasks=[_figures(n, by_key[number, n], errors[number, n]) for n in names],
    )
