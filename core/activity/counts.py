"""The activity counts: how many activities each task name has in each status, kept exact
in the transactions that change activity rows, so that totals need no count over the table.

The projector adds the changes of each batch (`add`); `prune` subtracts what it deletes; a
rebuild empties the table with the activities and folds them in again. Rows that reach 0
are deleted, so the table is the same however the events were batched.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from agentexec.events import Status

__all__ = ["Deltas", "add", "total"]

Deltas = Counter[tuple[str, str]]
"""Changes by (task name, stored status name)."""


def add(conn: Connection, deltas: Deltas) -> None:
    """Add `deltas` to the counts (in the caller's transaction)."""
    from .models import ActivityCount

    table: Table = ActivityCount.__table__  # type: ignore[assignment]
    rows = [
        {"agent_type": name, "status": status, "count": n}
        for (name, status), n in sorted(deltas.items())
        if n
    ]
    if not rows:
        return
    if conn.dialect.name in ("postgresql", "sqlite"):
        dialect: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(table)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[table.c.agent_type, table.c.status],
                set_={"count": table.c.count + stmt.excluded["count"]},
            ),
            rows,
        )
    else:
        for row in rows:
            key = (table.c.agent_type == row["agent_type"]) & (table.c.status == row["status"])
            changed = conn.execute(
                update(table).where(key).values(count=table.c.count + row["count"])
            )
            if not changed.rowcount:
                conn.execute(table.insert(), row)
    conn.execute(delete(table).where(table.c.count == 0))


def total(statuses: Iterable[Status] | None = None, task_names: Iterable[str] | None = None) -> Any:
    """A select of how many activities have one of `statuses` and `task_names` (None: any)."""
    from .models import ActivityCount

    where: list[ColumnElement[bool]] = []
    if statuses is not None:
        where.append(ActivityCount.status.in_(list(statuses)))
    if task_names is not None:
        where.append(ActivityCount.agent_type.in_(list(task_names)))
    return select(func.coalesce(func.sum(ActivityCount.count), 0)).where(*where)
