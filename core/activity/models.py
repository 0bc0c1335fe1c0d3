"""SQL models of the activity read model, written only by the projector.

Table names carry `AGENTEXEC_TABLE_PREFIX` (default `agentexec_`) as it is when this module is
first imported: the first use of `ax.Base`, of `agentexec.activity.models`, or of a read
function. Set the variable (or assign `ax.CONF.table_prefix`) before that.

Timestamps are stored as naive UTC, so they compare with `datetime.utcnow()`; aware datetimes
compared with a model's attribute (`Activity.updated_at >= since`) are converted to UTC first.
Every column has a standard SQLAlchemy type, so Alembic autogenerates importable revisions.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ColumnElement,
    DateTime,
    Enum,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.orm import (
    ColumnProperty,
    DeclarativeBase,
    Mapped,
    column_property,
    mapped_column,
    relationship,
)
from sqlalchemy.sql.operators import OperatorType

from agentexec.events import Status
from agentexec.runtime import current

__all__ = [
    "TABLE_PREFIX",
    "Activity",
    "ActivityCount",
    "ActivityLog",
    "ArchivedEvent",
    "Base",
    "Checkpoint",
    "SessionItem",
    "Status",
    "activity_row_id",
]

TABLE_PREFIX = current().settings.table_prefix
"""The table prefix these models were built with: the settings of the code that first imported
this module (`ax.CONF` as it was then, see `agentexec.runtime.current`)."""

_ROW_NAMESPACE = uuid.UUID("5b0c0a4e-6f1e-4c53-9d55-2f5c0f3c7a11")


def activity_row_id(agent_id: uuid.UUID) -> uuid.UUID:
    """The primary key of an agent's activity row: derived from the agent id, so that a
    rebuild of the read model reproduces it."""
    return uuid.uuid5(_ROW_NAMESPACE, agent_id.hex)


def _status_type() -> Enum:
    """A `Status` stored as its upper-case name in a VARCHAR(16), without a CHECK constraint.

    A standard type, so that `alembic revision --autogenerate` renders it as `sa.Enum(...)`,
    importable from any revision. Binds `Status` members and either spelling of a name."""
    return Enum(
        Status,
        name="status",
        native_enum=False,
        create_constraint=False,
        length=16,
        validate_strings=True,
    )


def _naive_utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, list | tuple):
        return type(value)(_naive_utc(v) for v in value)
    return value


class _UTCComparator(ColumnProperty.Comparator[datetime]):
    """Converts an aware datetime compared with the column to naive UTC, as stored."""

    def operate(self, op: OperatorType, *other: Any, **kwargs: Any) -> ColumnElement[Any]:
        return op(self.__clause_element__(), *(_naive_utc(o) for o in other), **kwargs)  # type: ignore[no-any-return]

    def reverse_operate(self, op: OperatorType, other: Any, **kwargs: Any) -> ColumnElement[Any]:
        return op(_naive_utc(other), self.__clause_element__(), **kwargs)  # type: ignore[no-any-return]


def _utc_column(*, index: bool = False, nullable: bool = False) -> Any:
    """A naive-UTC timestamp column (a plain `DateTime`, so revisions render it as
    `sa.DateTime()`), whose ORM attribute converts aware datetimes in comparisons."""
    return column_property(
        Column(DateTime(), index=index, nullable=nullable), comparator_factory=_UTCComparator
    )


class Base(DeclarativeBase):
    """Declarative base of agentexec's tables: `ax.Base.metadata.create_all(engine)`."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


_ACTIVE_WHERE = text("status IN ('QUEUED', 'RUNNING')")
"""The predicate of the partial index of active rows; `agentexec.activity.filters.active`
writes the same, with the same literal values, so that the planners see the index covers it."""


_RUNNING_WHERE = text("status = 'RUNNING'")
"""The predicate of the partial index of running rows (`running_longer_than`), written with
the same literal by `agentexec.activity.filters.conditions`."""


