"""`enqueue`: validate a context, then append the task and its `task.queued` event atomically."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import msgspec
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

from . import tasks, tenants, tracing
from .config import Settings
from .connection import REDIS_ERRORS
from .credentials import redact_url
from .errors import ContextError, RedisUnavailableError, UnknownActivityError
from .events import Priority, TaskCancelRequested, TaskQueued
from .limits import check_name, check_queue_name
from .locks import KEY, format_key
from .runtime import Runtime, current
from .streams import AGENT_TTL
from .tasks import RUNNING_TASK, ParentId, Task, TaskDefinition, parent_of


def _resolve_queue(task_name: str, context: Any, queue_name: str | None, settings: Settings) -> str:
    """The queue the task goes to; `ContextError` or `ValueError`, naming the fix, for what no
    worker could run."""
    return _route(task_name, context, queue_name, settings)[0]


def _route(
    task_name: str, context: Any, queue_name: str | None, settings: Settings
) -> tuple[str, str | None]:
    """`_resolve_queue`, and the name of the lock key the task takes there (`_lock_of`)."""
    check_name(task_name, "task name")
    if queue_name is not None:
        check_queue_name(queue_name)
    if not isinstance(context, BaseModel):
        raise ContextError(
            f"enqueue({task_name!r}, ...): context is a {type(context).__name__}, not a "
            "Pydantic model; wrap the data in the task's context model."
        )
    definitions = tasks.known(task_name)
    if queue_name is None:
        queue_name = _only_queue(task_name, context, definitions, settings)
    # Check against the handlers that serve the queue the task goes to; a name may be
    # registered on several queues with different context types.
    expected = {d.context_type for d in definitions if d.queue_name == queue_name}
    if expected and not isinstance(context, tuple(expected)):
        names = " or ".join(sorted(f"{t.__module__}.{t.__qualname__}" for t in expected))
        example = min(t.__name__ for t in expected)
        raise ContextError(
            f"enqueue({task_name!r}, ...): context is a {type(context).__name__}, but the task "
            f"on queue {queue_name!r} takes {names}; pass {example}(...)."
        )
    # A key no worker could lock is refused here.
    return queue_name, _lock_of(task_name, context, queue_name)


def _lock_of(task_name: str, context: BaseModel, queue_name: str) -> str | None:
    """The name of the lock key the task takes on `queue_name` (see `agentexec.locks`), when
    this process knows the task's definition there. Every such definition's key must format
    (`ContextError` otherwise); the first one names the lock."""
    keys = [
        KEY + format_key(definition.lock_key, context, f"enqueue({task_name!r}, ...)")
        for definition in tasks.known(task_name)
        if definition.queue_name == queue_name and definition.lock_key is not None
    ]
    return keys[0] if keys else None


def _only_queue(
    task_name: str, context: BaseModel, definitions: list[TaskDefinition], settings: Settings
) -> str:
    """The queue of a task enqueued without `queue_name`: the one queue its name is registered
    on in this process, else the one whose handler takes this context's type, else the
    default queue when it is among them; refused when still ambiguous (a guess could queue it
    where no worker serves it)."""
    queues = {d.queue_name for d in definitions}
    if len(queues) > 1:
        taking = {d.queue_name for d in definitions if isinstance(context, d.context_type)}
        queues = taking if len(taking) == 1 else queues
    if len(queues) == 1:
        return queues.pop()
    if not queues or settings.queue_name in queues:
        return settings.queue_name
    raise ValueError(
        f"enqueue({task_name!r}, ...): {task_name!r} is registered on the queues "
        f"{', '.join(sorted(queues))} in this process, and the default queue "
        f"{settings.queue_name!r} is not one of them; pass queue_name= one of them."
    )


def serialise_context(task_name: str, context: BaseModel, settings: Settings) -> bytes:
    """The context's JSON, checked against `AGENTEXEC_MAX_CONTEXT_BYTES`."""
    try:
        data = context.model_dump_json().encode()
    except PydanticSerializationError as e:
        raise ContextError(
            f"enqueue({task_name!r}, ...): the {type(context).__name__} context cannot be "
            f"serialised to JSON ({e}); use JSON-compatible field types."
        ) from e
    if len(data) > settings.max_context_bytes:
        raise ContextError(
            f"enqueue({task_name!r}, ...): the context is {len(data):,} bytes, above the "
            f"{settings.max_context_bytes:,}-byte limit (AGENTEXEC_MAX_CONTEXT_BYTES); store large "
            "data elsewhere and pass a reference to it."
        )
    return data


