"""Two pools on one queue, both declaring the same every-second schedule."""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel

import agentexec as ax


class Tick(BaseModel):
    label: str = "tick"


first = ax.Pool(queue_name="cron_queue", num_workers=1)
second = ax.Pool(queue_name="cron_queue", num_workers=1)


async def tick(agent_id: UUID, context: Tick) -> str:
    return context.label


first.schedule("tick", "* * * * * *")(tick)
second.schedule("tick", "* * * * * *", tz="Europe/Paris")(tick)
