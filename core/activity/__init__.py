"""The activity API. The write side appends events to the log; the read side queries the SQL
read model that the projector maintains (`agentexec.activity.models`). `ax.activity.aio` has
the same calls as coroutine functions, for async code.

The read side and its schemas are imported on first use: a process that only writes (a
worker, an enqueuer) does not import the SQLAlchemy ORM.
"""

from __future__ import annotations

import builtins
import importlib
from typing import TYPE_CHECKING, Any

from agentexec.events import Status

from .schemas import generate_agent_id, normalize_agent_id
from .writes import cancel_pending, complete, create, error, update

if TYPE_CHECKING:
    from . import aio
    from .models import Activity
    from .reads import active_count, children, detail
    from .reads import active_count as count_active
    from .reads import list_activities as list
    from .retention import prune
    from .schemas import (
        ActivityAttemptSchema,
        ActivityChildrenSchema,
        ActivityChildSchema,
        ActivityDetailSchema,
        ActivityListItemSchema,
        ActivityListSchema,
        ActivityLogSchema,
        ActivityStatsSchema,
        DurationStatsSchema,
        ErrorCountSchema,
        StatsBucketSchema,
        TaskStatsSchema,
    )
    from .statistics import stats

__all__ = [
    "Activity",
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
    "Status",
    "TaskStatsSchema",
    "active_count",
    "aio",
    "cancel_pending",
    "children",
    "complete",
    "count_active",
    "create",
    "detail",
    "error",
    "generate_agent_id",
    "list",
    "normalize_agent_id",
    "prune",
    "stats",
    "update",
]

_LAZY = {
    "Activity": ("models", "Activity"),
    "active_count": ("reads", "active_count"),
    "count_active": ("reads", "active_count"),
    "children": ("reads", "children"),
    "detail": ("reads", "detail"),
    "list": ("reads", "list_activities"),
    "prune": ("retention", "prune"),
    "stats": ("statistics", "stats"),
    "ActivityAttemptSchema": ("schemas", "ActivityAttemptSchema"),
    "ActivityChildSchema": ("schemas", "ActivityChildSchema"),
    "ActivityChildrenSchema": ("schemas", "ActivityChildrenSchema"),
    "ActivityDetailSchema": ("schemas", "ActivityDetailSchema"),
    "ActivityListItemSchema": ("schemas", "ActivityListItemSchema"),
    "ActivityListSchema": ("schemas", "ActivityListSchema"),
    "ActivityLogSchema": ("schemas", "ActivityLogSchema"),
    "TaskStatsSchema": ("schemas", "TaskStatsSchema"),
    "StatsBucketSchema": ("schemas", "StatsBucketSchema"),
    "ErrorCountSchema": ("schemas", "ErrorCountSchema"),
    "DurationStatsSchema": ("schemas", "DurationStatsSchema"),
    "ActivityStatsSchema": ("schemas", "ActivityStatsSchema"),
}


def __getattr__(name: str) -> Any:
    if name == "aio":
        return importlib.import_module(f"{__name__}.aio")
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'agentexec.activity' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), attribute)
    globals()[name] = value
    return value


def __dir__() -> builtins.list[str]:
    return sorted(set(globals()) | set(__all__))
