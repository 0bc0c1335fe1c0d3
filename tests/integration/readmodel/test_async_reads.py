"""The read functions given an AsyncSession return awaitables of the same results."""

from __future__ import annotations

import uuid

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.projector import Projector
from tests.integration.readmodel.workload import append_all, lifecycle


def async_url(engine: Engine) -> str:
    url = engine.url
    if url.get_backend_name() == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    return url.render_as_string(hide_password=False)


async def test_async_sessions_read_the_same_as_sync_ones(
    projector: Projector, engine: Engine
) -> None:
    done, running = uuid.uuid4(), uuid.uuid4()
    append_all(lifecycle(done, "research", steps=2) + lifecycle(running, "email", steps=1)[:3])
    await projector.catch_up()
    async_engine = create_async_engine(async_url(engine))
    try:
        async with AsyncSession(async_engine) as session:
            listing = await ax.activity.list(session, page=1, page_size=10)
            detail = await ax.activity.detail(session, done)
            missing = await ax.activity.detail(session, uuid.uuid4())
            count = await ax.activity.active_count(session)
    finally:
        await async_engine.dispose()
    with Session(engine) as session:
        assert listing == ax.activity.list(session, page=1, page_size=10)
        assert detail == ax.activity.detail(session, done)
        assert count == ax.activity.active_count(session) == 1
    assert missing is None
    assert detail is not None and [log.status.value for log in detail.logs][-1] in (
        "COMPLETE",
        "ERROR",
    )
    assert listing.items[0].agent_id == running  # active first
