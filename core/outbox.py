"""The events a task's handler appends while its worker holds the task's lease.

Each append is fenced by the lease (`Broker.append_held`): once another worker has taken the task
over, a late worker's events are discarded. An async handler's appends are queued in order
and appended by the worker's event loop; the worker waits for them (`flush_events`) before it
records the task's outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

from .connection import REDIS_ERRORS, Reconnect
from .credentials import redact_url
from .errors import RedisUnavailableError
from .events import Event
from .tasks import TaskLease

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = [
    "append_held",
    "flush_events",
    "held_dedup",
    "log_discarded",
    "on_event_loop",
    "queue_held",
]

logger = logging.getLogger(__name__)


def on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


_outbox: dict[UUID, asyncio.Task[None]] = {}
"""The last queued append of each task whose async handler wrote events; each waits for the
one before it, so a task's events keep their order."""


def queue_held(runtime: Runtime, event: Event, lease: TaskLease) -> None:
    agent_id = event.agent_id
    task = asyncio.get_running_loop().create_task(
        _append_held_async(runtime, event, lease, _outbox.get(agent_id))
    )
    _outbox[agent_id] = task

    def forget(done: asyncio.Task[None]) -> None:
        if _outbox.get(agent_id) is done:
            del _outbox[agent_id]

    task.add_done_callback(forget)


async def flush_events(agent_id: UUID) -> None:
    """Wait until the events a task's async handler wrote are appended; the worker calls it
    before it records the task's outcome, so that they come before it in the log."""
    task = _outbox.get(agent_id)
    if task is not None:
        await asyncio.wait([task])


async def _append_held_async(
    runtime: Runtime, event: Event, lease: TaskLease, previous: asyncio.Task[None] | None
) -> None:
    if previous is not None:
        await asyncio.wait([previous])
    broker, dedup = runtime.broker, held_dedup()
    # No deadline: the worker keeps the task's lease meanwhile, and records its outcome only
    # after this event (see `flush_events`), so nothing the handler reported is dropped.
    outage = Reconnect(f"events of agent {event.agent_id}")
    while True:
        try:
            entry_id = await broker.append_held(event, lease, dedup)
            break
        except REDIS_ERRORS as e:
            await outage.failed(e)
    if entry_id is None:
        log_discarded(event)


def log_discarded(event: Event) -> None:
    """Say that a handler's event was refused: its worker lost the task to another."""
    logger.warning(
        "agent %s: this worker lost the task to another one; %s discarded",
        event.agent_id,
        type(event).__name__,
    )


def held_dedup() -> str:
    """A new dedup name for one append of a handler's event (see `Broker.append_held`): its
    retries after a lost reply share it."""
    return f"event:{uuid4()}"


def append_held(runtime: Runtime, event: Event, lease: TaskLease) -> str:
    """Append an event of a task from inside its handler, in a worker.

    While Redis is unreachable this waits and retries (the handler is paused, not failed),
    for up to `AGENTEXEC_ENQUEUE_TIMEOUT` seconds, then raises `RedisUnavailableError`; a
    retry after a lost reply never appends twice. Once the worker has lost the task (another
    worker took it over after the lease expired, as after a freeze) the event is discarded
    with a warning and "" is returned: a late worker cannot write into the run that
    replaced it.
    """
    broker, dedup, settings = runtime.broker, held_dedup(), runtime.settings
    deadline = time.monotonic() + settings.enqueue_timeout
    delay = 0.05
    while True:
        try:
            entry_id = broker.append_held_sync(event, lease, dedup)
            break
        except REDIS_ERRORS as e:
            if time.monotonic() >= deadline:
                raise RedisUnavailableError(
                    f"could not record {type(event).__name__} for agent {event.agent_id}: "
                    f"Redis at {redact_url(settings.redis_url)} was unreachable for "
                    f"{settings.enqueue_timeout}s (AGENTEXEC_ENQUEUE_TIMEOUT): {e}"
                ) from e
            if delay == 0.05:
                logger.warning("agent %s: Redis unreachable (%s); retrying", event.agent_id, e)
            # Only a sync handler's own thread waits here, never the worker's event loop.
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
    if entry_id is None:
        log_discarded(event)
        return ""
    return entry_id
