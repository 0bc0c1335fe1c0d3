"""Archive: every event the projector applied, kept in SQL under its partition and stream id.

The archive is the history that outlives Redis: the SSE history serves positions Redis no
longer holds from it, `replay` audits it, `restore` puts lost tasks back from it, `rebuild`
applies it again, and retention prunes it. This module is the only code that holds SQL over
the archived events (the `ArchivedEvent` table); everyone else goes through `Archive`.

Positions are `agentexec.positions.Position` values. An entry id is unique within its
partition's log only (`AGENTEXEC_PARTITIONS`), so the table's key is `(partition, stream_ms,
stream_seq)`, and an `Archive` works on one partition (0 by default, the only one with
`AGENTEXEC_PARTITIONS=1`). Reads come in pages, in log order, each page one statement
keyset-paginated on the table's key, so a read never holds more than a page and never rescans
what it already returned. An `Archive` of every partition (`partition=None`) reads them
merged in time order (stream id, then partition); it does not write.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
from collections.abc import Collection, Iterator, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    Table,
    and_,
    delete,
    func,
    or_,
    select,
    true,
    tuple_,
)

from agentexec.activity.models import Activity, ArchivedEvent
from agentexec.errors import EventDecodeError
from agentexec.eventlog import Recorded
from agentexec.events import TERMINAL, AnyEvent
from agentexec.positions import Position

from . import bulk

__all__ = ["Archive"]

_table: Table = ArchivedEvent.__table__  # type: ignore[assignment]
_activity: Table = Activity.__table__  # type: ignore[assignment]
_key = tuple_(_table.c.stream_ms, _table.c.stream_seq)
_IN_LIST = 1000
"""Values bound in one IN list: far below every dialect's parameter limit."""


