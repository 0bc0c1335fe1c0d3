"""Dead letters: entries that cannot run, kept with the reason in the dead-letter stream.

This module owns them: a worker's are written here (`dead_letter`, called by
`Endings.dead_letter`), listed (`agentexec dead list`), trimmed by housekeeping and re-driven
(`agentexec dead redrive`). The Broker holds their Redis commands.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import msgspec

from agentexec import events
from agentexec.broker import DeadLetter
from agentexec.consumer import Entry
from agentexec.errors import AgentexecError, EventDecodeError
from agentexec.events import Ending, TaskFailed, TaskQueued
from agentexec.limits import recordable
from agentexec.results import Outcome
from agentexec.runtime import Runtime, current

from .leases import identify

if TYPE_CHECKING:
    from .endings import Endings

__all__ = ["DeadLetter", "dead_letter", "list_dead_letters", "redrive", "trim_dead_letters"]

logger = logging.getLogger(__name__)


async def dead_letter(endings: Endings, entry: Entry, reason: str) -> None:
    """Move an entry that cannot run to the dead-letter stream; when its agent id can be
    read, the task ends ERROR so that its activity and waiters learn why."""
    consumer = endings.consumer
    stream, entry_id, fields = entry
    reason = recordable(reason)
    logger.error("worker %s: dead-lettering %s %s: %s", consumer.name, stream, entry_id, reason)
    ident = identify(fields)
    failed: TaskFailed | None = None
    outcome: Outcome | None = None
    error = f"dead-lettered: {reason}"
    queued = _queued(fields) if ident is not None else None
    attempt = queued.attempt if queued is not None else 1
    if ident is not None:
        failed = TaskFailed(
            agent_id=ident[0],
            task_name=ident[1],
            message=consumer.settings.activity_message_error.replace("{error}", error),
            error=error,
        )
        outcome = Outcome(Ending.ERROR, ident[1], error=error, attempts=attempt)
    done = await endings.persist(
        lambda _: consumer.dead_letter(entry, reason, failed, outcome), ending=(stream, entry_id)
    )
    if not done:
        logger.warning(
            "worker %s: %s %s was taken over or had ended; not dead-lettered here",
            consumer.name,
            stream,
            entry_id,
        )
        return
    if queued is not None:
        # The task's transition (a pipeline run ending ERROR) follows the dead letter that
        # stood; not in its script, whose arguments end with the entry's variable fields.
        writes = endings.transition(
            queued, Outcome(Ending.ERROR, queued.task_name, error=error, attempts=attempt)
        )
        if writes:
            await consumer.transition(writes)


def _queued(fields: dict[bytes, bytes]) -> TaskQueued | None:
    try:
        event = events.decode_entry(fields)
    except EventDecodeError:
        return None
    return event if isinstance(event, TaskQueued) else None


async def list_dead_letters(count: int = 100, runtime: Runtime | None = None) -> list[DeadLetter]:
    """The oldest `count` dead letters."""
    return await (runtime or current()).broker.dead_letters(count)


async def trim_dead_letters(retention: float, runtime: Runtime | None = None) -> int:
    """Delete the dead letters older than `retention` seconds (0: keep them all); returns how
    many."""
    if retention <= 0:
        return 0
    removed = await (runtime or current()).broker.trim_dead_letters(int(retention * 1000))
    if removed:
        logger.info("removed %d dead letter(s) older than %.0f seconds", removed, retention)
    return removed


async def redrive(dead_letter_id: str, runtime: Runtime | None = None) -> TaskQueued:
    """Queue a dead-lettered task again, as a new task (new agent id, `redriven_from` in its
    metadata): the old one's history stays as it ended. Removes the dead letter."""
    broker = (runtime or current()).broker
    letter = await broker.dead_letter_at(dead_letter_id)
    if letter is None:
        raise AgentexecError(f"no dead letter {dead_letter_id!r}; `agentexec dead list` shows them")
    if letter.event is None or not letter.event.queue:
        raise AgentexecError(
            f"dead letter {dead_letter_id} ({letter.reason}) is not a decodable task and cannot "
            "be re-driven; inspect it with `redis-cli XRANGE` and delete it."
        )
    old = letter.event
    metadata: dict[str, Any] = {**(old.metadata or {}), "redriven_from": str(old.agent_id)}
    new = msgspec.structs.replace(
        old, agent_id=uuid4(), attempt=1, ts=events.utcnow(), metadata=metadata
    )
    await broker.enqueue(new)
    await broker.remove_dead_letter(dead_letter_id)
    logger.info("re-drove dead letter %s as agent %s", dead_letter_id, new.agent_id)
    return new