async def enqueue(
    task_name: str,
    context: BaseModel,
    *,
    priority: Priority | str = Priority.LOW,
    queue_name: str | None = None,
    idempotency_key: str | None = None,
    timeout: float | None = None,
    delay: float | timedelta | datetime | None = None,
    metadata: dict[str, Any] | None = None,
    parent_id: ParentId = RUNNING_TASK,
    tenant: str | None = None,
) -> Task:
    """Queue `task_name` with `context` and return its `Task` (carrying the new `agent_id`).

    The task and its `task.queued` event are appended atomically. `queue_name` defaults to
    the queue of the pool that registered the task in this process, else
    `AGENTEXEC_QUEUE_NAME`. With `idempotency_key`, a second enqueue with the same key within
    `AGENTEXEC_IDEMPOTENCY_WINDOW` seconds queues nothing and returns the first `Task` again.
    `timeout` (seconds) bounds each attempt of the handler, overriding the task's own.
    `delay` (seconds, a timedelta, or a timezone-aware datetime to run at) parks the task
    until it is due; no worker holds it meanwhile.

    `parent_id` places the task in a tree (see `ax.activity.children`): by default the task
    whose handler calls `enqueue`, if any; `parent_id=None` for none. Canceling a task also
    cancels its children that have not ended. Raises `InvalidAgentIdError` for a parent id
    that is not a UUID, and `UnknownActivityError` for one no task or activity used lately
    (as `ax.activity.update` does).

    `tenant` (or `metadata={"tenant": ...}`) says who the task belongs to: lists, statistics
    and feeds can be scoped to it (see docs/tenants.md). By default a task queued from a
    handler gets the tenant of the task whose handler queues it. Raises ValueError for a
    tenant that is not 1 to 128 letters, digits or `_.:@-`, or that differs from
    `metadata["tenant"]`.

    While Redis is unreachable the call retries with backoff for up to
    `AGENTEXEC_ENQUEUE_TIMEOUT` seconds (safely: a task is never queued twice), then raises
    `RedisUnavailableError`. Raises `ContextError` for a context that is not a model of the
    registered type, does not serialise, or is too large.
    """
    try:
        priority = Priority(priority)
    except ValueError:
        raise ValueError(
            f"enqueue({task_name!r}, ...): priority {priority!r} is not one of "
            "ax.Priority.HIGH or ax.Priority.LOW."
        ) from None
    if timeout is not None and not timeout > 0:
        raise ValueError(f"enqueue({task_name!r}, ...): timeout={timeout!r}; use seconds > 0.")
    if idempotency_key is not None and not (isinstance(idempotency_key, str) and idempotency_key):
        raise ValueError(
            f"enqueue({task_name!r}, ...): idempotency_key={idempotency_key!r}; use a "
            "non-empty string."
        )
    due = _due(task_name, delay)
    _, metadata = tenants.resolve(tenant, metadata, f"enqueue({task_name!r}, ...)")
    runtime = current()
    settings = runtime.settings
    queue, lock = _route(task_name, context, queue_name, settings)
    parent = await check_parent(parent_id, f"enqueue({task_name!r}, ...)", runtime)
    # A task with a lock key lives in its key's partition, where its lock is (the locks of
    # a key are per partition: see `agentexec.locks`), unless its idempotency key places it.
    placed_by = _dedup(idempotency_key) or lock
    event = queued_event(
        task_name,
        context,
        settings,
        agent_id=runtime.partitions.task_id(parent, placed_by),
        queue=queue,
        priority=priority,
        timeout=timeout,
        not_before=due,
        metadata=metadata,
        parent_id=parent,
    )
    return await queue_event(
        runtime,
        event,
        due,
        idempotency_key,
        f"enqueue({task_name!r}, ...)",
        "The task was not queued.",
    )


