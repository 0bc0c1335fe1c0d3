"""The activity samples of the seed documents, run as written against a real pool."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.connection import close_redis
from tests.apps import basic
from tests.support.waiting import scaled

from .conftest import sqlite_engine


@pytest.fixture
def pool_engine(redis_conf: str, tmp_path: Path) -> Iterator[Engine]:
    """A pool with a database, so that it runs a projector beside its workers."""
    engine = sqlite_engine(tmp_path / "agents.db")
    yield engine
    engine.dispose()


async def test_seed_000_polling_loop_ends(pool_engine: Engine) -> None:
    engine = pool_engine
    pool = ax.Pool(engine=engine, num_workers=1)
    pool.task("progress")(basic.progress)
    pool.start()
    try:
        task = await ax.enqueue("progress", basic.Echo(text="hi", delay=0.01))

        # "Polling for Completion" (seed 000), as written.
        async def wait_for_completion(agent_id: str, timeout: int = 300) -> dict:
            """Wait for a task to complete, checking every 2 seconds."""
            start = asyncio.get_event_loop().time()

            while True:
                with Session(engine) as session:
                    activity = ax.activity.detail(session, agent_id)

                    if activity and activity.status in ("COMPLETE", "ERROR"):
                        return {
                            "status": activity.status.value,
                            "logs": [log.message for log in activity.logs],
                        }

                if asyncio.get_event_loop().time() - start > timeout:
                    return {"error": "Timeout waiting for task"}

                await asyncio.sleep(2)

        # "Basic Status Check" (seed 000), as written.
        async def get_task_status(agent_id: str) -> dict:
            with Session(engine) as session:
                activity = ax.activity.detail(session, agent_id)

                if not activity:
                    return {"error": "Task not found"}

                return {
                    "status": activity.status.value,
                    "progress": activity.latest_percentage,
                    "updated_at": activity.updated_at.isoformat(),
                }

        result = await asyncio.wait_for(
            wait_for_completion(str(task.agent_id), timeout=int(scaled(60))), scaled(90)
        )
        assert result == {
            "status": "COMPLETE",
            "logs": [
                "Waiting to start.",
                "Task started.",
                "step 25",
                "step 50",
                "step 75",
                "Task completed successfully.",
            ],
        }
        status = await get_task_status(str(task.agent_id))
        assert status["status"] == "COMPLETE" and status["progress"] == 100
        assert (await get_task_status(str(UUID(int=1))))["error"] == "Task not found"
    finally:
        await asyncio.to_thread(pool.shutdown, 60)
        await close_redis()


async def test_seed_001_detail_schema_and_json_spelling(pool_engine: Engine) -> None:
    from fastapi import APIRouter, Depends
    from fastapi.encoders import jsonable_encoder

    engine = pool_engine

    def get_db() -> Iterator[Session]:
        with Session(engine) as db:
            yield db

    router = APIRouter()

    # Seed 001 Quick Start, views.py: the schema as a FastAPI return annotation.
    @router.get("/research/{agent_id}")
    def get_status(
        agent_id: UUID,
        db: Session = Depends(get_db),  # noqa: B008
    ) -> ax.activity.ActivityDetailSchema:
        return ax.activity.detail(db, agent_id=agent_id)  # Query by agent_id

    from agentexec.projector import Projector

    agent_id = ax.activity.create("research_company", message="Waiting to start")
    ax.activity.update(agent_id, "Gathering data", percentage=30)
    await Projector(engine).catch_up()
    db = next(get_db())
    detail = get_status(agent_id, db)
    db.close()
    wire = json.loads(detail.model_dump_json())
    assert wire["agent_id"] == str(agent_id) and wire["status"] == "running"
    assert [log["status"] for log in wire["logs"]] == ["queued", "running"]
    assert wire["created_at"].endswith("Z") or wire["created_at"].endswith("+00:00")
    assert jsonable_encoder(detail)["status"] == "running"
    assert detail.model_dump()["status"] == "RUNNING" == detail.status
    assert detail.status.value == "RUNNING"
    assert type(detail).model_validate(wire).status == "RUNNING"

    # Seed 001 "Building Your Own Interface".
    with Session(engine) as db:
        result = ax.activity.list(db, page=1, page_size=20)
        listed = json.loads(result.model_dump_json())
        assert (listed["total"], listed["page"], listed["page_size"], listed["total_pages"]) == (
            1,
            1,
            20,
            1,
        )
        assert listed["items"][0]["status"] == "running"
        count = ax.activity.active_count(db)
        assert count == 1
        for item in ax.activity.list(db, page=1, page_size=10).items:
            row = (
                item.status,
                item.agent_type,
                item.latest_log_message or "",
                f"{item.percentage}%",
            )
            assert row == ("RUNNING", "research_company", "Gathering data", "30%")
    await close_redis()
