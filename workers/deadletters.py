"""The dead-letter stream: entries that could not run, with the reason, and their re-drive."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import msgspec

from agentexec import events
from agentexec.errors import AgentexecError, EventDecodeError
from agentexec.events import TaskQueued
from agentexec.runtime import Runtime, current

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadLetter:
    id: str
    """Its id in the dead-letter stream."""
    stream: str
    """The stream the entry came from."""
    entry_id: str
    reason: str
    event: TaskQueued | None
    """The task, when the entry decodes."""
    raw: bytes


async def list_dead_letters(count: int = 100, runtime: Runtime | None = None) -> list[DeadLetter]:
    """The oldest `count` dead letters."""
    runtime = runtime or current()
    entries: Any = await runtime.redis().xrange(runtime.keys.dead_letters, count=count)
    return [_parse(entry_id, fields) for entry_id, fields in entries]


async def trim_dead_letters(retention: float, runtime: Runtime | None = None) -> int:
    """Delete the dead letters older than `retention` seconds (0: keep them all); returns how
    many. Trimmed by id (`XTRIM MINID`): a dead letter's id is the time it was written."""
    if retention <= 0:
        return 0
    runtime = runtime or current()
    client = runtime.redis()
    seconds, micros = await client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    minid = f"{max(0, now_ms - int(retention * 1000))}-0"
    removed = int(await client.xtrim(runtime.keys.dead_letters, minid=minid, approximate=False))
    if removed:
        logger.info("removed %d dead letter(s) older than %.0f seconds", removed, retention)
    return removed


def _parse(entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    raw = fields.get(events.EVENT_FIELD, b"")
    event: TaskQueued | None = None
    try:
        decoded = events.decode(raw)
        event = decoded if isinstance(decoded, TaskQueued) else None
    except EventDecodeError:
        pass
    return DeadLetter(
        id=entry_id.decode(),
        stream=fields.get(b"stream", b"").decode(),
        entry_id=fields.get(b"id", b"").decode(),
        reason=fields.get(b"reason", b"").decode(errors="replace"),
        event=event,
        raw=raw,
    )


async def redrive(dead_letter_id: str, runtime: Runtime | None = None) -> TaskQueued:
    """Queue a dead-lettered task again, as a new task (new agent id, `redriven_from` in its
    metadata): the old one's history stays as it ended. Removes the dead letter."""
    runtime = runtime or current()
    keys, client = runtime.keys, runtime.redis()
    found: Any = await client.xrange(keys.dead_letters, dead_letter_id, dead_letter_id)
    if not found:
        raise AgentexecError(f"no dead letter {dead_letter_id!r}; `agentexec dead list` shows them")
    letter = _parse(*found[0])
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
    await runtime.broker.enqueue(new)
    await client.xdel(keys.dead_letters, dead_letter_id)
    logger.info("re-drove dead letter %s as agent %s", dead_letter_id, new.agent_id)
    return new
