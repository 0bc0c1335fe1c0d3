"""Statistics of the activity read model: per task name, counts by status, success and retry
rates, queue wait and run durations, the most frequent errors, and the same per time bucket.

One indexed query selects the few columns of the tasks in the window (`created_at` in
[since, until)); the figures are computed here, in Python, the same way whatever the
database, so SQLite and PostgreSQL give identical results:

- percentiles are nearest-rank: p = the value at rank ceil(p/100 * n) of the n values in
  ascending order (a value that occurred; no interpolation);
- means are `math.fsum` of the values over n, rounded to the microsecond, rates to 6 places;
- errors are normalised by `normalise_error` and counted.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, overload

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentexec.events import Status

from .filters import MetadataFilter, conditions, naive_utc
from .reads import _run
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

_ENDED = (Status.COMPLETE, Status.ERROR, Status.CANCELED)
_PATTERNS = [
    (
        re.compile(r"\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b", re.I),
        "<id>",
    ),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.I), "<hex>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
]
_MAX_ERROR = 200


def normalise_error(message: str) -> str:
    """`message`'s first line with its variable parts replaced: UUIDs by `<id>`, hex
    numbers and digests by `<hex>`, numbers by `<n>`; cut at 200 characters. Errors that
    differ only in those parts count as one."""
    line = message.strip().splitlines()[0] if message.strip() else ""
    for pattern, placeholder in _PATTERNS:
        line = pattern.sub(placeholder, line)
    return line[:_MAX_ERROR]


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


@dataclass
class _Tally:
    """What the statistics of one group of tasks are computed from."""

    counts: Counter[Status] = field(default_factory=Counter)
    retried: int = 0
    retries: int = 0
    waits: list[float] = field(default_factory=list)
    runs: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, status: Status, retries: int, wait: Any, run: Any, error: Any) -> None:
        self.counts[status] += 1
        if retries:
            self.retried += 1
            self.retries += retries
        if wait is not None:
            self.waits.append(float(wait))
        if run is not None:
            self.runs.append(float(run))
        if status is Status.ERROR and error:
            key = normalise_error(error)
            self.errors[key] += 1
            self.examples.setdefault(key, error)

    def schema(self, task_name: str | None) -> TaskStatsSchema:
        total = sum(self.counts.values())
        ended = sum(self.counts[s] for s in _ENDED)
        # Most frequent first, ties by message: the same order on every database.
        top = sorted(self.errors.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_ERRORS]
        return TaskStatsSchema(
            task_name=task_name,
            total=total,
            counts={s.wire: self.counts[s] for s in Status},
            success_rate=round(self.counts[Status.COMPLETE] / ended, 6) if ended else None,
            retry_rate=round(self.retried / total, 6) if total else None,
            retries=self.retries,
            queue_wait=_durations(self.waits),
            run=_durations(self.runs),
            errors=[ErrorCountSchema(message=m, count=n, example=self.examples[m]) for m, n in top],
        )


class _Group:
    def __init__(self) -> None:
        self.overall = _Tally()
        self.tasks: dict[str, _Tally] = {}

    def add(self, name: str, *values: Any) -> None:
        self.overall.add(*values)
        self.tasks.setdefault(name, _Tally()).add(*values)

    def schemas(self) -> tuple[TaskStatsSchema, list[TaskStatsSchema]]:
        return self.overall.schema(None), [self.tasks[n].schema(n) for n in sorted(self.tasks)]


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
    percentile and mean definitions are in this module's docstring. Reads every task of the
    window: keep windows bounded on large tables (a day of 40,000 tasks reads in ~50 ms)."""
    from .models import Activity

    width = None
    if bucket is not None:
        width = bucket.total_seconds()
        if width < 1:
            raise ValueError(f"bucket {bucket} is under a second; use e.g. timedelta(hours=1).")
    found = conditions(Activity, task_name=task_name, since=since, until=until, metadata=metadata)
    query = select(
        Activity.agent_type,
        Activity.status,
        Activity.retries,
        Activity.queue_wait_seconds,
        Activity.run_seconds,
        Activity.error,
        Activity.created_at,
    ).where(*found)
    low = None if since is None else naive_utc(since)
    high = None if until is None else naive_utc(until)

    def build(result: Any) -> ActivityStatsSchema:
        rows = result.all()
        group = _Group()
        for name, status, retries, wait, run, error, _ in rows:
            group.add(name, Status(status), retries or 0, wait, run, error)
        overall, tasks = group.schemas()
        buckets = [] if width is None else _buckets(rows, width)
        return ActivityStatsSchema(
            since=low,
            until=high,
            bucket_seconds=width,
            overall=overall,
            tasks=tasks,
            buckets=buckets,
        )

    return _run(session, query, build)


def _buckets(rows: list[Any], width: float) -> list[StatsBucketSchema]:
    if not rows:
        return []

    def index(at: datetime) -> int:
        return math.floor((at - _EPOCH).total_seconds() / width)

    first = min(index(r[6]) for r in rows)
    last = max(index(r[6]) for r in rows)
    if last - first + 1 > MAX_BUCKETS:
        raise ValueError(
            f"a bucket of {timedelta(seconds=width)} splits the tasks into "
            f"{last - first + 1} buckets, more than {MAX_BUCKETS}; use a bigger bucket or "
            "a shorter window (since/until)."
        )
    groups = [_Group() for _ in range(first, last + 1)]
    for name, status, retries, wait, run, error, created in rows:
        groups[index(created) - first].add(name, Status(status), retries or 0, wait, run, error)
    found = []
    for offset, group in enumerate(groups):
        start = _EPOCH + timedelta(seconds=(first + offset) * width)
        overall, tasks = group.schemas()
        found.append(
            StatsBucketSchema(
                start=start.replace(tzinfo=UTC),
                end=(start + timedelta(seconds=width)).replace(tzinfo=UTC),
                overall=overall,
                tasks=tasks,
            )
        )
    return found
