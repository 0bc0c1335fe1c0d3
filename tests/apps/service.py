"""The task of seed 001's worker-service samples, for a pool that takes over their tasks."""

from __future__ import annotations

import asyncio
import os
from uuid import UUID

from pydantic import BaseModel

import agentexec as ax


class Gate(BaseModel):
    gate: str


pool = ax.Pool(num_workers=1)


@pool.task("my_task")
async def my_task(agent_id: UUID, context: Gate) -> None:
    """Waits until the file `context.gate` exists, so that a test decides when it ends."""
    # The file is written by another process: nothing to wait on but the file system.
    while not os.path.exists(context.gate):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
