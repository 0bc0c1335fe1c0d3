"""An application that only has an `AsyncEngine`: its pool is given the async engine (and runs
the projector through the engine's sync twin), its handlers report with `ax.activity.aio`,
and its own code tracks work and reads the read model with `AsyncSession`s. Nothing here
makes a sync engine or session.

Module level, so that spawned worker processes can import it. The database is
`AIO_APP_DATABASE_URL` (default `sqlite+aiosqlite:///aio_app.db`); the tests point
`pool.engine` at theirs before starting the pool.
"""

from __future__ import annotations

import os
from typing import Any
from uuid import UUID

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

import agentexec as ax

engine = create_async_engine(
    os.environ.get("AIO_APP_DATABASE_URL", "sqlite+aiosqlite:///aio_app.db")
)
pool = ax.Pool(engine=engine, queue_name="aio", num_workers=1, concurrency=4)


class Steps(BaseModel):
    steps: int = 3
    give_up: bool = False


class Fan(BaseModel):
    children: int = 2


@pool.task("aio_steps")
async def steps(agent_id: UUID, context: Steps) -> list[str]:
    """Reports each step; returns the stream ids its updates got. With `give_up`, ends
    ERROR with its own verdict."""
    ids = []
    for i in range(1, context.steps + 1):
        ids.append(
            await ax.activity.aio.update(
                agent_id, f"step {i} of {context.steps}", percentage=i * 100 // context.steps
            )
        )
    if context.give_up:
        await ax.activity.aio.error(agent_id, "gave up after the last step")
    return ids


@pool.task("aio_fan")
async def fan(agent_id: UUID, context: Fan) -> list[str]:
    """Queues `children` step tasks (its children) and reports that it did."""
    kids = [await ax.enqueue("aio_steps", Steps(steps=1)) for _ in range(context.children)]
    await ax.activity.aio.update(agent_id, f"queued {len(kids)} children", percentage=50)
    return [str(kid.agent_id) for kid in kids]


async def create_tables(db: AsyncEngine) -> None:
    async with db.begin() as conn:
        await conn.run_sync(ax.Base.metadata.create_all)


async def track_import(rows: int) -> UUID:
    """Work done by the application itself (no worker), tracked as an activity."""
    agent_id = await ax.activity.aio.create("import", f"Importing {rows} rows")
    await ax.activity.aio.update(agent_id, "half way", percentage=50)
    await ax.activity.aio.complete(agent_id, f"Imported {rows} rows")
    return agent_id


async def track_failed_import() -> UUID:
    agent_id = await ax.activity.aio.create("import")
    await ax.activity.aio.error(agent_id, error="disk full")
    return agent_id


async def report(db: AsyncEngine, agent_ids: list[UUID]) -> dict[str, Any]:
    """Everything the read side says about the application's work, read asynchronously."""
    async with AsyncSession(db) as session:
        return {
            "list": await ax.activity.aio.list(session, page_size=100),
            "details": [await ax.activity.aio.detail(session, a) for a in agent_ids],
            "children": [await ax.activity.aio.children(session, a) for a in agent_ids],
            "active": await ax.activity.aio.count_active(session),
            "stats": await ax.activity.aio.stats(session),
        }
