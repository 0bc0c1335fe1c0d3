"""Two pools on two queues in one Redis (seed 000, "Multiple Worker Types")."""

from __future__ import annotations

import os
from uuid import UUID

from pydantic import BaseModel

import agentexec as ax


class EmailContext(BaseModel):
    to: str


class ResearchContext(BaseModel):
    company: str


email_pool = ax.Pool(queue_name="email_queue", num_workers=1)
research_pool = ax.Pool(queue_name="research_queue", num_workers=1)


@email_pool.task("send_email")
async def send_email(agent_id: UUID, context: EmailContext) -> str:
    return f"email to {context.to} from pid {os.getpid()}"


@research_pool.task("research_company")
async def research_company(agent_id: UUID, context: ResearchContext) -> str:
    return f"research on {context.company} from pid {os.getpid()}"
