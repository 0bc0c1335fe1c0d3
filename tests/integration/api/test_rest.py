"""REST routes: the shapes of seed 002, and every bad input answered without a 500."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from sqlalchemy import Engine, create_engine

import agentexec as ax
from agentexec.api import POSITION_HEADER, create_app, requested_agent_id
from agentexec.connection import close_redis
from agentexec.errors import ConfigurationError
from tests.integration.api.conftest import project
from tests.support.topology import single_log_only


@pytest.fixture
async def client(redis_conf: str, db: Engine) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(db))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client
    await close_redis()


async def three_activities(db: Engine) -> list[uuid.UUID]:
    done = ax.activity.create("research", "queued one")
    ax.activity.update(done, "reading", percentage=40)
    ax.activity.complete(done)
    running = ax.activity.create("summarise")
    ax.activity.update(running, "halfway", percentage=50)
    queued = ax.activity.create("research")
    await project(db)
    return [done, running, queued]


async def test_list_detail_status_and_count(client: httpx.AsyncClient, db: Engine) -> None:
    done, running, queued = await three_activities(db)

    response = await client.get("/api/activities", params={"page": 1, "page_size": 2})
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {"items", "total", "page", "page_size", "pages"}
    assert (body["total"], body["page"], body["page_size"], body["pages"]) == (3, 1, 2, 2)
    # Active ones first, newest first.
    assert [item["agent_id"] for item in body["items"]] == [str(queued), str(running)]
    item = body["items"][1]
    assert set(item) >= {"agent_id", "agent_type", "created_at", "updated_at", "status"}
    assert (item["status"], item["latest_log"], item["latest_percentage"]) == (
        "running",
        "halfway",
        50,
    )
    position = response.headers[POSITION_HEADER]
    if ax.CONF.partitions == 1:
        assert position.count("-") == 1 and position != "0-0"
    else:  # a cursor: one position per partition (test_partitioned_feeds.py tests its form)
        assert len(position.split("_")) == ax.CONF.partitions
    page2 = (await client.get("/api/activities?page=2&page_size=2")).json()
    assert [i["agent_id"] for i in page2["items"]] == [str(done)]

    detail = (await client.get(f"/api/activities/{done}")).json()
    assert (detail["agent_type"], detail["status"], detail["latest_percentage"]) == (
        "research",
        "complete",
        100,
    )
    assert [log["message"] for log in detail["logs"]] == [
        "queued one",
        "reading",
        "Task completed successfully.",
    ]
    assert [log["status"] for log in detail["logs"]] == ["queued", "running", "complete"]

    status = (await client.get(f"/api/activities/{running}/status")).json()
    assert status == {"status": "running", "progress": 50, "message": "halfway"}
    assert (await client.get("/api/activities/active/count")).json() == {"count": 2}


@single_log_only(
    "an empty read model's position is '0-0' with one partition; with several it is a cursor "
    "(test_partitioned_feeds.py::test_the_read_models_position_is_a_cursor_to_resume_from)"
)
async def test_empty_read_model(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/activities")).json()
    assert (body["items"], body["total"], body["pages"]) == ([], 0, 0)
    response = await client.get("/api/activities")
    assert response.headers[POSITION_HEADER] == "0-0"
    assert (await client.get("/api/activities/active/count")).json() == {"count": 0}


UNKNOWN = "0b5f0c5e-9b7c-4f59-8a43-3b7f1ad0c001"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/activities?page=0", 422),
        ("/api/activities?page=-1", 422),
        ("/api/activities?page=abc", 422),
        ("/api/activities?page=1.5", 422),
        ("/api/activities?page=99999999999999999999", 422),
        ("/api/activities?page_size=0", 422),
        ("/api/activities?page_size=1001", 422),
        ("/api/activities?page_size=x", 422),
        ("/api/activities/not-a-uuid", 422),
        ("/api/activities/not-a-uuid/status", 422),
        ("/api/activities/not-a-uuid/events", 422),
        ("/api/activities/12345/status", 422),
        (f"/api/activities/{UNKNOWN}", 404),
        (f"/api/activities/{UNKNOWN}/status", 404),
        (f"/api/activities/{UNKNOWN}/events", 404),
        ("/api/events?last_event_id=abc", 422),
        ("/api/events?last_event_id=1-2-3", 422),
        ("/api/events?last_event_id=-1", 422),
        ("/api/events?last_event_id=99999999999999999999999", 422),
        ("/api/events?status=bogus", 422),
        ("/api/events?status=RUNNING", 422),
        (f"/api/activities/{UNKNOWN}/events?last_event_id=x", 422),
        ("/api/activities/active", 422),
    ],
)
async def test_bad_inputs(client: httpx.AsyncClient, path: str, expected: int) -> None:
    response = await client.get(path)
    assert response.status_code == expected, response.text
    detail = response.json()["detail"]
    if expected == 404:
        assert UNKNOWN in detail


async def test_bad_last_event_id_header(client: httpx.AsyncClient) -> None:
    for path in ("/api/events", f"/api/activities/{UNKNOWN}/events"):
        response = await client.get(path, headers={"Last-Event-ID": "yesterday"})
        assert response.status_code == 422
        assert "yesterday" in response.text


async def test_finished_task_feed_answers_204_past_its_end(
    client: httpx.AsyncClient, db: Engine
) -> None:
    done, *_ = await three_activities(db)
    last = (await client.get(f"/api/activities/{done}")).json()["logs"][-1]["event_id"]
    response = await client.get(f"/api/activities/{done}/events", headers={"Last-Event-ID": last})
    assert response.status_code == 204


async def test_unreachable_database_is_503(redis_conf: str, tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'missing' / 'agents.db'}")
    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        for path in (
            "/api/activities",
            f"/api/activities/{UNKNOWN}",
            "/api/activities/active/count",
        ):
            response = await client.get(path)
            assert response.status_code == 503
            assert "read model is unreachable" in response.json()["detail"]
    await close_redis()


async def test_unreachable_redis_is_503_before_a_feed_opens(db: Engine) -> None:
    ax.CONF.redis_url = "redis://127.0.0.1:1/0"
    transport = httpx.ASGITransport(app=create_app(db))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        response = await client.get("/api/events")
        assert response.status_code == 503
        assert "Redis is unreachable" in response.json()["detail"]
    await close_redis()


def owner_only(
    request: Request, agent_id: Annotated[uuid.UUID | None, Depends(requested_agent_id)]
) -> None:
    """Test authorization: a token is required; token `alice` sees every agent but UNKNOWN."""
    token = request.headers.get("Authorization")
    if token is None:
        raise HTTPException(401, "sign in", headers={"WWW-Authenticate": "Bearer"})
    if token != "Bearer alice" or agent_id == uuid.UUID(UNKNOWN):
        raise HTTPException(403, "not yours")


async def test_authorization_refuses_before_anything_opens(redis_conf: str, db: Engine) -> None:
    app = create_app(db, authorize=owner_only)
    transport = httpx.ASGITransport(app=app)
    alice = {"Authorization": "Bearer alice"}
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        for path in (
            "/api/activities",
            "/api/activities/active/count",
            f"/api/activities/{UNKNOWN}",
            f"/api/activities/{UNKNOWN}/status",
            f"/api/activities/{UNKNOWN}/events",
            "/api/events",
        ):
            assert (await client.get(path)).status_code == 401, path
            assert (
                await client.get(path, headers={"Authorization": "Bearer bob"})
            ).status_code == 403
        for path in (
            f"/api/activities/{UNKNOWN}",
            f"/api/activities/{UNKNOWN}/status",
            f"/api/activities/{UNKNOWN}/events",
        ):
            assert (await client.get(path, headers=alice)).status_code == 403, path
        assert (await client.get("/api/activities", headers=alice)).status_code == 200
        other = uuid.uuid4()
        assert (await client.get(f"/api/activities/{other}", headers=alice)).status_code == 404
        # The page itself holds no data: it is served without authorization.
        assert (await client.get("/")).status_code == 200
    await close_redis()


async def test_router_mounts_in_a_user_app(redis_conf: str, db: Engine) -> None:
    from agentexec.api import router

    app = FastAPI()
    app.include_router(router(engine=db, dashboard_page=False), prefix="/agents")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        assert (await client.get("/agents/api/activities")).status_code == 200
        assert (await client.get("/agents/")).status_code == 404
    await close_redis()


def test_dashboard_page(db: Engine) -> None:
    from fastapi.testclient import TestClient

    response = TestClient(create_app(db)).get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "EventSource" in response.text


@pytest.mark.parametrize(
    "options",
    [{"buffer": 0}, {"send_timeout": 0}, {"keepalive": 0}, {"keepalive": 16}],
)
def test_bad_router_options_are_refused_when_declared(db: Engine, options: dict[str, Any]) -> None:
    from agentexec.api import router

    with pytest.raises(ConfigurationError, match=next(iter(options))):
        router(engine=db, **options)


def test_router_needs_a_database() -> None:
    from agentexec.api import router

    ax.CONF.database_url = None
    with pytest.raises(ConfigurationError, match="AGENTEXEC_DATABASE_URL"):
        router()
