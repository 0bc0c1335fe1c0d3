"""Transitions: writes that commit in the same Redis transaction as a task's outcome.

A task definition may carry a transition hook (`TaskDefinition.transition`). When the task
ends for good (complete, error or canceled), the worker calls the hook with the task's
`task.queued` event and its `Outcome`, and the writes it returns are appended to the FINISH
script: they happen if and only if this worker's outcome is the one that stands, so exactly
once per task however often it was delivered. Pipelines use it to queue their next step,
unless their run was canceled meanwhile (`IfCanceled`, decided inside the transaction).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

from .events import Event, TaskQueued
from .results import Outcome


@dataclass(frozen=True)
class Append:
    """Append `event` to the event log."""

    event: Event


@dataclass(frozen=True)
class Queue:
    """Queue a task: its `task.queued` event goes to the log and to its queue's stream."""

    event: TaskQueued


@dataclass(frozen=True)
class Store:
    """End another task (agent id) with `outcome`: store it and wake its `get_result` waiters."""

    agent_id: UUID
    outcome: Outcome


@dataclass(frozen=True)
class IfCanceled:
    """Apply `then` if a cancel of `agent_id` was requested (its cancel marker exists when the
    transaction runs), else `otherwise`."""

    agent_id: UUID
    then: tuple[Write, ...]
    otherwise: tuple[Write, ...]


Write = Append | Queue | Store | IfCanceled
Transition = Callable[[TaskQueued, Outcome], Sequence[Write]]
"""`(queued event, outcome) -> writes`; must be importable by reference (it is pickled to
worker processes with its task definition)."""
