"""`enqueue`: validate a context, then append the task and its `task.queued` event atomically."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import msgspec
import redis
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

from . import events, tasks
from .config import CONF
from .connection import get_redis
from .errors import ContextError, RedisUnavailableError
from .events import Priority, TaskQueued
from .streams import AGENT_TTL, Keys
from .tasks import Task


def _resolve_queue(task_name: str, context: Any, queue_name: str | None) -> str:
    if not isinstance(context, BaseModel):
        raise ContextError(
            f"enqueue({task_name!r}, ...): context is a {type(context).__name__}, not a "
            "Pydantic model; wrap the data in the task's context model."
        )
    definitions = tasks.known(task_name)
    if queue_name is not None:
        definitions = [d for d in definitions if d.queue_name == queue_name]
    for definition in definitions[:1]:
        expected = definition.context_type
        if not isinstance(context, expected):
            raise ContextError(
                f"enqueue({task_name!r}, ...): context is a {type(context).__name__}, but the "
                f"task takes {expected.__module__}.{expected.__qualname__}; pass "
                f"{expected.__name__}(...)."
            )
    if queue_name is not None:
        return queue_name
    queues = {d.queue_name for d in definitions}
    return queues.pop() if len(queues) == 1 else CONF.queue_name


def serialise_context(task_name: str, context: BaseModel) -> bytes:
    """The context's JSON, checked against `AGENTEXEC_MAX_CONTEXT_BYTES`."""
    try:
        data = context.model_dump_json().encode()
    except PydanticSerializationError as e:
        raise ContextError(
            f"enqueue({task_name!r}, ...): the {type(context).__name__} context cannot be "
            f"serialised to JSON ({e}); use JSON-compatible field types."
        ) from e
    if len(data) > CONF.max_context_bytes:
        raise ContextError(
            f"enqueue({task_name!r}, ...): the context is {len(data):,} bytes, above the "
            f"{CONF.max_context_bytes:,}-byte limit (AGENTEXEC_MAX_CONTEXT_BYTES); store large "
            "data elsewhere and pass a reference to it."
        )
    return data


async def enqueue(
    task_name: str,
    context: BaseModel,
    *,
    priority: Priority | str = Priority.LOW,
    queue_name: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Task:
    """Queue `task_name` with `context` and return its `Task` (carrying the new `agent_id`).

    The task and its `task.queued` event are appended in one Redis transaction. `queue_name`
    defaults to the queue of the pool that registered the task in this process, else
    `AGENTEXEC_QUEUE_NAME`. Raises `ContextError` for a context that is not a model of the
    registered type, does not serialise, or is too large; `RedisUnavailableError` when Redis
    cannot be reached.
    """
    try:
        priority = Priority(priority)
    except ValueError:
        raise ValueError(
            f"enqueue({task_name!r}, ...): priority {priority!r} is not one of "
            "ax.Priority.HIGH or ax.Priority.LOW."
        ) from None
    queue = _resolve_queue(task_name, context, queue_name)
    event = TaskQueued(
        agent_id=uuid4(),
        task_name=task_name,
        queue=queue,
        priority=priority,
        context=msgspec.Raw(serialise_context(task_name, context)),
        message=CONF.activity_message_create,
        metadata=metadata,
    )
    payload = events.entry(event)
    keys = Keys(CONF.key_prefix)
    try:
        async with get_redis().pipeline(transaction=True) as pipe:
            pipe.xadd(keys.events, payload)
            pipe.xadd(keys.queue(queue, priority), payload)
            pipe.set(keys.agent(event.agent_id), b"1", ex=AGENT_TTL)
            event_id, *_ = await pipe.execute()
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise RedisUnavailableError(
            f"enqueue({task_name!r}, ...): Redis at {CONF.redis_url} is unreachable ({e}); "
            "the task was not queued."
        ) from e
    return Task(
        agent_id=event.agent_id,
        task_name=task_name,
        queue_name=queue,
        priority=priority,
        event_id=event_id.decode(),
    )
