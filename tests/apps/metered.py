"""A pool whose tasks wait for a file, so that tests can hold tasks in its queue and scrape
its metrics meanwhile (module level, so that worker processes can import it)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from uuid import UUID

from pydantic import BaseModel

import agentexec as ax

QUEUE = "metered"


class Gate(BaseModel):
    """The handler returns once `path` exists (after at most `limit` seconds)."""

    path: str
    limit: float = 120.0


pool = ax.Pool(queue_name=QUEUE, num_workers=1, concurrency=2)


@pool.task("held")
async def held(agent_id: UUID, context: Gate) -> str:
    for _ in range(int(context.limit / 0.02)):
        if Path(context.path).exists():
            return "released"
        await asyncio.sleep(0.02)
    return "timed out"
