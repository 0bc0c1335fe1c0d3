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
from typing import Any
from uuid import UUID

from . import events
from .config import CONF
from .events import Event, TaskQueued
from .results import Outcome, encode_outcome
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


def script_args(writes: Sequence[Write], keys: Keys, script_keys: list[Any]) -> list[Any]:
    """Encode `writes` as ARGV for the scripts' `apply` function (see `agentexec.scripts`),
    adding the keys they touch to `script_keys` (each op names its key by 1-based index into
    KEYS)."""

    def key(name: str) -> int:
        if name not in script_keys:
            script_keys.append(name)
        return script_keys.index(name) + 1

    def encode(writes: Sequence[Write]) -> list[Any]:
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
            elif isinstance(write, Store):
                data = encode_outcome(write.outcome)
                args += ["s", key(keys.result(write.agent_id)), data, CONF.result_ttl]
                args += ["p", keys.result_channel(write.agent_id), data]
            else:
                marker = key(keys.cancel_marker(write.agent_id))
                then, otherwise = encode(write.then), encode(write.otherwise)
                args += ["?", marker, len(then), len(otherwise), *then, *otherwise]
        return args

    return encode(writes)
