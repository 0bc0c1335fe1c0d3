"""The TypeScript client of api/client: its OpenAPI document and generated types are current
(they cannot drift from the Python schemas), it type-checks, and a page that uses its types and
its `Feed` receives every event once, in order, across a restart of the API server, in a real
headless Chromium.

Needs Node.js and npm (CI's .ci/run installs them); the packages come from api/client's lock
file (`npm ci`)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine

import agentexec as ax
from agentexec.api import create_app
from agentexec.api.openapi import document
from agentexec.connection import close_redis
from agentexec.projector import Projector
from tests.apps import basic
from tests.integration.api.conftest import LiveServer
from tests.integration.api.test_dashboard import browser_page, ms, playwright_api, projector
from tests.support.sse import open_stream
from tests.support.waiting import async_wait_for, scaled

__all__ = ["browser_page", "projector"]

CLIENT = Path(__file__).parents[3] / "api" / "client"
NPM = shutil.which("npm")
needs_node = pytest.mark.skipif(
    NPM is None or shutil.which("node") is None,
    reason="no Node.js/npm: apt-get install nodejs npm (CI's .ci/run does)",
)
PAGE = """<!doctype html>
<html><body>
<p id="state">connecting</p>
<button id="refresh">refresh</button><p id="list"></p>
<ol id="events"></ol>
<script type="module" src="/client/test/page.js"></script>
</body></html>"""


def run(*command: str, cwd: Path = CLIENT) -> str:
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=scaled(300), check=False
    )
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="session")
def node_modules() -> Iterator[Path]:
    """api/client/node_modules as its lock file has it (one `npm ci` per machine and lock)."""
    lock = CLIENT / "package-lock.json"
    stamp = CLIENT / "node_modules" / ".agentexec-lock"
    with (CLIENT / ".npm-install.lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # the other test process may install at once
        if not stamp.exists() or stamp.read_text() != lock.read_text():
            run("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
            stamp.write_text(lock.read_text())
    yield CLIENT / "node_modules"


def test_the_checked_in_openapi_document_is_current() -> None:
    current = json.dumps(document(), indent=2, sort_keys=True) + "\n"
    assert (CLIENT / "openapi.json").read_text() == current, (
        "api/client/openapi.json is not the API's document: run `make client` and commit"
    )


def test_the_feed_schemas_describe_what_a_feed_sends() -> None:
    schemas = document()["components"]["schemas"]
    variants = schemas["FeedEvent"]["discriminator"]["mapping"]
    assert {"task.queued", "task.progress", "task.completed", "agent.delta", "reset"} <= set(
        variants
    )
    progress = schemas["FeedTaskProgress"]
    assert "context" not in progress["properties"]  # a feed never carries task inputs
    assert "result" not in schemas["FeedTaskCompleted"]["properties"]
    assert {"id", "type", "agent_id", "status", "percentage", "attempt"} <= set(
        progress["required"]
    )
    stream = document()["paths"]["/api/events"]["get"]["responses"]["200"]["content"]
    assert stream["text/event-stream"]["itemSchema"] == {"$ref": "#/components/schemas/FeedEvent"}


@needs_node
def test_the_typescript_types_are_generated_from_the_document(
    node_modules: Path, tmp_path: Path
) -> None:
    generated = tmp_path / "schema.ts"
    run("npx", "--no-install", "openapi-typescript", "openapi.json", "--output", str(generated))
    assert (CLIENT / "src" / "schema.ts").read_text() == generated.read_text(), (
        "api/client/src/schema.ts is not generated from openapi.json: run `make client`"
    )


@pytest.fixture
def compiled(node_modules: Path, tmp_path: Path) -> Path:
    """The client and the test page, type-checked (strict) and compiled for the browser."""
    out = tmp_path / "client"
    run("npx", "--no-install", "tsc", "-p", "tsconfig.test.json", "--outDir", str(out))
    return out


@contextlib.asynccontextmanager
async def served(db: Engine, compiled: Path, port: int = 0) -> Any:
    app = create_app(db, ui_routes=True)
    app.mount("/client", StaticFiles(directory=compiled), name="client")
    app.add_api_route("/page", lambda: HTMLResponse(PAGE), include_in_schema=False)
    server = await LiveServer(app, port).start()
    try:
        yield server
    finally:
        await server.stop()


async def feed_ids(url: str, agent_id: object, types: set[str]) -> list[str]:
    """The ids of `agent_id`'s events of `types`, from its own feed (history, then its end)."""
    async with (
        httpx.AsyncClient(timeout=scaled(10)) as http,
        open_stream(http, f"{url}/api/activities/{agent_id}/events") as stream,
    ):
        return [m.id for m in await stream.rest() if m.event in types and m.id is not None]


@needs_node
async def test_a_page_using_the_types_and_the_feed_resumes_across_a_restart(
    running_pool: ax.Pool,
    db: Engine,
    projector: Projector,
    compiled: Path,
    browser_page: Any,
) -> None:
    page = browser_page
    expect = playwright_api.expect
    shown = page.locator("#events li")
    try:
        async with served(db, compiled) as server:
            port = server.port
            await page.goto(f"{server.url}/page")
            await expect(page.locator("#state")).to_have_text("live", timeout=ms(10))
            before = await ax.enqueue("progress", basic.Echo(text="before", delay=0.02))
            await expect(shown.filter(has_text=f"task.completed {before.agent_id}")).to_have_count(
                1, timeout=ms(20)
            )
        # The API is down: a task runs meanwhile, its events only in the log.
        await expect(page.locator("#state")).to_have_text("down", timeout=ms(10))
        during = await ax.enqueue("progress", basic.Echo(text="during", delay=0.02))
        await ax.get_result(during, timeout=scaled(20))

        async with served(db, compiled, port) as server:
            await expect(shown.filter(has_text=f"task.completed {during.agent_id}")).to_have_count(
                1, timeout=ms(30)
            )
            await expect(page.locator("#state")).to_have_text("live", timeout=ms(5))
            kinds = {"task.progress", "task.completed"}
            expected = [
                *await feed_ids(server.url, before.agent_id, kinds),
                *await feed_ids(server.url, during.agent_id, kinds),
            ]
            ids = [await item.get_attribute("data-id") for item in await shown.all()]
            # Every event once, in log order: none lost across the restart, none repeated.
            assert ids == expected
            assert len(expected) == 8  # 3 progress steps and the completion, twice

            async def projected() -> bool:
                async with httpx.AsyncClient(timeout=scaled(10)) as http:
                    listed = (await http.get(f"{server.url}/api/agents/activity")).json()
                return [item["status"] for item in listed["items"]] == ["complete"] * 2

            await async_wait_for(projected, what="both tasks projected")
            await page.locator("#refresh").click()
            # Through the agentexec-ui routes: 2 tasks on 1 page, none active, both at 100 %.
            await expect(page.locator("#list")).to_have_text("2 1 0 100,100", timeout=ms(10))
    finally:
        await close_redis()
