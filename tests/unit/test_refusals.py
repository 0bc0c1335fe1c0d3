"""What counts as the database refusing a batch, and the safe form of a refused event."""

from __future__ import annotations

import sqlite3
import uuid

import psycopg
import pytest
from sqlalchemy.exc import DataError, IntegrityError, OperationalError, ProgrammingError

from agentexec import events
from agentexec.eventlog import Recorded as Applied
from agentexec.events import TaskProgress, TaskQueued
from agentexec.projector.refusals import TRUNCATED, refused, storable


def wrapped(kind: type, orig: BaseException) -> BaseException:
    error: BaseException = kind("INSERT ...", None, orig)
    return error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (wrapped(DataError, psycopg.errors.StringDataRightTruncation("too long")), True),
        (wrapped(DataError, psycopg.errors.UntranslatableCharacter("\\u0000")), True),
        (wrapped(IntegrityError, psycopg.errors.UniqueViolation("dup")), True),
        (psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"), True),
        (OverflowError("Python int too large to convert to SQLite INTEGER"), True),
        (wrapped(DataError, sqlite3.DataError("string or blob too big")), True),
        # Not about the values: the same batch goes through once the database is back.
        (wrapped(OperationalError, psycopg.errors.AdminShutdown("shutting down")), False),
        (wrapped(ProgrammingError, psycopg.errors.UndefinedTable("no table")), False),
        (wrapped(OperationalError, sqlite3.OperationalError("database is locked")), False),
        (ConnectionRefusedError("refused"), False),
        (RuntimeError("a defect"), False),
        (KeyError("a defect"), False),
    ],
)
def test_refused(error: BaseException, expected: bool) -> None:
    assert refused(error) is expected


def applied(event: events.Event) -> Applied:
    return Applied("5-1", events.decode(events.encode(event)), events.encode(event))


def test_storable_escapes_nul_and_cuts_bounded_names() -> None:
    event = TaskQueued(
        agent_id=uuid.uuid4(),
        task_name="t" * 300,
        queue="q\x00" * 200,
        message="a\x00b",
        metadata={"k\x00": ["v\x00", 1], "fine": "x"},
    )
    safe = storable(applied(event))
    assert safe is not None and safe.event_id == "5-1"
    out = safe.event
    assert isinstance(out, TaskQueued)
    assert len(out.task_name) == 255 and out.task_name.endswith(TRUNCATED)
    assert out.queue is not None and len(out.queue) == 255 and "\x00" not in out.queue
    assert out.message == "a\\x00b"
    assert out.metadata == {"k\\x00": ["v\\x00", 1], "fine": "x"}
    assert events.decode(safe.data) == out  # the archive keeps the safe form


def test_storable_is_none_when_nothing_would_change() -> None:
    event = TaskProgress(agent_id=uuid.uuid4(), task_name="t", message="ok", percentage=2**63)
    assert storable(applied(event)) is None


def test_storable_cuts_a_worker_name_to_its_column() -> None:
    event = events.TaskStarted(agent_id=uuid.uuid4(), task_name="t", worker="w" * 300)
    safe = storable(applied(event))
    assert safe is not None and isinstance(safe.event, events.TaskStarted)
    assert len(safe.event.worker) == 255 and safe.event.worker.endswith(TRUNCATED)
