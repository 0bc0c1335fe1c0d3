"""Bulk writes of a batch: one statement per table, whatever the number of rows.

New rows (archive, log) go through COPY on PostgreSQL with psycopg, and `executemany`
elsewhere (the sqlite3 module runs it in C). Activity rows are upserted with `ON CONFLICT`:
on PostgreSQL all rows travel as one JSON parameter expanded by `json_to_recordset`, one
round trip and one execution where an executemany costs one execution per row; on SQLite
through `executemany`. Other databases get plain inserts and per-row updates.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import msgspec
from sqlalchemy import Connection, Table, bindparam, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DBAPIError

__all__ = ["chunks", "copy_supported", "insert_new", "upsert"]

_MAX_PARAMS = 30_000
"""Bound parameters per statement: below SQLite's 32,766 and PostgreSQL's 65,535."""


def insert_new(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert `rows` that the caller knows are new: through COPY on PostgreSQL with psycopg,
    the fastest path there is. A row that exists after all raises IntegrityError; every
    driver error is raised as SQLAlchemy's wrapper of it."""
    if not rows:
        return
    if not copy_supported(conn):
        for part in chunks(rows):
            conn.execute(table.insert(), part)
        return
    preparer = conn.dialect.identifier_preparer
    names = list(rows[0])
    sql = (
        f"COPY {preparer.format_table(table)} "
        f"({', '.join(preparer.quote(n) for n in names)}) FROM STDIN"
    )
    driver: Any = conn.connection.driver_connection
    dbapi: Any = conn.dialect.loaded_dbapi
    try:
        with driver.cursor() as cursor, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row([row[n] for n in names])
    except dbapi.Error as e:
        # COPY runs on the driver's own connection, below SQLAlchemy: raise its error the way
        # SQLAlchemy would (IntegrityError, DataError...), so callers tell the kinds apart.
        raise DBAPIError.instance(sql, None, e, dbapi.Error, dialect=conn.dialect) from e


def copy_supported(conn: Connection) -> bool:
    """True when `insert_new` can use COPY (PostgreSQL through psycopg 3)."""
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"


def upsert(
    conn: Connection, table: Table, rows: list[dict[str, Any]], key: str, existing: set[Any]
) -> None:
    """Insert `rows`, or replace every column but the primary key of those whose `key`
    column matches a row present; `existing` holds the keys known to be present."""
    if not rows:
        return
    replaced = [c.name for c in table.c if not c.primary_key and c.name != key]
    if _recordset_supported(conn):
        preparer = conn.dialect.identifier_preparer
        sets = ", ".join(f"{preparer.quote(c)} = EXCLUDED.{preparer.quote(c)}" for c in replaced)
        conflict = f"ON CONFLICT ({preparer.quote(key)}) DO UPDATE SET {sets}"
        conn.execute(*_recordset(conn, table, rows, conflict))
    elif conn.dialect.name == "sqlite":
        stmt = sqlite.insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c[key]], set_={c: stmt.excluded[c] for c in replaced}
        )
        for part in chunks(rows):
            conn.execute(stmt, part)
    else:
        new = [r for r in rows if r[key] not in existing]
        old = [{**r, "_key": r[key]} for r in rows if r[key] in existing]
        if new:
            conn.execute(table.insert(), new)
        if old:
            values: dict[str, Any] = {c: bindparam(c) for c in replaced}
            where = table.c[key] == bindparam("_key")
            conn.execute(update(table).where(where).values(values), old)


def chunks(rows: Sequence[dict[str, Any]]) -> Iterator[Sequence[dict[str, Any]]]:
    """Split rows into statements that stay below every dialect's parameter limit."""
    size = max(1, _MAX_PARAMS // max(1, len(rows[0]))) if rows else 1
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _recordset_supported(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _recordset(
    conn: Connection, table: Table, rows: list[dict[str, Any]], conflict: str
) -> tuple[Any, dict[str, str]]:
    preparer = conn.dialect.identifier_preparer
    columns = [c for c in table.c if c.name in rows[0]]
    names = ", ".join(preparer.quote(c.name) for c in columns)
    types = ", ".join(
        f"{preparer.quote(c.name)} {c.type.compile(dialect=conn.dialect)}" for c in columns
    )
    sql = (
        f"INSERT INTO {preparer.format_table(table)} ({names}) SELECT {names} "
        f"FROM json_to_recordset(CAST(:rows AS JSON)) AS u({types}) {conflict}"
    )
    return text(sql), {"rows": _encoder.encode(rows).decode()}


_encoder = msgspec.json.Encoder()
