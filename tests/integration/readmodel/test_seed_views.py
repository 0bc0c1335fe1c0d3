"""The status views of the seed documents, as written, served by FastAPI over a real read
model: what a newcomer copies first."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.connection import close_redis
from agentexec.events import Status
from agentexec.projector import Projector
from tests.support.waiting import async_wait_for

from .conftest import sqlite_engine


def seed_002_app(engine: Engine):  # type: ignore[no-untyped-def]
    """Seed 002, "Building a Status API", as written."""
    from fastapi import Depends, FastAPI, HTTPException

    app = FastAPI()

    def get_db() -> Iterator[Session]:
        with Session(engine) as session:
            yield session

    @app.get("/api/activities")
    def list_activities(
        page: int = 1,
        page_size: int = 20,
        db: Session = Depends(get_db),  # noqa: B008
    ):  # type: ignore[no-untyped-def]
        """List all activities with pagination."""
        return ax.activity.list(db, page=page, page_size=page_size)

    @app.get("/api/activities/{agent_id}")
    def get_activity(agent_id: str, db: Session = Depends(get_db)):  # type: ignore[no-untyped-def]  # noqa: B008
        """Get detailed activity with full log history."""
        activity = ax.activity.detail(db, agent_id)
        if not activity:
            raise HTTPException(404, "Activity not found")
        return activity

    @app.get("/api/activities/{agent_id}/status")
    def get_status(agent_id: str, db: Session = Depends(get_db)):  # type: ignore[no-untyped-def]  # noqa: B008
        """Get just the current status and progress."""
        activity = ax.activity.detail(db, agent_id)
        if not activity:
            raise HTTPException(404, "Activity not found")
        return {
            "status": activity.status,
            "progress": activity.latest_percentage,
            "message": activity.logs[-1].message if activity.logs else None,
        }

    return app


async def test_seed_002_status_and_detail_endpoints_spell_status_alike(
    engine: Engine, projector: Projector
) -> None:
    from fastapi.testclient import TestClient

    agent_id = ax.activity.create("research_company", message="Waiting to start")
    ax.activity.update(agent_id, "Gathering data", percentage=30)
    await projector.catch_up()

    client = TestClient(seed_002_app(engine))
    detail = client.get(f"/api/activities/{agent_id}").json()
    status = client.get(f"/api/activities/{agent_id}/status").json()
    listed = client.get("/api/activities").json()
    assert detail["status"] == status["status"] == listed["items"][0]["status"] == "running"
    assert [log["status"] for log in detail["logs"]] == ["queued", "running"]

    # In Python, both spellings still compare equal, and `.value` is the wire form.
    with Session(engine) as db:
        activity = ax.activity.detail(db, agent_id)
        assert activity is not None
        assert activity.status == "RUNNING" and activity.status == "running"
        assert activity.status in ("RUNNING", "ERROR") and activity.status.value == "running"
        assert Status("RUNNING") is Status("running") is Status.RUNNING


async def test_seed_000_polling_loop_on_the_terminal_set_ends_for_canceled(
    engine: Engine, projector: Projector
) -> None:
    """The documented loop, `activity.status in ax.Status.TERMINAL`, ends for a canceled task
    (seed 000's `("COMPLETE", "ERROR")` never would)."""
    agent_id = ax.activity.create("research_company")
    with Session(engine) as session:
        await projector.catch_up()
        assert ax.activity.cancel_pending(session) == 1
    await projector.catch_up()

    async def wait_for_completion(agent_id: str, timeout: int = 300) -> dict[str, object]:
        start = asyncio.get_event_loop().time()
        while True:
            with Session(engine) as session:
                activity = ax.activity.detail(session, agent_id)
                if activity and activity.status in ax.Status.TERMINAL:
                    return {"status": activity.status.value}
            if asyncio.get_event_loop().time() - start > timeout:
                return {"error": "Timeout waiting for task"}
            await asyncio.sleep(0.05)

    result = await asyncio.wait_for(wait_for_completion(str(agent_id), timeout=10), 20)
    assert result == {"status": "CANCELED"} and str(result["status"]) == "canceled"
    assert "CANCELED" in ax.Status.TERMINAL and "queued" in ax.Status.ACTIVE
    assert set(ax.Status.TERMINAL) == {Status.COMPLETE, Status.ERROR, Status.CANCELED}


async def test_handler_error_then_return_tells_one_story(redis_conf: str, tmp_path: Path) -> None:
    """Seed 000's "Handle errors explicitly": `ax.activity.error()` then a normal return. The
    handler's own error() is its verdict: the task ends ERROR with that message, the log
    never says it completed, and get_result raises with the same message. Re-raising after
    error() (seed 002) gives the same story, without a retry."""
    from tests.apps import newcomer

    engine = sqlite_engine(tmp_path / "agents.db")
    pool = ax.Pool(engine=engine, num_workers=1)
    pool.task("api_task", max_retries=2)(newcomer.api_task)
    pool.start()
    try:
        for reraise in (False, True):
            task = await ax.enqueue(
                "api_task", newcomer.APIContext(endpoint="/v1", reraise=reraise)
            )
            with pytest.raises(ax.TaskFailedError, match="API error: quota exceeded at /v1"):
                await ax.get_result(task, timeout=60)

            async def projected(
                agent_id: UUID = task.agent_id,
            ) -> ax.activity.ActivityDetailSchema | None:
                with Session(engine) as session:
                    detail = ax.activity.detail(session, agent_id)
                return detail if detail and detail.status in ax.Status.TERMINAL else None

            detail = await async_wait_for(projected, timeout=30, what="the task's final status")
            assert detail.status == "ERROR"
            assert detail.error == "API error: quota exceeded at /v1"
            assert detail.attempts == 1  # error() is final: no retry
            messages = [(log.status, log.message) for log in detail.logs]
            assert messages[-1] == ("error", "API error: quota exceeded at /v1")
            assert [s for s, _ in messages].count("error") == 1
            assert all("completed" not in m for _, m in messages), messages
    finally:
        await asyncio.to_thread(pool.shutdown, 60)
        engine.dispose()
        await close_redis()


async def test_unknown_and_invalid_ids_in_views_are_404_and_422(
    engine: Engine, projector: Projector
) -> None:
    """docs/activity.md, "In a web view": seed 002's views plus the documented handler of
    `ax.InvalidAgentIdError`, the corrected seed 001 view, and the library's own REST API."""
    from fastapi import APIRouter, Depends, HTTPException, Request
    from fastapi.responses import JSONResponse
    from fastapi.testclient import TestClient

    import agentexec.api

    agent_id = ax.activity.create("research_company")
    await projector.catch_up()
    with Session(engine) as db:
        with pytest.raises(ax.InvalidAgentIdError, match="'nope' is not a UUID") as raised:
            ax.activity.detail(db, "nope")
        assert isinstance(raised.value, ValueError)

    app = seed_002_app(engine)

    # The documented handler, as written.
    @app.exception_handler(ax.InvalidAgentIdError)
    async def invalid_agent_id(request: Request, exc: ax.InvalidAgentIdError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    def get_db() -> Iterator[Session]:
        with Session(engine) as db:
            yield db

    router = APIRouter()

    # Seed 001's Quick Start view, with the documented None check.
    @router.get("/research/{agent_id}")
    def get_status(
        agent_id: UUID,
        db: Session = Depends(get_db),  # noqa: B008
    ) -> ax.activity.ActivityDetailSchema:
        activity = ax.activity.detail(db, agent_id=agent_id)
        if activity is None:  # unknown, or not projected yet
            raise HTTPException(404, "Activity not found")
        return activity

    app.include_router(router)
    client = TestClient(app, raise_server_exceptions=False)
    unknown = str(UUID(int=7))
    for path in ("/api/activities/{}", "/api/activities/{}/status", "/research/{}"):
        assert client.get(path.format(agent_id)).status_code == 200
        assert client.get(path.format(unknown)).status_code == 404
        assert client.get(path.format("nope")).status_code == 422
    assert "not a UUID" in client.get("/api/activities/nope").json()["detail"]

    library = TestClient(agentexec.api.create_app(engine), raise_server_exceptions=False)
    for path in ("/api/activities/{}", "/api/activities/{}/status"):
        assert library.get(path.format(agent_id)).status_code == 200
        assert library.get(path.format(unknown)).status_code == 404
        assert library.get(path.format("nope")).status_code == 422