async def queue_event(
    runtime: Runtime,
    event: TaskQueued,
    due: datetime | None,
    idempotency_key: str | None,
    what: str,
    consequence: str,
) -> Task:
    """Append `event` to the log and its task to its queue (to the delayed set until `due`),
    at most once per agent id (and per `idempotency_key` when given)."""
    assert event.queue is not None
    dedup = _dedup(idempotency_key)
    with tracing.enqueueing(event):
        queued = await runtime.broker.enqueue(
            event, due=due, dedup=dedup, what=what, consequence=consequence
        )
    return Task(
        agent_id=queued.agent_id,
        task_name=event.task_name,
        queue_name=event.queue,
        priority=event.priority,
        event_id=queued.event_id,
    )


def _dedup(idempotency_key: str | None) -> str | None:
    """The dedup name of an idempotency key (see `Broker.enqueue`)."""
    return None if idempotency_key is None else f"key:{idempotency_key}"


def queued_event(
    task_name: str,
    context: BaseModel,
    settings: Settings,
    agent_id: UUID | None = None,
    **fields: Any,
) -> TaskQueued:
    """The `task.queued` event of a new task (`agent_id`, or a new one, the serialised
    `context`, the configured first message), with `fields` (queue, priority, parent_id,
    ...): one shape for `enqueue` and a tracker's fan-in. Its tenant is the one
    `metadata["tenant"]` holds."""
    return TaskQueued(
        agent_id=uuid4() if agent_id is None else agent_id,
        task_name=task_name,
        context=msgspec.Raw(serialise_context(task_name, context, settings)),
        message=settings.activity_message_create,
        **fields,
    )


async def check_parent(parent_id: ParentId, what: str, runtime: Runtime) -> UUID | None:
    """The parent a task queued by `what` records (see `enqueue`), checked."""
    parent, explicit = parent_of(parent_id, what)
    if parent is None or not explicit:
        return parent
    try:
        known = await runtime.broker.known(parent)
    except REDIS_ERRORS as e:
        raise RedisUnavailableError(
            f"{what}: Redis at {redact_url(runtime.settings.redis_url)} is unreachable: {e}; "
            "nothing was queued."
        ) from e
    if not known:
        raise unknown_parent(parent, what, runtime)
    return parent


def unknown_parent(parent: UUID, what: str, runtime: Runtime) -> UnknownActivityError:
    return UnknownActivityError(
        f"{what}: parent_id {parent} is not known: no task was enqueued and no activity "
        f"created with it in the last {AGENT_TTL // 3600} hours (namespace "
        f"{runtime.keys.prefix!r}); pass the agent_id of the parent task, or parent_id=None."
    )


def _due(task_name: str, delay: float | timedelta | datetime | None) -> datetime | None:
    if delay is None:
        return None
    if isinstance(delay, datetime):
        if delay.tzinfo is None:
            raise ValueError(
                f"enqueue({task_name!r}, ...): delay={delay!r} has no time zone; pass an aware "
                "datetime, e.g. datetime(..., tzinfo=timezone.utc)."
            )
        return delay.astimezone(UTC)
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    if seconds < 0:
        raise ValueError(f"enqueue({task_name!r}, ...): delay={delay!r} is negative.")
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def cancel(agent_id: UUID | str) -> bool:
    """Cancel a queued or running task, wherever it runs; returns False if it already ended.

    The cancel is recorded as an event; the worker that holds the task (or the next one to
    take it) stops it and ends it CANCELED, and `get_result` raises `TaskFailedError`.
    Canceling a pipeline run (the agent id `pipeline.enqueue` returned) cancels its current
    step the same way, queues no further step, and ends the run CANCELED.
    """
    try:
        aid = agent_id if isinstance(agent_id, UUID) else UUID(str(agent_id))
    except ValueError:
        raise ValueError(f"cancel({agent_id!r}): not a UUID; pass the task's agent_id.") from None
    requested = TaskCancelRequested(agent_id=aid, task_name="", message="Cancel requested.")
    runtime = current()
    try:
        return await runtime.broker.cancel(requested)
    except REDIS_ERRORS as e:
        raise RedisUnavailableError(
            f"cancel({aid}): Redis at {redact_url(runtime.settings.redis_url)} is unreachable: {e}"
        ) from e
