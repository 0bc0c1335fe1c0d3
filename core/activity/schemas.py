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
from uuid import UUID

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, computed_field

from agentexec.errors import InvalidAgentIdError
from agentexec.events import Status

__all__ = [
    "ActivityDetailSchema",
    "ActivityListItemSchema",
    "ActivityListSchema",
    "ActivityLogSchema",
    "StatusField",
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

UTCTime = Annotated[datetime, BeforeValidator(_utc)]


class _Schema(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)


class ActivityLogSchema(_Schema):
    """One log entry of an activity."""

    id: int
    message: str
    status: StatusField
    percentage: int | None = None
    created_at: UTCTime
    event_id: str | None = None
    """Stream id of the event this entry records (the SSE `id:` of the same event)."""


class ActivityListItemSchema(_Schema):
    """One activity in a list; `latest_log` is its most recent message."""

    agent_id: UUID
    agent_type: str
    created_at: UTCTime
    updated_at: UTCTime
    status: StatusField
    latest_log: str | None = None
    latest_percentage: int | None = None

    @property
    def latest_log_message(self) -> str | None:
        """The same as `latest_log`."""
        return self.latest_log

    @property
    def percentage(self) -> int | None:
        """The same as `latest_percentage`."""
        return self.latest_percentage


class ActivityListSchema(_Schema):
    """A page of activities: active ones first, then newest first."""

    items: list[ActivityListItemSchema]
    total: int
    page: int
    page_size: int

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


class ActivityDetailSchema(_Schema):
    """An activity with its whole log, oldest entry first."""

    id: UUID
    agent_id: UUID
    agent_type: str
    created_at: UTCTime
    updated_at: UTCTime
    status: StatusField
    latest_percentage: int | None = None
    latest_log: str | None = None
    attempts: int = 0
    error: str | None = None
    parent_id: UUID | None = None
    started_at: Annotated[datetime | None, BeforeValidator(_utc)] = None
    finished_at: Annotated[datetime | None, BeforeValidator(_utc)] = None
    logs: list[ActivityLogSchema] = []
