"""Trackers: count the tasks of a dynamic fan-out and start the fan-in once, when all are done.

    tracker = ax.Tracker("research", batch_id)
    tracker.on_complete("aggregate", AggregateContext(batch_id=batch_id))  # queued exactly once

    tracker.incr()                       # before queueing each child
    await ax.enqueue("research", ResearchContext(company=company, batch_id=batch_id))

    tracker.decr()                       # in the child, when it is done

Every change is one atomic Redis script that also appends its event (`tracker.incremented`,
`tracker.decremented`, `tracker.completed`) to the event log. Inside a task, `decr()` counts
once per task (agent id), however often the task is retried or redelivered. The state expires
`ttl` seconds (default `AGENTEXEC_RESULT_TTL`) after the batch completes, or a day after its
last change if it never does.
"""

from __future__ import annotations

from typing import Any

import redis
from pydantic import BaseModel

from . import tenants
from .broker import Count
from .credentials import redact_url
from .errors import ConfigurationError, RedisUnavailableError
from .events import (
    Priority,
    TaskQueued,
    TrackerCompleted,
    TrackerDecremented,
    TrackerEvent,
    TrackerIncremented,
)
from .limits import check_name
from .queue import _resolve_queue, queued_event, unknown_parent
from .runtime import Runtime, current
from .streams import AGENT_TTL, tracker_id
from .tasks import RUNNING_TASK, ParentId, Task, parent_of, running_task

__all__ = ["Tracker"]


class Tracker:
    """The count of outstanding tasks of batch `batch_id` under `name`.

    Any process can build the same tracker from the same name and batch id. Calls are
    synchronous (one Redis round trip each), so they work in sync code and inside async
    tools alike. `ttl` is how many seconds the state outlives the batch's completion
    (default `AGENTEXEC_RESULT_TTL`).
    """

    def __init__(self, name: str, batch_id: object, *, ttl: int | None = None) -> None:
        if not isinstance(name, str) or not name.strip() or "{" in name or "}" in name:
            raise ConfigurationError(
                f"ax.Tracker({name!r}, ...): use a non-empty name without braces, e.g. 'research'."
            )
        check_name(name, "tracker name")  # its events carry it as their task name
        batch = str(batch_id)
        if not batch or "{" in batch or "}" in batch:
            raise ConfigurationError(
                f"ax.Tracker({name!r}, {batch_id!r}): use a non-empty batch id without braces, "
                "e.g. a UUID."
            )
        if ttl is not None and (not isinstance(ttl, int) or ttl < 1):
            raise ConfigurationError(f"ax.Tracker(..., ttl={ttl!r}): use whole seconds >= 1.")
        self.name = name
        self.batch_id = batch
        self.ttl = ttl
        self.id = tracker_id(name, batch)
        """The tracker's own id: the `agent_id` of its events."""

    def __repr__(self) -> str:
        return f"Tracker({self.name!r}, {self.batch_id!r})"

    def incr(self, key: str | None = None) -> int:
        """Expect one more task; returns how many are pending. With `key`, a second `incr`
        with the same key counts nothing (e.g. when the producing task may be retried)."""
        return self._run("incr", key, TrackerIncremented, "One more task expected.").pending

    def decr(self, key: str | None = None) -> int:
        """One task is done; returns how many are still pending.

        Counted once per `key`, which defaults to the running task's agent id: a task
        retried or redelivered three times decrements once. Outside a task and without a key,
        every call counts. When this makes the batch complete, the fan-in registered with
        `on_complete` is queued in the same transaction.
        """
        if key is None:
            running = running_task()
            key = str(running.agent_id) if running is not None else None
        return self._run("decr", key, TrackerDecremented, "A task finished.").pending

    def on_complete(
        self,
        task_name: str,
        context: BaseModel,
        *,
        priority: Priority | str = Priority.LOW,
        queue_name: str | None = None,
        metadata: dict[str, Any] | None = None,
        parent_id: ParentId = RUNNING_TASK,
        tenant: str | None = None,
    ) -> Task:
        """Queue task `task_name` with `context` exactly once, when the batch completes (at
        once if it already has). Returns the fan-in's `Task`; only the first registration
        counts, later ones return the first fan-in's agent id. The fan-in is a child of
        `parent_id`, by default of the task whose handler registers it, and has its tenant
        unless given one (see `ax.enqueue`)."""
        priority = Priority(priority)
        runtime = current()
        settings = runtime.settings
        queue = _resolve_queue(task_name, context, queue_name, settings)
        what = f"{self!r}.on_complete({task_name!r}, ...)"
        _, metadata = tenants.resolve(tenant, metadata, what)
        parent, explicit = parent_of(parent_id, what)
        if parent is not None and explicit:
            try:
                known = runtime.broker.known_sync(parent)
            except (redis.ConnectionError, redis.TimeoutError) as e:
                raise self._unavailable("on_complete", e, runtime) from e
            if not known:
                raise unknown_parent(parent, what, runtime)
        # The tracker's script queues the fan-in: it lives in the tracker's partition.
        partitions = runtime.partitions
        queued = queued_event(
            task_name,
            context,
            settings,
            agent_id=partitions.new_id(partitions.of(self.id)),
            queue=queue,
            priority=priority,
            metadata=metadata,
            parent_id=parent,
        )
        count = self._run("fan_in", None, TrackerCompleted, "", queued, runtime)
        assert count.fan_in_id is not None
        return Task(
            agent_id=count.fan_in_id, task_name=task_name, queue_name=queue, priority=priority
        )

    @property
    def pending(self) -> int:
        """Tasks expected and not yet done."""
        return self._counts()[0]

    @property
    def total(self) -> int:
        """Tasks expected in all (every counted `incr`)."""
        return self._counts()[1]

    @property
    def complete(self) -> bool:
        """True once at least one task was expected and none is pending."""
        pending, total = self._counts()
        return total > 0 and pending <= 0

    def _counts(self) -> tuple[int, int]:
        runtime = current()
        try:
            return runtime.broker.tracker_counts(self.name, self.batch_id)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise self._unavailable("read", e, runtime) from e

    def _run(
        self,
        op: str,
        key: str | None,
        kind: type[TrackerEvent],
        message: str,
        fan_in: TaskQueued | None = None,
        runtime: Runtime | None = None,
    ) -> Count:
        runtime = runtime or current()
        running = running_task()
        child = running.agent_id if running is not None else None
        event = kind(
            agent_id=self.id,
            task_name=self.name,
            tracker=self.name,
            batch_id=self.batch_id,
            child_id=child,
            message=message,
        )
        completed = TrackerCompleted(
            agent_id=self.id,
            task_name=self.name,
            tracker=self.name,
            batch_id=self.batch_id,
            child_id=child,
            message="Every task finished.",
        )
        done_ttl = self.ttl or runtime.settings.result_ttl
        try:
            return runtime.broker.track(
                self.name,
                self.batch_id,
                op,
                key,
                event,
                completed,
                (max(AGENT_TTL, done_ttl), done_ttl),
                fan_in,
            )
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise self._unavailable(op, e, runtime) from e

    def _unavailable(self, what: str, error: Exception, runtime: Runtime) -> RedisUnavailableError:
        url = runtime.settings.redis_url
        return RedisUnavailableError(
            f"{self!r}.{what}: Redis at {redact_url(url)} is unreachable ({error}); "
            "nothing was counted."
        )
