"""docs/tenants.md's example, extracted from the page and run as written: `python worker.py`,
the page's `server.py` under uvicorn, then `python app.py` (output compared with the page);
then a browser's way in: a feed token from the server's own route opens only that tenant's
events, and REST routes refuse it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx

from tests.support.docs import (
    doc_files,
    namespace_env,
    output_after,
    run_to_end,
    running,
    write_files,
)
from tests.support.metrics import free_port
from tests.support.waiting import scaled, wait_for

PAGE = "tenants.md"
API_TOKEN = "doc-test-api-token-0123"


def expected_output() -> str:
    return output_after(PAGE, "app.py").strip()


def test_the_example_runs_and_its_feed_token_shows_one_tenant(
    redis_url: str, tmp_path: Path
) -> None:
    write_files(tmp_path, doc_files(PAGE), "worker.py", "server.py", "app.py")
    env = namespace_env(
        redis_url,
        AGENTEXEC_FEED_SECRET="doc-test-feed-secret-of-32-bytes-or-more",
        API_TOKEN=API_TOKEN,
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    uvicorn = [sys.executable, "-m", "uvicorn", "server:app", "--port", str(port)]
    with running(tmp_path / "worker.py", env):
        done = run_to_end(tmp_path / "app.py", env, timeout=scaled(120))
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == expected_output()

        with (
            running([*uvicorn, "--log-level", "warning"], env, cwd=tmp_path),
            httpx.Client(base_url=base, timeout=scaled(10)) as http,
        ):

            def up() -> bool:
                try:
                    return http.get("/api/activities/active/count").status_code == 401
                except httpx.TransportError:
                    return False

            wait_for(up, timeout=30, what="the page's server to answer")
            assert http.post("/session/feed-token", headers={"X-Tenant": "x"}).status_code == 403
            token = http.post("/session/feed-token", headers={"X-Tenant": "acme"}).json()["token"]
            assert http.get("/api/events").status_code == 401  # the API's own guard
            rest = http.get("/api/activities", params={"feed_token": token})
            assert rest.status_code == 401  # REST never takes a feed token
            seen: list[dict[str, object]] = []
            url = f"/api/events?feed_token={token}&last_event_id=0"
            with http.stream("GET", url) as feed:
                assert feed.status_code == 200
                for line in feed.iter_lines():
                    if line.startswith("data:"):
                        seen.append(json.loads(line[5:]))
                    if sum(e["type"] == "task.completed" for e in seen) == 4:
                        break
    assert {e.get("tenant") for e in seen} == {"acme"}
    assert len({e["agent_id"] for e in seen}) == 4  # the report and its three pages
    assert {"task.queued", "task.started", "task.progress"} <= {e["type"] for e in seen}
