"""The shape of the HTTP layer: endpoints at module level, their state handed over per router,
and an API process that never imports the worker."""

from __future__ import annotations

import subprocess
import sys

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from agentexec.api import router


def test_endpoints_are_module_level_functions() -> None:
    routes = [
        r for r in router(engine=create_engine("sqlite://")).routes if isinstance(r, APIRoute)
    ]
    assert len(routes) == 9  # with the children and stats endpoints
    for route in routes:
        assert route.endpoint.__module__.startswith("agentexec.api."), route.path
        assert route.endpoint.__qualname__ == route.endpoint.__name__, route.path


def test_each_router_serves_its_own_state() -> None:
    engine = create_engine("sqlite://")
    app = FastAPI()
    app.include_router(router(engine=engine, token="a" * 16), prefix="/a")
    app.include_router(router(engine=engine, token="b" * 16), prefix="/b")
    client = TestClient(app, follow_redirects=False)
    assert client.get("/a/", params={"token": "a" * 16}).status_code == 303
    assert client.get("/b/", params={"token": "a" * 16}).status_code == 401
    assert client.get("/b/", params={"token": "b" * 16}).status_code == 303


def test_the_api_does_not_import_the_worker() -> None:
    code = (
        "import sys, agentexec.api as api\n"
        "api.router, api.create_app, api.requested_agent_id, api.POSITION_HEADER\n"
        "print(sorted(m for m in sys.modules if m.startswith('agentexec.workers')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
