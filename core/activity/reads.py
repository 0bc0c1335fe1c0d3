"""Activity reads: queries of the read model the projector maintains.

Each takes a SQLAlchemy `Session` and returns schemas; given an `AsyncSession` it returns an
awaitable of the same. Status, latest message and percentage live on the activity row, so a
list is one indexed query and needs no window functions.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Generator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, overload
from uuid import UUID

from sqlalchemy import (
    Executable,
    Integer,
    Select,
    String,
    bindparam,
    func,
    not_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.orm import Session, aliased, selectinload
from typing_extensions import TypeIs, Unpack

from agentexec.events import ACTIVE, Status

from . import counts
from .filters import Cursor, ListFilters, active, conditions, statuses
from .freshness import check_projected
from .schemas import (
    ActivityChildrenSchema,
    ActivityChildSchema,
    ActivityDetailSchema,
    ActivityListItemSchema,
    ActivityListSchema,
    parse_agent_id,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from .models import Activity

# The models are imported on first use, not with agentexec, so that
# `ax.CONF.table_prefix` may still be set in code after `import agentexec`.

T = TypeVar("T")

MAX_PAGE_SIZE = 1000
MAX_CHILDREN_SHOWN = 1000
"""Children listed in a `detail` (oldest first; its counts cover them all)."""


@overload
def list_activities(
    session: Session,
    page: int = 1,
    page_size: int = 20,
    *,
    cursor: str | None = None,
    **filters: Unpack[ListFilters],
) -> ActivityListSchema: ...
@overload
def list_activities(
    session: AsyncSession,
    page: int = 1,
    page_size: int = 20,
    *,
    cursor: str | None = None,
    **filters: Unpack[ListFilters],
) -> Awaitable[ActivityListSchema]: ...
def list_activities(
    session: Session | AsyncSession,
    page: int = 1,
    page_size: int = 20,
    *,
    cursor: str | None = None,
    **filters: Unpack[ListFilters],
) -> ActivityListSchema | Awaitable[ActivityListSchema]:
    """One page of activities (`page` counts from 1): QUEUED and RUNNING ones first, then
    the rest, each newest first (`created_at`, then row id, descending). `ax.activity.list`.

    Filters (all must hold): `status` (one or several), `task_name` (one or several),
    `since` / `until` (created at or after / before), `parent_id` (children of that task),
    `metadata` (a dict of values the metadata must hold), `running_longer_than` (a
    timedelta: RUNNING tasks whose latest attempt started longer ago), `retried` (True:
    retried at least once; False: never), `tenant` (short for `metadata={"tenant": ...}`,
    see docs/tenants.md; `metadata_filter` is agentexec 0.3.0's name of `metadata`).
    `total` counts the matching activities.

    `next_cursor` of a page, passed back as `cursor` (`page` is then not used), gives the next
    page by keyset: as fast deep in the list as at its start, and without the rows shifting
    under you as new tasks come in. Raises ValueError for a bad page, page size, filter or
    cursor, `InvalidAgentIdError` for a parent id that is not a UUID."""
    _check_page(page, page_size)
    from .models import Activity

    after = None if cursor is None else Cursor.decode(cursor)
    now = datetime.now(UTC)
    found = conditions(Activity, **filters, now=now)
    segments = [[*found, active(Activity)], [*found, not_(active(Activity))]]
    counted = conditions(Activity, **filters, now=now, counting=True)
    count_segments = [[*counted, active(Activity)], [*counted, not_(active(Activity))]]
    # A segment no status asked for can hold no row: neither count nor read it.
    asked = filters.get("status")
    possible = set(Status) if asked is None else set(statuses(asked))
    if filters.get("running_longer_than") is not None:
        possible &= {Status.RUNNING}
    wanted_segments = [bool(possible & set(ACTIVE)), bool(possible - set(ACTIVE))]

    def rows(segment: int, offset: int, limit: int, start: Cursor | None) -> Select[Any]:
        where = list(segments[segment])
        if start is not None:
            where.append(start.after(Activity))
        newest_first = (Activity.created_at.desc(), Activity.id.desc())
        if not offset:
            return (
                select(*_item_columns(Activity)).where(*where).order_by(*newest_first).limit(limit)
            )
        # Skip the offset in the index alone (an index-only scan of `(created_at, id)`
        # where the index covers the filters), then read the page's rows by id: not
        # every skipped row.
        page = select(Activity.id).where(*where).order_by(*newest_first)
        ids = page.offset(offset).limit(limit).subquery()
        return (
            select(*_item_columns(Activity))
            .join(ids, Activity.id == ids.c.id)
            .order_by(*newest_first)
        )

    def plan() -> Generator[Step, Any, ActivityListSchema]:
        found_counts = []
        counts_of = _count_queries(Activity, count_segments, filters)
        for query, needed in zip(counts_of, wanted_segments, strict=True):
            found_counts.append(int((yield query, _scalar)) if needed else 0)
        n_active, total = found_counts[0], sum(found_counts)
        # A cursor says where the page starts: `page` only counts pages without one.
        offset = (page - 1) * page_size if after is None else 0
        got: list[tuple[int, Any]] = []
        first = 0 if after is None else after.segment
        skip = offset
        for segment in range(first, 2):
            wanted = page_size + 1 - len(got)
            if wanted <= 0:
                break
            if not wanted_segments[segment]:
                continue
            if after is None and segment == 0 and skip >= n_active:
                skip -= n_active
                continue
            start = after if after is not None and segment == after.segment else None
            found_rows = yield rows(segment, skip, wanted, start), _all
            got.extend((segment, a) for a in found_rows)
            skip = 0
        page_rows = got[:page_size]
        more = len(got) > page_size
        last = page_rows[-1] if more else None
        return ActivityListSchema(
            items=[_list_item(a) for _, a in page_rows],
            total=total,
            page=page,
            page_size=page_size,
            next_cursor=None
            if last is None
            else Cursor(last[0], last[1].created_at, last[1].id).encode(),
        )

    return _drive(session, plan())


def _count_queries(
    model: type[Activity], segments: list[list[Any]], filters: ListFilters
) -> list[Select[Any]]:
    """How many rows each segment has: from the activity counts when the filters are only
    statuses and task names (no scan), else by counting the rows."""
    given = {k for k, v in filters.items() if v is not None}
    status, names = filters.get("status"), filters.get("task_name")
    names = [names] if isinstance(names, str) else names
    if given <= {"status", "task_name"} and all("\x00" not in n for n in names or ()):
        chosen = set(Status) if status is None else set(statuses(status))
        return [
            counts.total(chosen & part, None if names is None else list(names))
            for part in (set(ACTIVE), set(Status) - set(ACTIVE))
        ]
    return [select(func.count()).select_from(model).where(*where) for where in segments]


@overload
def detail(session: Session, agent_id: UUID | str) -> ActivityDetailSchema | None: ...
@overload
def detail(
    session: AsyncSession, agent_id: UUID | str
) -> Awaitable[ActivityDetailSchema | None]: ...
def detail(
    session: Session | AsyncSession, agent_id: UUID | str
) -> ActivityDetailSchema | Awaitable[ActivityDetailSchema | None] | None:
    """The activity of `agent_id` with its whole log, oldest entry first; None when the
    read model has no such activity (unknown, or not projected yet). Raises
    `InvalidAgentIdError` (a `ValueError`) for a string that is not a UUID."""
    aid = parse_agent_id(agent_id)
    from .models import Activity

    query = select(Activity).where(Activity.agent_id == aid).options(selectinload(Activity.logs))
    children_query = (
        select(Activity.agent_id, Activity.agent_type, Activity.status)
        .where(Activity.parent_id == aid)
        .order_by(Activity.created_at, Activity.id)
        .limit(MAX_CHILDREN_SHOWN)
    )

    def build(values: list[Any]) -> ActivityDetailSchema | None:
        activity, kid_rows, counts = values
        if activity is None:
            return None
        detail = ActivityDetailSchema.model_validate(activity)
        kids = [ActivityChildSchema(agent_id=a, agent_type=t, status=s) for a, t, s in kid_rows]
        return detail.model_copy(update={"children": kids, "children_counts": counts})

    return _run_all(
        session,
        [
            (query, lambda r: r.scalar_one_or_none()),
            (children_query, lambda r: r.all()),
            (_count_by_status(aid), _counts),
        ],
        build,
    )


@overload
def children(
    session: Session, agent_id: UUID | str, page: int = 1, page_size: int = 100
) -> ActivityChildrenSchema | None: ...
@overload
def children(
    session: AsyncSession, agent_id: UUID | str, page: int = 1, page_size: int = 100
) -> Awaitable[ActivityChildrenSchema | None]: ...
def children(
    session: Session | AsyncSession, agent_id: UUID | str, page: int = 1, page_size: int = 100
) -> ActivityChildrenSchema | Awaitable[ActivityChildrenSchema | None] | None:
    """The children of task `agent_id` (the tasks queued with it as `parent_id`), oldest
    first, one page of them (`page` counts from 1), with how many there are in each status.
    None when the read model has neither that activity nor any child of it (unknown, or not
    projected yet). Raises `InvalidAgentIdError` (a `ValueError`) for a string that is not
    a UUID. `ax.activity.children`."""
    aid = parse_agent_id(agent_id)
    _check_page(page, page_size)

    def build(rows: Any) -> ActivityChildrenSchema | None:
        first = rows[0]
        counts = {s.wire: int(first[i]) for i, s in enumerate(Status)}
        status = first.parent_status
        total = sum(counts.values())
        if status is None and not total:
            return None
        return ActivityChildrenSchema(
            parent_id=aid,
            parent_status=None if status is None else Status(status),
            items=[_list_item(row) for row in rows if row.id is not None],
            counts=counts,
            total=total,
            page=page,
            page_size=page_size,
        )

    values = {"parent": aid, "limit": page_size, "offset": (page - 1) * page_size}
    return _run(session, _children_query(), lambda result: build(result.all()), values)


@functools.cache
def _children_query() -> Select[Any]:
    """One statement, one round trip: the counts by status of the children of `:parent` (one
    row, even for no child), the parent's status, and the page of children (`:limit` from
    `:offset`, oldest first) joined to them (NULL when the page is empty). Built once: it
    takes longer to build than to run."""
    from .models import Activity

    parent = bindparam("parent", type_=Activity.__table__.c.parent_id.type)
    counted = select(
        *(func.count().filter(Activity.status == s).label(s.name) for s in Status)
    ).where(Activity.parent_id == parent)
    tally = counted.subquery()
    ids = (
        select(Activity.id)
        .where(Activity.parent_id == parent)
        .order_by(Activity.created_at, Activity.id)
        .limit(bindparam("limit", type_=Integer))
        .offset(bindparam("offset", type_=Integer))
        .subquery()
    )
    child = aliased(Activity)
    parent_status = (
        select(type_coerce(Activity.status, String))
        .where(Activity.agent_id == parent)
        .scalar_subquery()
    )
    return (
        select(tally, parent_status.label("parent_status"), *_item_columns(child))
        .select_from(tally)
        .outerjoin(ids, true())
        .outerjoin(child, child.id == ids.c.id)
        .order_by(child.created_at, child.id)
    )


@overload
def active_count(session: Session) -> int: ...
@overload
def active_count(session: AsyncSession) -> Awaitable[int]: ...
def active_count(session: Session | AsyncSession) -> int | Awaitable[int]:
    """How many activities are QUEUED or RUNNING."""
    from .models import Activity

    query = select(func.count()).select_from(Activity).where(active(Activity))
    return _run(session, query, lambda result: int(result.scalar_one()))


class LastEvent(NamedTuple):
    """An activity's status and the log position of the last event projected into it."""

    status: Status
    event_id: str


