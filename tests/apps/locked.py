"""Handlers for the task-lock tests (module level, so that spawned worker processes can import
them): each records when it ran, in Redis, so that a test can check which runs overlapped."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from uuid import UUID

import redis
from pydantic import BaseModel

import agentexec as ax


class Job(BaseModel):
    customer_id: str
    label: str
    seconds: float = 0.2
    die_marker: str = ""
    """A path: the first run that finds no file there creates it and kills its worker."""


def spans_key() -> str:
    return f"{ax.CONF.key_prefix}:test:spans"


def record_span(context: Job, start: float, end: float) -> None:
    client = redis.Redis.from_url(ax.CONF.redis_url)
    try:
        span = {"label": context.label, "key": context.customer_id, "start": start, "end": end}
        client.rpush(spans_key(), json.dumps(span))
    finally:
        client.close()


async def job(agent_id: UUID, context: Job) -> str:
    start = time.time()
    if context.die_marker and not Path(context.die_marker).exists():
        Path(context.die_marker).write_text(str(os.getpid()))
        await asyncio.sleep(context.seconds)
        os._exit(13)
    await asyncio.sleep(context.seconds)
    record_span(context, start, time.time())
    return context.label


def spans(client: redis.Redis) -> list[dict[str, object]]:
    return [json.loads(s) for s in client.lrange(spans_key(), 0, -1)]


async def parent(agent_id: UUID, context: Job) -> str:
    """Queues a child of its own tenant and waits for it, holding its tenant's slot."""
    child = await ax.enqueue("free", Job(customer_id=context.customer_id, label="child"))
    return f"{context.label}: {await ax.get_result(child, timeout=60)}"
