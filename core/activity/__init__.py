"""The activity API. The write side appends events to the log; the read side queries the SQL
read model that the projector maintains (`agentexec.activity.models`)."""

from __future__ import annotations

from .reads import active_count, detail
from .reads import list_activities as list
from .retention import prune
from .schemas import (
    ActivityDetailSchema,
    ActivityListItemSchema,
    ActivityListSchema,
    ActivityLogSchema,
)
from .writes import cancel_pending, complete, create, error, update

__all__ = [
    "ActivityDetailSchema",
    "ActivityListItemSchema",
    "ActivityListSchema",
    "ActivityLogSchema",
    "active_count",
    "cancel_pending",
    "complete",
    "create",
    "detail",
    "error",
    "list",
    "prune",
    "update",
]