def last_event(session: Session, agent_id: UUID) -> LastEvent | None:
    """The status and last event of `agent_id`'s activity; None when the read model has no
    such activity. Unlike the reads above, never warns about a stale read model: the API
    asks this before every agent feed."""
    from .models import Activity

    row = session.execute(
        select(Activity.status, Activity.last_event_id).where(Activity.agent_id == agent_id)
    ).first()
    return None if row is None else LastEvent(row[0], row[1])


def checkpoint(session: Session, name: str) -> str | None:
    """The position up to which the projector has applied the stream `name`; None before it
    applied any event."""
    from .models import Checkpoint

    value = session.execute(select(Checkpoint.position).where(Checkpoint.name == name)).scalar()
    return str(value) if value else None


def is_async(session: Session | AsyncSession) -> TypeIs[AsyncSession]:
    """True for an `AsyncSession` (told apart without importing SQLAlchemy's asyncio
    extension, which needs greenlet)."""
    return inspect.iscoroutinefunction(getattr(session, "execute", None))


def _check_page(page: int, page_size: int) -> None:
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise ValueError(f"page {page!r} is not a whole number >= 1.")
    if not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size {page_size!r} is not a whole number from 1 to 1000.")


def _count_by_status(parent: UUID) -> Select[Status, int]:
    from .models import Activity

    return (
        select(Activity.status, func.count())
        .where(Activity.parent_id == parent)
        .group_by(Activity.status)
    )


