"""Transitions: writes that commit in the same Redis transaction as a task's outcome.

A task definition may carry a transition hook (`TaskDefinition.transition`). When the task
ends for good (complete, error or canceled), the worker calls the hook with the task's
`task.queued` event and its `Outcome`, and the writes it returns are appended to the FINISH
script: they happen if and only if this worker's outcome is the one that stands, so exactly
once per task however often it was delivered. Pipelines use it to queue their next step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from . import events
from .config import CONF
from .events import Event, TaskQueued
from .results import Outcome, outcome_encoder
from .streams import AGENT_TTL, Keys


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


Write = Append | Queue | Store
Transition = Callable[[TaskQueued, Outcome], Sequence[Write]]
"""`(queued event, outcome) -> writes`; must be importable by reference (it is pickled to
worker processes with its task definition)."""


def script_args(writes: Sequence[Write], keys: Keys, script_keys: list[Any]) -> list[Any]:
    """Encode `writes` as the FINISH script's trailing ARGV, adding the keys they touch to
    `script_keys` (each op names its key by 1-based index into KEYS)."""

    def key(name: str) -> int:
        if name not in script_keys:
            script_keys.append(name)
        return script_keys.index(name) + 1

    args: list[Any] = []
    for write in writes:
        if isinstance(write, Append):
            args += ["x", key(keys.events), events.encode(write.event)]
        elif isinstance(write, Queue):
            queued = write.event
            if queued.queue is None:
                raise ValueError(f"cannot queue {queued.task_name!r}: its event has no queue")
            data = events.encode(queued)
            args += ["x", key(keys.events), data]
            args += ["x", key(keys.queue(queued.queue, queued.priority)), data]
            args += ["s", key(keys.agent(queued.agent_id)), "1", AGENT_TTL]
        else:
            data = outcome_encoder.encode(write.outcome)
            args += ["s", key(keys.result(write.agent_id)), data, CONF.result_ttl]
            args += ["p", keys.result_channel(write.agent_id), data]
    return args


def add_to_pipeline(pipe: Any, writes: Sequence[Write], keys: Keys) -> None:
    """Queue `writes` on a redis-py pipeline (for paths that do not use the FINISH script)."""
    for write in writes:
        if isinstance(write, Append):
            pipe.xadd(keys.events, events.entry(write.event))
        elif isinstance(write, Queue):
            queued = write.event
            assert queued.queue is not None
            pipe.xadd(keys.events, events.entry(queued))
            pipe.xadd(keys.queue(queued.queue, queued.priority), events.entry(queued))
            pipe.set(keys.agent(queued.agent_id), "1", ex=AGENT_TTL)
        else:
            data = outcome_encoder.encode(write.outcome)
            pipe.set(keys.result(write.agent_id), data, ex=CONF.result_ttl)
            pipe.publish(keys.result_channel(write.agent_id), data)
