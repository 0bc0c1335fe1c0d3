"""Archive: every event the projector applied, kept in SQL under its stream id.

The archive is the history that outlives Redis: the SSE history serves positions Redis no
longer holds from it, `replay` audits it, `restore` puts lost tasks back from it, `rebuild`
applies it again, and retention prunes it. This module is the only code that holds SQL over
the archived events (the `ArchivedEvent` table); everyone else goes through `Archive`.

Positions are `agentexec.positions.Position` values. Reads come in
pages, in log order, each page one statement keyset-paginated on the table's key
`(stream_ms, stream_seq)`, so a read never holds more than a page and never rescans what it
already returned.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine, Select, Table, and_, delete, or_, select, tuple_

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
    """The archived events reached through `bind`.

    Bound to a `Connection`, every statement runs on it, inside the caller's transaction
    (the projector's batch, a rebuild). Bound to an `Engine`, each read page takes a
    connection of its own and gives it back before the page is yielded, and each write is
    its own transaction. Reads return pages of at most `page` events.
    """

    def __init__(self, bind: Engine | Connection, *, page: int = 5000) -> None:
        self.bind = bind
        self.page = page

    def insert(self, batch: Sequence[Recorded]) -> None:
        """Archive `batch`, which the caller knows is new: through COPY on PostgreSQL with
        psycopg (see `bulk`). An event archived before raises IntegrityError."""
        if not batch:
            return
        with self._begin() as conn:
            bulk.insert_new(conn, _table, [_row(a) for a in batch])

    def unarchived(self, batch: Sequence[Recorded]) -> list[Recorded]:
        """The events of `batch` (in log order) that are not archived yet."""
        if not batch:
            return []
        first, last = batch[0].position, batch[-1].position
        query = select(_table.c.stream_ms, _table.c.stream_seq).where(
            _key >= tuple_(*first), _key <= tuple_(*last)
        )
        with self._connect() as conn:
            found = {(ms, seq) for ms, seq in conn.execute(query)}
        return [a for a in batch if a.position not in found]

    def archived(self, ids: Collection[str]) -> set[str]:
        """The stream ids of `ids` that are archived."""
        wanted = {Position.parse(i) for i in ids}
        millis = sorted({ms for ms, _ in wanted})
        found: set[str] = set()
        with self._connect() as conn:
            for start in range(0, len(millis), _IN_LIST):
                rows = conn.execute(
                    select(_table.c.stream_ms, _table.c.stream_seq).where(
                        _table.c.stream_ms.in_(millis[start : start + _IN_LIST])
                    )
                )
                found |= {f"{ms}-{seq}" for ms, seq in rows if (ms, seq) in wanted}
        return found

    def bounds(self) -> tuple[Position, Position] | None:
        """The first and the last archived position; None when the archive is empty."""
        with self._connect() as conn:
            first = conn.execute(
                select(_table.c.stream_ms, _table.c.stream_seq)
                .order_by(_table.c.stream_ms, _table.c.stream_seq)
                .limit(1)
            ).first()
            last = _last(conn)
        if first is None or last is None:
            return None
        return Position(first[0], first[1]), last

    def last(self) -> Position | None:
        """The last archived position; None when the archive is empty."""
        with self._connect() as conn:
            return _last(conn)

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
        `skip_undecodable`. An empty page is never yielded.
        """
        query = select(_table.c.stream_ms, _table.c.stream_seq, _table.c.data)
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
        agent's events come in log order (the pages of different agents interleave)."""
        tags = [kind.__struct_config__.tag for kind in kinds]
        for start in range(0, len(agent_ids), _IN_LIST):
            part = agent_ids[start : start + _IN_LIST]
            query = select(_table.c.stream_ms, _table.c.stream_seq, _table.c.data).where(
                _table.c.agent_id.in_(part), _table.c.type.in_(tags)
            )
            yield from self._pages(query, None, False)

    def prune(self, below: Position, *, batch_size: int) -> Iterator[int]:
        """Delete the archived events below `below`, except those of agents whose activity
        has not ended (restore queues those again from their archived `task.queued`): up to
        `batch_size` events per transaction, oldest first. Yields how many each transaction
        removed, until one removes none or there is nothing left."""
        removable = and_(
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

    def _of_task(self, task_name: str) -> Any:
        named = _table.c.task_name == task_name
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


def _last(conn: Connection) -> Position | None:
    row = conn.execute(
        select(_table.c.stream_ms, _table.c.stream_seq)
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


def _row(applied: Recorded) -> dict[str, Any]:
    ms, seq = applied.position
    event = applied.event
    return {
        "stream_ms": ms,
        "stream_seq": seq,
        "type": type(event).__struct_config__.tag,
        "agent_id": event.agent_id,
        "task_name": event.task_name,
        "ts": applied.ts,
        "data": applied.data.decode(),
    }
