"""Activity state: what is known of one task, folded from its events by one pure function.

`evolve(state, recorded)` holds the rules of the read model; the projector folds the rows of
the `activity` table with it and the monitor its table, so both show the same thing:

- terminal statuses (COMPLETE, ERROR, CANCELED) are final: later events change nothing;
- events without a status (a cancel request, tracker events) never create an activity and
  do not change one;
- agent events (turns, tool calls, handoffs, usage) change no status: a running task's
  latest message is what its agent did last;
- `attempts` counts `task.started` events; `updated_at` is the latest event time folded;
- an event recorded without a task name keeps the name the state learnt from the task's
  earlier events. Every append names its event (`agentexec.eventlog.EventLog`): only events
  recorded by older versions lack one (or written after the agent's marker expired, see
  `agentexec.events.Event.task_name`), and this is the one place that fills it in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from agentexec.eventlog import Recorded
from agentexec.events import (
    TERMINAL,
    AgentEvent,
    Status,
    TaskCanceled,
    TaskCompleted,
    TaskFailed,
    TaskQueued,
    TaskStarted,
)

__all__ = ["ActivityState", "evolve"]


class ActivityState(msgspec.Struct, frozen=True, kw_only=True):
    """One task's activity, as the `activity` table stores it. Times are naive UTC."""

    agent_id: UUID
    task_name: str
    status: Status
    created_at: datetime
    updated_at: datetime
    last_event_id: str
    """The position (text form) of the last event that changed this state."""
    message: str | None = None
    percentage: int | None = None
    attempts: int = 0
    error: str | None = None
    parent_id: UUID | None = None
    queue: str | None = None
    priority: str | None = None
    metadata: dict[str, Any] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def evolve(state: ActivityState | None, recorded: Recorded) -> ActivityState | None:
    """The state after `recorded`: `state` itself (the same object) when the event changes
    nothing, None while no event has created the activity."""
    event = recorded.event
    ts = recorded.ts
    if isinstance(event, AgentEvent):
        # What a running agent does now (a turn, a tool call, a handoff) becomes the task's
        # latest message, so a list shows it; the status does not change.
        if state is None or state.status is not Status.RUNNING or not event.message:
            return state
        return msgspec.structs.replace(
            state,
            message=event.message,
            last_event_id=recorded.event_id,
            updated_at=max(state.updated_at, ts),
        )
    status = type(event).status
    if status is None:
        return state
    if state is None:
        state = ActivityState(
            agent_id=event.agent_id,
            task_name=event.task_name,
            status=status,
            created_at=ts,
            updated_at=ts,
            last_event_id=recorded.event_id,
        )
    elif state.status in TERMINAL:
        return state
    changes: dict[str, Any] = {
        "status": status,
        "last_event_id": recorded.event_id,
        "updated_at": max(state.updated_at, ts),
    }
    if event.task_name and not state.task_name:
        changes["task_name"] = event.task_name
    if event.message:
        changes["message"] = event.message
    if event.percentage is not None:
        changes["percentage"] = event.percentage
    if event.metadata is not None:
        changes["metadata"] = {**(state.metadata or {}), **event.metadata}
    if isinstance(event, TaskQueued):
        changes.update(queue=event.queue, priority=event.priority.value, parent_id=event.parent_id)
    elif isinstance(event, TaskStarted):
        changes.update(attempts=state.attempts + 1, started_at=ts, finished_at=None)
    elif isinstance(event, TaskCompleted | TaskCanceled):
        changes["finished_at"] = ts
    elif isinstance(event, TaskFailed):
        changes.update(finished_at=ts, error=event.error)
    return msgspec.structs.replace(state, **changes)
