"""The outbox: how the events written inside a task's handler reach the log.

Each append is fenced by the task's lease (`Broker.append_held`): once another worker has taken
the task over, a late worker's events are discarded. The appends of one agent id go through
one chain, in the order they were written: an async handler calling the sync activity API
queues its events (`queue`) and the worker's event loop appends them; an async writer (a
runner, a pipeline) awaits its own append after those (`append`); the worker waits for the
chain (`flush_events`) before it records the task's outcome. A sync handler's thread appends
at once (`append_sync`). Callers go through `agentexec.eventlog.EventLog`.
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
    from .broker import Broker

__all__ = ["append", "append_sync", "flush_events", "on_event_loop", "queue"]

logger = logging.getLogger(__name__)


def on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


_chains: dict[UUID, asyncio.Task[str]] = {}
"""The last append of each agent id written from async code; each waits for the one before
it, so an agent's events keep their order."""


def _chain(event: Event, append: asyncio.Task[str]) -> None:
    agent_id = event.agent_id
    _chains[agent_id] = append

    def forget(done: asyncio.Task[str]) -> None:
        if _chains.get(agent_id) is done:
            del _chains[agent_id]

    append.add_done_callback(forget)


def queue(broker: Broker, event: Event, lease: TaskLease) -> None:
    """Append `event` after the agent's earlier ones, from the running event loop, without
    waiting: retried while Redis is unreachable, for as long as it takes (the worker keeps the
    task's lease meanwhile, and records its outcome only after this event)."""
    previous = _chains.get(event.agent_id)
    _chain(event, asyncio.get_running_loop().create_task(_queued(broker, event, lease, previous)))


async def append(
    broker: Broker,
    event: Event,
    lease: TaskLease,
    checkpoint: tuple[str, bytes] | None = None,
    *,
    wait: float = 0.0,
) -> str:
    """Append `event` after the agent's earlier ones and wait for it; "" when the worker lost
    the task. With `checkpoint` (run name, conversation), save it in the same step (see
    `Broker.checkpoint_held`). Redis errors are raised: at once, or with `wait`, once Redis
    stayed unreachable that many seconds (retried meanwhile; a retry after a lost reply never
    appends twice)."""
    previous = _chains.get(event.agent_id)
    once = _once(broker, event, lease, previous, checkpoint, wait)
    task = asyncio.get_running_loop().create_task(once)
    _chain(event, task)
    return await task


async def flush_events(agent_id: UUID) -> None:
    """Wait until the events a task's async handler wrote are appended; the worker calls it
    before it records the task's outcome, so that they come before it in the log."""
    task = _chains.get(agent_id)
    if task is not None:
        await asyncio.wait([task])


async def _once(
    broker: Broker,
    event: Event,
    lease: TaskLease,
    previous: asyncio.Task[str] | None,
    checkpoint: tuple[str, bytes] | None = None,
    wait: float = 0.0,
) -> str:
    if previous is not None:
        await asyncio.wait([previous])
    dedup = _dedup()
    deadline = time.monotonic() + wait
    outage = Reconnect(f"events of agent {event.agent_id}", maximum=0.25)
    while True:
        try:
            if checkpoint is not None:
                run, conversation = checkpoint
                saved = await broker.checkpoint_held(event, lease, dedup, run, conversation)
                return _appended(event, saved)
            return _appended(event, await broker.append_held(event, lease, dedup))
        except REDIS_ERRORS as e:
            if time.monotonic() >= deadline:
                raise
            await outage.failed(e)


async def _queued(
    broker: Broker, event: Event, lease: TaskLease, previous: asyncio.Task[str] | None
) -> str:
    if previous is not None:
        await asyncio.wait([previous])
    dedup = _dedup()
    # No deadline: see `queue`; nothing the handler reported is dropped.
    outage = Reconnect(f"events of agent {event.agent_id}")
    while True:
        try:
            return _appended(event, await broker.append_held(event, lease, dedup))
        except REDIS_ERRORS as e:
            await outage.failed(e)


def append_sync(broker: Broker, event: Event, lease: TaskLease) -> str:
    """Append `event` from a sync handler's thread; "" when the worker lost the task.

    While Redis is unreachable this waits and retries (the handler is paused, not failed),
    for up to `AGENTEXEC_ENQUEUE_TIMEOUT` seconds, then raises `RedisUnavailableError`; a
    retry after a lost reply never appends twice.
    """
    dedup, settings = _dedup(), broker.settings
    deadline = time.monotonic() + settings.enqueue_timeout
    delay = 0.05
    while True:
        try:
            return _appended(event, broker.append_held_sync(event, lease, dedup))
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


def _appended(event: Event, entry_id: str | None) -> str:
    if entry_id is None:
        # Another worker took the task over after this one's lease expired (as after a
        # freeze): a late worker cannot write into the run that replaced it.
        logger.warning(
            "agent %s: this worker lost the task to another one; %s discarded",
            event.agent_id,
            type(event).__name__,
        )
        return ""
    return entry_id


def _dedup() -> str:
    """A new dedup name for one append (see `Broker.append_held`): its retries after a lost
    reply share it."""
    return f"event:{uuid4()}"