class Archive:
    """The archived events of `partition` reached through `bind`; with `partition` None, of
    every partition, for reading only (writes raise ValueError).

    Bound to a `Connection`, every statement runs on it, inside the caller's transaction
    (the projector's batch, a rebuild). Bound to an `Engine`, each read page takes a
    connection of its own and gives it back before the page is yielded, and each write is
    its own transaction. Reads return pages of at most `page` events.
    """

    def __init__(
        self, bind: Engine | Connection, *, page: int = 5000, partition: int | None = 0
    ) -> None:
        self.bind = bind
        self.page = page
        self.partition = partition

    def partitions(self) -> list[int]:
        """The partitions that have archived events (this one's only, when it has one)."""
        found: list[int] = []
        with self._connect() as conn:
            while True:  # one index seek per partition, not a scan of the table
                low = _table.c.partition > found[-1] if found else true()
                if self.partition is not None:
                    low = and_(low, _table.c.partition == self.partition)
                nxt = conn.execute(select(func.min(_table.c.partition)).where(low)).scalar()
                if nxt is None:
                    return found
                found.append(int(nxt))

    def of(self, partition: int) -> Archive:
        """The archive of `partition`, through the same bind."""
        return Archive(self.bind, page=self.page, partition=partition)

    def insert(self, batch: Sequence[Recorded]) -> None:
        """Archive `batch`, which the caller knows is new: through COPY on PostgreSQL with
        psycopg (see `bulk`). An event archived before raises IntegrityError."""
        if not batch:
            return
        partition = self._writable()
        with self._begin() as conn:
            bulk.insert_new(conn, _table, [_row(a, partition) for a in batch])

    def unarchived(self, batch: Sequence[Recorded]) -> list[Recorded]:
        """The events of `batch` (in log order) that are not archived yet."""
        if not batch:
            return []
        first, last = batch[0].position, batch[-1].position
        query = select(_table.c.stream_ms, _table.c.stream_seq).where(
            self._mine(), _key >= tuple_(*first), _key <= tuple_(*last)
        )
        with self._connect() as conn:
            found = {(ms, seq) for ms, seq in conn.execute(query)}
        return [a for a in batch if a.position not in found]

    def archived(self, ids: Collection[str]) -> set[str]:
        """The stream ids of `ids` that are archived (in this partition; in any, for an
        archive of every partition)."""
        wanted = {Position.parse(i) for i in ids}
        millis = sorted({ms for ms, _ in wanted})
        found: set[str] = set()
        with self._connect() as conn:
            for start in range(0, len(millis), _IN_LIST):
                rows = conn.execute(
                    select(_table.c.stream_ms, _table.c.stream_seq).where(
                        self._mine(), _table.c.stream_ms.in_(millis[start : start + _IN_LIST])
                    )
                )
                found |= {f"{ms}-{seq}" for ms, seq in rows if (ms, seq) in wanted}
        return found

    def bounds(self) -> tuple[Position, Position] | None:
        """The first and the last archived position; None when the archive is empty. Of
        every partition: the first and the last of any."""
        ends = [self.of(p)._bounds() for p in self.partitions()]
        found = [b for b in ends if b is not None]
        if not found:
            return None
        return min(b[0] for b in found), max(b[1] for b in found)

    def last(self) -> Position | None:
        """The last archived position; None when the archive is empty. Of every partition:
        the last of any."""
        if self.partition is None:
            bounds = self.bounds()
            return None if bounds is None else bounds[1]
        with self._connect() as conn:
            return _last(conn, self.partition)

    def _bounds(self) -> tuple[Position, Position] | None:
        assert self.partition is not None
        with self._connect() as conn:
            first = conn.execute(
                select(_table.c.stream_ms, _table.c.stream_seq)
                .where(self._mine())
                .order_by(_table.c.stream_ms, _table.c.stream_seq)
                .limit(1)
            ).first()
            last = _last(conn, self.partition)
        if first is None or last is None:
            return None
        return Position(first[0], first[1]), last

    def read(
        self,
        after: Position | None = None,
        until: Position | None = None,
        *,
        agent_id: UUID | None = None,
        task_name: str | None = None,
        skip_undecodable: bool = False,
    ) -> Iterator[list[Recorded]]:
        """The archived events after `after` (exclusive; None: from the first) up to `until`
        (inclusive; None: to the last), in log order, in pages of at most `page` events.

        `agent_id` keeps one agent's events (an indexed query); `task_name` keeps every event
        of the agents that have an event of that task name anywhere in the archive. An event
        that does not decode raises `EventDecodeError`, or is left out with
        `skip_undecodable`. An empty page is never yielded. An archive of every partition
        yields them merged in time order (stream id, then partition), its pages of at most
        `page` events too.
        """
        if self.partition is None:
            return self._merged(after, until, agent_id, task_name, skip_undecodable)
        query = select(_table.c.stream_ms, _table.c.stream_seq, _table.c.data).where(self._mine())
        if until is not None:
            query = query.where(_key <= tuple_(*until))
        if agent_id is not None:
            query = query.where(_table.c.agent_id == agent_id)
        if task_name is not None:
            query = query.where(self._of_task(task_name))
        return self._pages(query, after, skip_undecodable)

    def read_agents(
        self, agent_ids: Sequence[UUID], kinds: Collection[type[AnyEvent]]
    ) -> Iterator[list[Recorded]]:
        """The archived events of `agent_ids` whose type is one of `kinds`, in pages: each
        agent's events come in log order (the pages of different agents interleave). An
        archive of every partition finds each agent in its partition (an agent's events are
        all in one)."""
        tags = [kind.__struct_config__.tag for kind in kinds]
        for start in range(0, len(agent_ids), _IN_LIST):
            part = agent_ids[start : start + _IN_LIST]
            query = select(
                _table.c.stream_ms, _table.c.stream_seq, _table.c.data, _table.c.partition
            ).where(self._mine(), _table.c.agent_id.in_(part), _table.c.type.in_(tags))
            yield from self._pages_by_partition(query)

    def prune(self, below: Position, *, batch_size: int) -> Iterator[int]:
        """Delete the archived events of this partition below `below`, except those of
        agents whose activity has not ended (restore queues those again from their archived
        `task.queued`): up to `batch_size` events per transaction, oldest first. Yields how
        many each transaction removed, until one removes none or there is nothing left."""
        self._writable()
        removable = and_(
            self._mine(),
            _key < tuple_(*below),
            _table.c.agent_id.not_in(
                select(_activity.c.agent_id).where(_activity.c.status.not_in(list(TERMINAL)))
            ),
        )
        while True:
            with self._begin() as conn:
                last = conn.execute(
                    select(_table.c.stream_ms, _table.c.stream_seq)
                    .where(removable)
                    .order_by(_table.c.stream_ms, _table.c.stream_seq)
                    .offset(batch_size - 1)
                    .limit(1)
                ).first()
                upto = removable if last is None else and_(removable, _key <= tuple_(*last))
                count: int = conn.execute(delete(_table).where(upto)).rowcount
            yield count
            if last is None or not count:
                return

    def _merged(
        self,
        after: Position | None,
        until: Position | None,
        agent_id: UUID | None,
        task_name: str | None,
        skip_undecodable: bool,
    ) -> Iterator[list[Recorded]]:
        def tagged(partition: int) -> Iterator[tuple[Position, int, Recorded]]:
            pages = self.of(partition).read(
                after,
                until,
                agent_id=agent_id,
                task_name=task_name,
                skip_undecodable=skip_undecodable,
            )
            return ((r.position, partition, r) for page in pages for r in page)

        merged = heapq.merge(*(tagged(p) for p in self.partitions()), key=lambda t: t[:2])
        while page := [r for _, _, r in itertools.islice(merged, self.page)]:
            yield page

    def _mine(self) -> ColumnElement[bool]:
        """The rows of this archive's partition (every row for every partition)."""
        return true() if self.partition is None else _table.c.partition == self.partition

    def _writable(self) -> int:
        if self.partition is None:
            raise ValueError("an Archive of every partition only reads; name a partition")
        return self.partition

    def _pages_by_partition(self, query: Select[Any]) -> Iterator[list[Recorded]]:
        """`_pages` for a query of several partitions: keyset-paginated on (partition,
        stream id), so that one id in two partitions is read twice."""
        key = tuple_(_table.c.partition, _table.c.stream_ms, _table.c.stream_seq)
        query = query.order_by(_table.c.partition, _table.c.stream_ms, _table.c.stream_seq).limit(
            self.page
        )
        cursor: tuple[int, int, int] | None = None
        while True:
            paged = query if cursor is None else query.where(key > tuple_(*cursor))
            with self._connect() as conn:
                rows = conn.execute(paged).all()
            if not rows:
                return
            page = _decoded([row[:3] for row in rows], False)
            if page:
                yield page
            if len(rows) < self.page:
                return
            cursor = (rows[-1][3], rows[-1][0], rows[-1][1])

    def _of_task(self, task_name: str) -> Any:
        named = and_(self._mine(), _table.c.task_name == task_name)
        with self._connect() as conn:
            agents = list(conn.execute(select(_table.c.agent_id).where(named).distinct()).scalars())
        if len(agents) <= _IN_LIST:
            # Resolved once: a subquery would scan the archive again for every page.
            return or_(named, _table.c.agent_id.in_(agents))
        return or_(named, _table.c.agent_id.in_(select(_table.c.agent_id).where(named)))

    def _pages(
        self, query: Select[Any], after: Position | None, skip_undecodable: bool
    ) -> Iterator[list[Recorded]]:
        query = query.order_by(_table.c.stream_ms, _table.c.stream_seq).limit(self.page)
        cursor = after
        while True:
            paged = query if cursor is None else query.where(_key > tuple_(*cursor))
            with self._connect() as conn:
                rows = conn.execute(paged).all()
            if not rows:
                return
            page = _decoded(rows, skip_undecodable)
            if page:
                yield page
            if len(rows) < self.page:
                return
            cursor = Position(rows[-1][0], rows[-1][1])

    def _connect(self) -> contextlib.AbstractContextManager[Connection]:
        if isinstance(self.bind, Connection):
            return contextlib.nullcontext(self.bind)
        return self.bind.connect()

    def _begin(self) -> contextlib.AbstractContextManager[Connection]:
        if isinstance(self.bind, Connection):
            return contextlib.nullcontext(self.bind)
        return self.bind.begin()


def _last(conn: Connection, partition: int) -> Position | None:
    row = conn.execute(
        select(_table.c.stream_ms, _table.c.stream_seq)
        .where(_table.c.partition == partition)
        .order_by(_table.c.stream_ms.desc(), _table.c.stream_seq.desc())
        .limit(1)
    ).first()
    return Position(row[0], row[1]) if row else None


def _decoded(rows: Sequence[Any], skip_undecodable: bool) -> list[Recorded]:
    page = []
    for ms, seq, data in rows:
        try:
            page.append(Recorded.from_archive(ms, seq, data))
        except EventDecodeError:
            if not skip_undecodable:
                raise
    return page


def _row(applied: Recorded, partition: int) -> dict[str, Any]:
    ms, seq = applied.position
    event = applied.event
    return {
        "partition": partition,
        "stream_ms": ms,
        "stream_seq": seq,
        "type": type(event).__struct_config__.tag,
        "agent_id": event.agent_id,
        "task_name": event.task_name,
        "ts": applied.ts,
        "data": applied.data.decode(),
    }