def _counts(result: Any) -> dict[str, int]:
    """Children by status, every status present (0 for none), in `Status` order."""
    found = {Status(status): int(n) for status, n in result}
    return {status.wire: found.get(status, 0) for status in Status}


def _item_columns(model: type[Activity]) -> list[Any]:
    """The columns a list item shows (and the row id, for cursors): plain rows load several
    times faster than whole ORM objects."""
    return [
        model.id,
        model.agent_id,
        model.agent_type,
        model.created_at,
        model.updated_at,
        model.status,
        model.latest_message,
        model.latest_percentage,
        model.queued_at,
        model.started_at,
        model.finished_at,
        model.attempts,
        model.retries,
        model.worker,
        model.queue_wait_seconds,
        model.run_seconds,
        model.error,
        model.parent_id,
    ]


def _list_item(activity: Any) -> ActivityListItemSchema:
    """A list item from an `Activity` or a row of `_item_columns`."""
    return ActivityListItemSchema(
        agent_id=activity.agent_id,
        agent_type=activity.agent_type,
        created_at=activity.created_at,
        updated_at=activity.updated_at,
        status=activity.status,
        latest_log=activity.latest_message,
        latest_percentage=activity.latest_percentage,
        queued_at=activity.queued_at,
        started_at=activity.started_at,
        finished_at=activity.finished_at,
        attempts=activity.attempts,
        retries=activity.retries or 0,
        worker=activity.worker,
        queue_wait_seconds=activity.queue_wait_seconds,
        run_seconds=activity.run_seconds,
        error=activity.error,
        parent_id=activity.parent_id,
    )


