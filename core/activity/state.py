"""Activity state: what is known of one task, folded from its events by one pure function.

`evolve(state, recorded)` holds the rules of the read model; the projector folds the rows of
the `activity` table with it and the monitor its table, so both show the same thing:

- terminal statuses (COMPLETE, ERROR, CANCELED) are final: later events change nothing;
- events without a status (a cancel request, tracker events) never create an activity and
  do not change one;
- agent events (turns, tool calls, handoffs, usage) change no status: a running task's
  latest message is what its agent did last;
- `attempts` counts `task.started` events; `updated_at` is the latest event time folded;
- timing: each `task.started` opens an `Attempt`, which the next `task.retried` or terminal
  event closes; its queue wait runs from when it was due (the `task.queued` time, its
  `not_before`, or a retry's time plus its delay) to its start, its run from its start to
  its end. A start while the previous attempt is open is a redelivery (its worker died):
  that attempt ends LOST, without an end time or run duration, and the redelivered attempt's
  due time is unknown. Durations are whole differences of the events' own timestamps,
  floored at 0 (clocks of different hosts may disagree by a little), so a replay or rebuild
  computes the same values;
- an event recorded without a task name keeps the name the state learnt from the task's
  earlier events. Every append names its event (`agentexec.eventlog.EventLog`): only events
  recorded by older versions lack one (or written after the agent's marker expired, see
  `agentexec.events.Event.task_name`), and this is the one place that fills it in.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
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
    TaskRetried,
    TaskStarted,
)

__all__ = ["ActivityState", "Attempt", "AttemptOutcome", "Transition", "evolve"]


class AttemptOutcome(enum.StrEnum):
    """How one attempt of a task ended."""

    RETRIED = "retried"
    COMPLETE = "complete"
    ERROR = "error"
    CANCELED = "canceled"
    LOST = "lost"
    """Its worker died (or lost its lease) before it recorded an end: the task was
    redelivered as a new attempt."""


class Attempt(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One run of a task's handler by a worker, from its `task.started` event. Times are
    naive UTC, durations seconds; None where the events do not tell."""

    attempt: int
    """1 for the first run."""
    started_at: datetime
    worker: str | None = None
    due_at: datetime | None = None
    """When the attempt could have started: when it was queued, or became due."""
    queue_wait_seconds: float | None = None
    finished_at: datetime | None = None
    run_seconds: float | None = None
    outcome: AttemptOutcome | None = None
    """None while it runs."""
    error: str | None = None


def _seconds(since: datetime, until: datetime) -> float:
    return max((until - since) / timedelta(microseconds=1), 0) / 1_000_000


def _plus(total: float | None, seconds: float | None) -> float | None:
    if seconds is None:
        return total
    return seconds if total is None else round(total + seconds, 6)


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
    """When the latest attempt started."""
    finished_at: datetime | None = None
    queued_at: datetime | None = None
    """The time of the task's first `task.queued` event."""
    due_at: datetime | None = None
    """When the current (or, while it waits for a retry, the next) attempt was due."""
    worker: str | None = None
    """The worker that ran the latest attempt."""
    retries: int = 0
    """How many attempts failed and were retried (`task.retried` events)."""
    queue_wait_seconds: float | None = None
    """Total over the attempts whose wait is known."""
    run_seconds: float | None = None
    """Total over the attempts that recorded an end."""
    attempt_history: tuple[Attempt, ...] = ()

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def current(self) -> Attempt | None:
        """The latest attempt, if one started."""
        return self.attempt_history[-1] if self.attempt_history else None


Transition = tuple[ActivityState | None, ActivityState]
"""An activity's state before one event (None: the event created it) and after it."""


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
        if state.queued_at is None:
            due = _naive(event.not_before)
            changes.update(queued_at=ts, due_at=ts if due is None else max(ts, due))
    elif isinstance(event, TaskStarted):
        changes.update(attempts=state.attempts + 1, started_at=ts, finished_at=None)
        changes.update(_start(state, event, ts))
    elif isinstance(event, TaskRetried):
        changes.update(_end(state, ts, AttemptOutcome.RETRIED, event.error))
        changes.update(retries=state.retries + 1, due_at=ts + timedelta(seconds=event.delay))
    elif isinstance(event, TaskCompleted | TaskCanceled):
        changes["finished_at"] = ts
        outcome = AttemptOutcome(type(event).status.wire)
        changes.update(_end(state, ts, outcome, None))
    elif isinstance(event, TaskFailed):
        changes.update(finished_at=ts, error=event.error)
        changes.update(_end(state, ts, AttemptOutcome.ERROR, event.error))
    return msgspec.structs.replace(state, **changes)


def _naive(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _start(state: ActivityState, event: TaskStarted, ts: datetime) -> dict[str, Any]:
    history = list(state.attempt_history)
    due = state.due_at
    current = state.current
    if current is not None and current.outcome is None:
        # Started again while the last attempt is open: its worker died, and when the task
        # became due again (its lease expired) is not recorded.
        history[-1] = msgspec.structs.replace(current, outcome=AttemptOutcome.LOST)
        due = None
    wait = None if due is None else _seconds(due, ts)
    history.append(
        Attempt(
            attempt=state.attempts + 1,
            started_at=ts,
            worker=event.worker or None,
            due_at=due,
            queue_wait_seconds=wait,
        )
    )
    return {
        "attempt_history": tuple(history),
        "due_at": due,
        "worker": event.worker or None,
        "queue_wait_seconds": _plus(state.queue_wait_seconds, wait),
    }


def _end(
    state: ActivityState, ts: datetime, outcome: AttemptOutcome, error: str | None
) -> dict[str, Any]:
    """Close the open attempt, if one runs (a task may also end before it started)."""
    current = state.current
    if current is None or current.outcome is not None:
        return {}
    run = _seconds(current.started_at, ts)
    ended = msgspec.structs.replace(
        current, finished_at=ts, run_seconds=run, outcome=outcome, error=error
    )
    return {
        "attempt_history": (*state.attempt_history[:-1], ended),
        "run_seconds": _plus(state.run_seconds, run),
    }
