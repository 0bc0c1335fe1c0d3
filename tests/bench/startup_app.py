"""The user's module of the start-up benchmark: one small task, as in seed 001's worker.py."""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel

import agentexec as ax


class Ping(BaseModel):
    n: int = 0


pool = ax.Pool(queue_name="startup-bench", num_workers=2, concurrency=4)


@pool.task("ping")
async def ping(agent_id: UUID, context: Ping) -> int:
    return context.n + 1
