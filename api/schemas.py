"""Response schemas of the REST routes that `agentexec.activity` does not already define."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from agentexec.activity.schemas import StatusField

__all__ = ["ActiveCountSchema", "ActivityStatusSchema", "ProblemSchema"]


class ActivityStatusSchema(BaseModel):
    """Just the current state of one activity (`GET /api/activities/{agent_id}/status`)."""

    model_config = ConfigDict(frozen=True)

    status: StatusField
    progress: int | None = None
    """The latest percentage reported, 0-100."""
    message: str | None = None
    """The latest log message."""


class ActiveCountSchema(BaseModel):
    """How many activities are queued or running (`GET /api/activities/active/count`)."""

    model_config = ConfigDict(frozen=True)

    count: int


class ProblemSchema(BaseModel):
    """The body of a 400, 401, 403, 404 or 503 answer."""

    detail: str
