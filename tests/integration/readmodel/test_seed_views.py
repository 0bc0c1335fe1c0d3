"""The status views of the seed documents, as written, served by FastAPI over a real read
model: what a newcomer copies first."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from sqlalchemy import Engine
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.events import Status
from agentexec.projector import Projector


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