Step = tuple[Executable, Callable[[Any], Any]]
"""A query and the function that takes its values from its result (at once: an ORM result
may load more)."""


def _scalar(result: Any) -> Any:
    return result.scalar_one()


def _all(result: Any) -> Any:
    return result.all()


def _drive(session: Session | AsyncSession, plan: Generator[Step, Any, T]) -> T | Awaitable[T]:
    """Run the queries `plan` yields, one after the other, sending each back its values.
    Returns what `plan` returns."""
    check_projected()
    if is_async(session):

        async def run() -> T:
            sent = None
            try:
                while True:
                    query, take = plan.send(sent)
                    sent = take(await session.execute(query))
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]

        return run()
    sent = None
    try:
        while True:
            query, take = plan.send(sent)
            sent = take(session.execute(query))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def _run(
    session: Session | AsyncSession,
    query: Executable,
    build: Callable[[Any], T],
    values: dict[str, Any] | None = None,
) -> T | Awaitable[T]:
    check_projected()
    if is_async(session):

        async def run() -> T:
            return build(await session.execute(query, values))

        return run()
    return build(session.execute(query, values))


def _run_all(
    session: Session | AsyncSession,
    queries: list[tuple[Executable, Callable[[Any], Any]]],
    build: Callable[[list[Any]], T],
) -> T | Awaitable[T]:
    """Run each query in order in one session and take its values with its function (at
    once: an ORM result may load more); `build` gets the values."""
    check_projected()
    if is_async(session):

        async def run() -> T:
            return build([take(await session.execute(query)) for query, take in queries])

        return run()
    return build([take(session.execute(query)) for query, take in queries])
