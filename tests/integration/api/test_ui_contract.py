"""The `agentexec-ui` contract: the JSON its TypeScript types describe, under the paths its
example application serves (`router(ui_routes=True)`), from tasks a real pool ran.

The expected shapes are written here from the package's documented types (`ActivityListItem`,
`ActivityList`, `ActivityLog`, `ActivityDetail`, `ActiveCountResponse`), so a change of our
JSON that would break the package fails here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

import agentexec as ax
from agentexec.api import create_app
from agentexec.connection import close_redis
from tests.apps import basic
from tests.integration.api.conftest import project
from tests.support.waiting import scaled

STATUSES = {"queued", "running", "complete", "error", "canceled"}
NUMBER = (int, float)
OPTIONAL_TEXT = (str, type(None))

# Field -> the JSON types the package's interface allows for it.
LIST_ITEM: dict[str, tuple[type, ...]] = {
    "agent_id": (str,),
    "agent_type": (str,),
    "status": (str,),
    "latest_log_message": OPTIONAL_TEXT,
    "latest_log_timestamp": OPTIONAL_TEXT,
    "percentage": NUMBER,
    "started_at": OPTIONAL_TEXT,
    "elapsed_time_seconds": NUMBER,
}
LIST: dict[str, tuple[type, ...]] = {
    "items": (list,),
    "total": (int,),
    "page": (int,),
    "page_size": (int,),
    "total_pages": (int,),
}
LOG: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "message": (str,),
    "status": (str,),
    "created_at": (str,),
}
DETAIL: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "agent_id": (str,),
    "agent_type": (str,),
    "created_at": (str,),
    "updated_at": (str,),
    "logs": (list,),
}


def conforms(value: dict[str, Any], shape: dict[str, tuple[type, ...]]) -> None:
    for field, types in shape.items():
        assert field in value, f"{field!r} missing from {sorted(value)}"
        assert isinstance(value[field], types), f"{field}={value[field]!r} is not {types}"
        # JSON has no bool among numbers for the UI: True is not a percentage.
        assert not isinstance(value[field], bool), f"{field}={value[field]!r}"


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture
async def ui(redis_conf: str, db: Engine) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(db, ui_routes=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client
    await close_redis()


async def test_the_ui_routes_serve_the_packages_shapes(
    running_pool: ax.Pool, db: Engine, ui: httpx.AsyncClient
) -> None:
    done = await ax.enqueue("progress", basic.Echo(text="ui", delay=0.05))
    failed = await ax.enqueue("boom", basic.Echo(text="ui"))
    await ax.get_result(done, timeout=scaled(20))
    with pytest.raises(ax.TaskFailedError):
        await ax.get_result(failed, timeout=scaled(20))
    waiting = ax.activity.create("research", "waiting for a worker")
    await project(db)

    response = await ui.get("/api/agents/activity", params={"page": 1, "page_size": 50})
    assert response.status_code == 200
    body = response.json()
    conforms(body, LIST)
    assert (body["total"], body["page"], body["page_size"], body["total_pages"]) == (3, 1, 50, 1)
    items = {item["agent_id"]: item for item in body["items"]}
    for item in items.values():
        conforms(item, LIST_ITEM)
        assert item["status"] in STATUSES
    assert set(items) == {str(done.agent_id), str(failed.agent_id), str(waiting)}

    # The same list as ours, with our fields beside the package's.
    ours = (await ui.get("/api/activities", params={"page_size": 50})).json()
    assert ours["items"] == body["items"]

    complete = items[str(done.agent_id)]
    detail = (await ui.get(f"/api/agents/activity/{done.agent_id}")).json()
    conforms(detail, DETAIL)
    for log in detail["logs"]:
        conforms(log, LOG)
        assert log["status"] in STATUSES
    ids = [int(log["id"]) for log in detail["logs"]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert detail == (await ui.get(f"/api/activities/{done.agent_id}")).json()

    assert complete["status"] == "complete"
    assert complete["percentage"] == 100
    assert complete["latest_log_message"] == complete["latest_log"] == detail["logs"][-1]["message"]
    assert complete["latest_log_timestamp"] is not None
    assert when(complete["latest_log_timestamp"]) == when(detail["logs"][-1]["created_at"])
    assert complete["started_at"] == detail["started_at"] is not None
    elapsed = (when(detail["finished_at"]) - when(detail["started_at"])).total_seconds()
    assert complete["elapsed_time_seconds"] == pytest.approx(elapsed, abs=1e-6)
    assert complete["elapsed_time_seconds"] == pytest.approx(detail["run_seconds"], abs=1e-3)

    error = items[str(failed.agent_id)]
    assert error["status"] == "error" and error["started_at"] is not None
    assert error["percentage"] == (error["latest_percentage"] or 0)

    queued = items[str(waiting)]
    assert (queued["status"], queued["started_at"], queued["elapsed_time_seconds"]) == (
        "queued",
        None,
        0,
    )
    assert (queued["percentage"], queued["latest_log_message"]) == (0, "waiting for a worker")

    count = await ui.get("/api/agents/active/count")
    assert count.status_code == 200
    assert count.json() == {"count": 1}
    assert count.json() == (await ui.get("/api/activities/active/count")).json()

    missing = await ui.get("/api/agents/activity/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404


async def test_the_ui_routes_are_an_option(redis_conf: str, db: Engine) -> None:
    transport = httpx.ASGITransport(app=create_app(db))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            assert (await client.get("/api/agents/activity")).status_code == 404
            assert (await client.get("/api/activities")).status_code == 200
    finally:
        await close_redis()


def test_the_openapi_document_describes_the_ui_fields(db: Engine) -> None:
    spec = create_app(db, ui_routes=True).openapi()
    schemas = spec["components"]["schemas"]
    item = schemas["ActivityListItemSchema"]["properties"]
    assert {"latest_log_message", "latest_log_timestamp", "percentage", "started_at"} <= set(item)
    assert item["elapsed_time_seconds"]["type"] == "number"
    assert item["percentage"]["type"] == "integer"
    assert schemas["ActivityLogSchema"]["properties"]["id"]["type"] == "string"
    paths = spec["paths"]
    assert {"/api/agents/activity", "/api/agents/activity/{agent_id}"} <= set(paths)
    assert "/api/agents/active/count" in paths