class Activity(Base):
    """One row per task (agent id): its current state, maintained by the projector.

    Its indexes match the reads (`agentexec.activity.reads`): each list segment and filter is
    a range of one of them in `(created_at, id)` order (migration agentexec_0004); the
    running-too-long view counts from `started_at` of the running rows (agentexec_0005)."""

    __tablename__ = f"{TABLE_PREFIX}activity"
    __table_args__ = (
        Index(
            f"ix_{TABLE_PREFIX}activity_active",
            "created_at",
            "id",
            postgresql_where=_ACTIVE_WHERE,
            sqlite_where=_ACTIVE_WHERE,
        ),
        Index(f"ix_{TABLE_PREFIX}activity_created", "created_at", "id"),
        Index(f"ix_{TABLE_PREFIX}activity_status_created", "status", "created_at", "id"),
        Index(f"ix_{TABLE_PREFIX}activity_type_created", "agent_type", "created_at", "id"),
        Index(f"ix_{TABLE_PREFIX}activity_parent_created", "parent_id", "created_at", "id"),
        Index(
            f"ix_{TABLE_PREFIX}activity_running_started",
            "started_at",
            postgresql_where=_RUNNING_WHERE,
            sqlite_where=_RUNNING_WHERE,
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    agent_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True, index=True)
    agent_type: Mapped[str] = mapped_column(String(255))
    """The task name."""
    status: Mapped[Status] = mapped_column(_status_type())
    latest_message: Mapped[str | None] = mapped_column(Text)
    latest_percentage: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    """How many times a worker started the task."""
    retries: Mapped[int] = mapped_column(Integer, default=0)
    """How many attempts failed and were retried."""
    error: Mapped[str | None] = mapped_column(Text)
    """The error the task failed with (ERROR only); each attempt's is in `attempt_history`."""
    worker: Mapped[str | None] = mapped_column(String(255))
    """The consumer name of the worker that ran the latest attempt."""
    queue_wait_seconds: Mapped[float | None] = mapped_column(Float)
    """Seconds the task waited for a worker, summed over its attempts."""
    run_seconds: Mapped[float | None] = mapped_column(Float)
    """Seconds its handler ran, summed over the attempts that recorded an end."""
    attempt_history: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    """One object per attempt (see `agentexec.activity.state.Attempt`)."""
    parent_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    queue: Mapped[str | None] = mapped_column(String(255))
    priority: Mapped[str | None] = mapped_column(String(16))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    created_at: Mapped[datetime] = _utc_column()
    updated_at: Mapped[datetime] = _utc_column(index=True)
    started_at: Mapped[datetime | None] = _utc_column(nullable=True)
    """When the latest attempt started."""
    finished_at: Mapped[datetime | None] = _utc_column(nullable=True)
    queued_at: Mapped[datetime | None] = _utc_column(nullable=True)
    """When the task was first queued."""
    due_at: Mapped[datetime | None] = _utc_column(nullable=True)
    """When the current attempt (or the next one, while a retry waits) was due to start."""
    last_event_id: Mapped[str] = mapped_column(String(41))
    """Stream id of the last event applied to this row."""

    logs: Mapped[list[ActivityLog]] = relationship(
        back_populates="activity",
        primaryjoin="Activity.id == foreign(ActivityLog.activity_id)",
        order_by="ActivityLog.id",
        cascade="all, delete-orphan",
    )

    @property
    def latest_log(self) -> str | None:
        return self.latest_message

    def __repr__(self) -> str:
        return f"<Activity {self.agent_id} {self.agent_type} {self.status}>"


class ActivityLog(Base):
    """One row per status or progress event, in log order (`id`)."""

    __tablename__ = f"{TABLE_PREFIX}activity_log"
    __table_args__ = (Index(f"ix_{TABLE_PREFIX}activity_log_activity", "activity_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # No foreign-key constraint: the projector writes a log row only in the transaction that
    # upserts its activity row, and a per-row constraint check halves its throughput.
    activity_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    event_id: Mapped[str] = mapped_column(String(41))
    """Stream id of the event this row records (unique: the archive's key guards it)."""
    message: Mapped[str] = mapped_column(Text)
    status: Mapped[Status] = mapped_column(_status_type())
    percentage: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = _utc_column()

    activity: Mapped[Activity] = relationship(
        back_populates="logs", primaryjoin="Activity.id == foreign(ActivityLog.activity_id)"
    )

    def __repr__(self) -> str:
        return f"<ActivityLog {self.event_id} {self.status} {self.message!r}>"


class ActivityCount(Base):
    """How many activities each task name has in each status: kept by the projector in the
    transaction that changes the rows (and by `prune`), so that a list's total needs no
    count over the table. Rows at 0 are deleted: a rebuild gives the same rows."""

    __tablename__ = f"{TABLE_PREFIX}activity_counts"

    agent_type: Mapped[str] = mapped_column(String(255), primary_key=True)
    status: Mapped[Status] = mapped_column(_status_type(), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


class ArchivedEvent(Base):
    """Every event the projector applied, verbatim: the history that outlives Redis."""

    __tablename__ = f"{TABLE_PREFIX}events"

    partition: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, server_default=text("0")
    )
    """The partition whose log the event was in (`AGENTEXEC_PARTITIONS`): an entry id is
    unique within its partition only. 0 with one partition."""
    stream_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    stream_seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(String(64))
    agent_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    task_name: Mapped[str] = mapped_column(String(255))
    ts: Mapped[datetime] = _utc_column()
    """The producer's timestamp."""
    data: Mapped[str] = mapped_column(Text)
    """The event's JSON as it was in the stream entry."""

    @property
    def event_id(self) -> str:
        return f"{self.stream_ms}-{self.stream_seq}"


class Checkpoint(Base):
    """How far the projector has applied a stream (one partition's log, named by its key);
    advanced in each batch's transaction."""

    __tablename__ = f"{TABLE_PREFIX}checkpoints"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    position: Mapped[str] = mapped_column(String(41))
    owner: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = _utc_column()


class SessionItem(Base):
    """One item of a conversation session (`ax.AgentSession`) as it stands: maintained by the
    projector from the session's events, for listing and audit (live reads go to Redis)."""

    __tablename__ = f"{TABLE_PREFIX}session_items"

    session_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    """0 for the oldest item."""
    item: Mapped[Any] = mapped_column(JSON, nullable=False)
    """The item as the session stores it (what `get_items` returns)."""
    event_id: Mapped[str] = mapped_column(String(41))
    """Stream id of the `session.items_added` event that added it."""
    created_at: Mapped[datetime] = _utc_column()
    """The time of that event."""

    def __repr__(self) -> str:
        return f"<SessionItem {self.session_id!r} {self.position}>"
