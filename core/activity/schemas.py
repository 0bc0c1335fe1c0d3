"""Pydantic schemas the activity read API returns.

`status` is a `Status`, spelled lower-case wherever it is written out (JSON, `status.value`,
`str(status)`), as the UI components expect; in Python it compares equal to either spelling
(`item.status == "COMPLETE"`, `item.status.value == "complete"`). Input accepts either case.
Datetimes are timezone-aware UTC.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    computed_field,
    field_validator,
)

from agentexec.errors import InvalidAgentIdError
from agentexec.events import Status

__all__ = [
    "ActivityAttemptSchema",
    "ActivityChildSchema",
    "ActivityChildrenSchema",
    "ActivityDetailSchema",
    "ActivityListItemSchema",
    "ActivityListSchema",
    "ActivityLogSchema",
    "ActivityStatsSchema",
    "DurationStatsSchema",
    "ErrorCountSchema",
    "StatsBucketSchema",
    "StatusField",
    "TaskStatsSchema",
    "parse_agent_id",
]


def parse_agent_id(value: UUID | str) -> UUID:
    """`value` as a UUID; raises `InvalidAgentIdError` when it is not one."""
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise InvalidAgentIdError(
            f"agent id {value!r} is not a UUID, so no task has it; pass the agent_id a task "
            "was enqueued with (a web view answers 422 or 404 for it)."
        ) from None


def normalize_agent_id(value: UUID | str) -> UUID:
    """`value` as a UUID (agentexec 0.3.0's name for `parse_agent_id`); raises
    `InvalidAgentIdError` (a ValueError) when it is not one."""
    return parse_agent_id(value)


def generate_agent_id() -> UUID:
    """A new random agent id (a UUID4), for `ax.activity.create(..., agent_id=...)` when the
    id must be known before the activity is created."""
    return uuid4()


def _status_in(value: Any) -> Any:
    return Status(value) if isinstance(value, str) else value


def _utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


StatusField = Annotated[
    Status,
    BeforeValidator(_status_in),
    PlainSerializer(lambda s: s.wire, return_type=str, when_used="json"),
]
"""A `Status` that is written lower-case in JSON."""

LogId = Annotated[int, PlainSerializer(str, return_type=str, when_used="json")]
"""A log entry's id: an int in Python, a string in JSON."""

UTCTime = Annotated[datetime, BeforeValidator(_utc)]
OptionalUTCTime = Annotated[datetime | None, AfterValidator(_utc)]
AnyUTCTime = Annotated[datetime, AfterValidator(_utc)]
"""Also from an ISO string without offset (the attempt history is JSON)."""


class _Schema(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)


class ActivityLogSchema(_Schema):
    """One log entry of an activity."""

    id: LogId
    """The entry's number, in log order; a string in JSON (as the agentexec-ui types have it)."""
    message: str
    status: StatusField
    percentage: int | None = None
    created_at: UTCTime
    event_id: str | None = None
    """Stream id of the event this entry records (the SSE `id:` of the same event)."""


class ActivityAttemptSchema(_Schema):
    """One attempt of a task: a worker's run of its handler. Durations are seconds; None
    where the events do not tell (an attempt still running, or redelivered after its worker
    died: `outcome` "lost")."""

    attempt: int
    """1 for the first run."""
    worker: str | None = None
    due_at: OptionalUTCTime = None
    """When it could have started: when the task was queued, or its retry became due."""
    started_at: AnyUTCTime
    finished_at: OptionalUTCTime = None
    queue_wait_seconds: float | None = None
    """From `due_at` to `started_at`."""
    run_seconds: float | None = None
    """From `started_at` to `finished_at`."""
    outcome: str | None = None
    """retried, complete, error, canceled or lost; None while it runs."""
    error: str | None = None


class _Timing(_Schema):
    """The timing of a task, maintained by the projector from its events (see
    docs/activity.md, "Timing"). Durations are seconds."""

    queued_at: OptionalUTCTime = None
    """When the task was first queued."""
    started_at: OptionalUTCTime = None
    """When its latest attempt started."""
    finished_at: OptionalUTCTime = None
    attempts: int = 0
    """How many times a worker started it."""
    retries: int = 0
    """How many attempts failed and were retried."""
    worker: str | None = None
    """The worker that ran the latest attempt."""
    queue_wait_seconds: float | None = None
    """Time spent waiting for a worker, summed over the attempts."""
    run_seconds: float | None = None
    """Time the handler ran, summed over the attempts that recorded an end."""
    error: str | None = None
    """The error it failed with, when it ended ERROR."""
    parent_id: UUID | None = None


class ActivityListItemSchema(_Timing):
    """One activity in a list; `latest_log` is its most recent message.

    The JSON also carries the fields the `agentexec-ui` components read, computed from the
    others: `latest_log_message`, `latest_log_timestamp`, `percentage` and
    `elapsed_time_seconds` (`started_at` is a field of its own)."""

    agent_id: UUID
    agent_type: str
    created_at: UTCTime
    updated_at: UTCTime
    status: StatusField
    latest_log: str | None = None
    latest_percentage: int | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def latest_log_message(self) -> str | None:
        """The same as `latest_log`."""
        return self.latest_log

    @computed_field  # type: ignore[prop-decorator]
    @property
    def latest_log_timestamp(self) -> datetime | None:
        """When the latest log entry was written (the time of the task's latest event);
        None while it has none."""
        return self.updated_at if self.latest_log is not None else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def percentage(self) -> int:
        """The latest percentage reported; 100 once COMPLETE, 0 while none was reported."""
        if self.status is Status.COMPLETE:
            return 100
        return self.latest_percentage or 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def elapsed_time_seconds(self) -> float:
        """Seconds from the start of its latest attempt to its end, or, while it runs, to
        its latest event (a value of the data, the same on every read); 0 before it
        started."""
        if self.started_at is None:
            return 0.0
        until = self.finished_at or self.updated_at
        return round(max((until - self.started_at).total_seconds(), 0.0), 6)


class ActivityListSchema(_Schema):
    """A page of activities: active ones first, then newest first."""

    items: list[ActivityListItemSchema]
    total: int
    """How many activities match the filters."""
    page: int
    page_size: int
    next_cursor: str | None = None
    """Pass it as `cursor` to get the page after this one (keyset pagination, as fast deep
    in the list as at its start); None on the last page."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def pages(self) -> int:
        """How many pages of `page_size` the `total` activities fill."""
        return math.ceil(self.total / self.page_size) if self.page_size else 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_pages(self) -> int:
        """The same as `pages`."""
        return self.pages


class ActivityChildSchema(_Schema):
    """A child task of an activity, as its `detail` lists it."""

    agent_id: UUID
    agent_type: str
    status: StatusField


class ActivityChildrenSchema(_Schema):
    """A page of an activity's children, oldest first (`ax.activity.children`)."""

    parent_id: UUID
    parent_status: StatusField | None = None
    """None when the parent itself is not in the read model (only its children are)."""
    items: list[ActivityListItemSchema]
    counts: dict[str, int]
    """How many children are in each status (every status, lower-case)."""
    total: int
    page: int
    page_size: int


class ActivityDetailSchema(_Timing):
    """An activity with its whole log, oldest entry first, and its attempts."""

    id: UUID
    agent_id: UUID
    agent_type: str
    created_at: UTCTime
    updated_at: UTCTime
    status: StatusField
    latest_percentage: int | None = None
    latest_log: str | None = None
    attempt_history: list[ActivityAttemptSchema] = []
    """Every attempt, first first."""
    children: list[ActivityChildSchema] = []
    """The tasks queued with this one as their parent, oldest first (at most 1,000)."""
    children_counts: dict[str, int] = {}
    """How many children are in each status (every status, lower-case; all 0 for none)."""
    logs: list[ActivityLogSchema] = []

    @field_validator("attempt_history", mode="before")
    @classmethod
    def _no_history(cls, value: Any) -> Any:
        return [] if value is None else value


class DurationStatsSchema(_Schema):
    """Durations in seconds over the tasks that recorded one. Percentiles are nearest-rank:
    `p50` is the smallest value at least half of the values are not greater than (the
    value at rank ceil(0.50 * count) in ascending order), `p95` likewise; a value that
    occurred, never an interpolation. Mean rounded to the microsecond. All None for none."""

    count: int = 0
    mean: float | None = None
    p50: float | None = None
    p95: float | None = None
    max: float | None = None


class ErrorCountSchema(_Schema):
    """An error tasks failed with, its variable parts (numbers, ids, hex) replaced by `<n>`,
    `<id>`, `<hex>`, and how many failed with it."""

    message: str
    count: int
    example: str
    """One of the errors as it was written (the first seen)."""


class TaskStatsSchema(_Schema):
    """Statistics of the tasks of one name (`task_name` None: of all names together)."""

    task_name: str | None
    total: int
    counts: dict[str, int]
    """Tasks in each status (every status, lower-case)."""
    success_rate: float | None
    """complete / (complete + error + canceled); None while none ended."""
    retry_rate: float | None
    """Share of the tasks retried at least once; None for no task."""
    retries: int
    """Retries over all the tasks."""
    queue_wait: DurationStatsSchema
    """Time waited for a worker (summed over a task's attempts)."""
    run: DurationStatsSchema
    """Time the handler ran (summed over a task's attempts)."""
    errors: list[ErrorCountSchema]
    """The most frequent errors of the tasks that ended ERROR, most frequent first."""


class StatsBucketSchema(_Schema):
    """The statistics of the tasks created in [`start`, `end`)."""

    start: UTCTime
    end: UTCTime
    overall: TaskStatsSchema
    tasks: list[TaskStatsSchema]


class ActivityStatsSchema(_Schema):
    """Statistics of the tasks created in [`since`, `until`) (`ax.activity.stats`)."""

    since: OptionalUTCTime = None
    until: OptionalUTCTime = None
    bucket_seconds: float | None = None
    overall: TaskStatsSchema
    """All the tasks selected, whatever their name."""
    tasks: list[TaskStatsSchema]
    """One entry per task name, by name."""
    buckets: list[StatsBucketSchema] = []
    """With a bucket size: every bucket from the first to the last, empty ones included."""
