"""docs/async.md's examples, extracted from the page and run as written: `python worker.py` (a
pool given only an AsyncEngine, which also projects), then `python app.py`, whose output
must be what the page's comments say, and web.py's FastAPI views driven over ASGI."""

from __future__ import annotations

import sqlite3
import sys
import textwrap
from pathlib import Path

import agentexec as ax
from tests.support.docs import doc_files, namespace_env, run_to_end, running, write_files
from tests.support.waiting import scaled, wait_for


def expected_output(script: str) -> list[str]:
    """The output the page's comments give: `print(...)  # shown` lines, and comment lines
    right after a print that continue it."""
    shown = []
    for line in script.splitlines():
        text = line.strip()
        if text.startswith("print(") and "  # " in text:
            shown.append(text.split("  # ", 1)[1])
        elif text.startswith("# [") or text.startswith("# ['"):
            shown.append(text[2:])
    return shown


def tables_exist(database: Path) -> bool:
    if not database.exists():
        return False
    with sqlite3.connect(database) as conn:
        found = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    return f"{ax.CONF.table_prefix}activity" in found


def test_an_async_only_application_as_written(redis_url: str, tmp_path: Path) -> None:
    files = doc_files("async.md")
    assert set(files) >= {"worker.py", "app.py", "web.py"}
    write_files(tmp_path, files)
    # One worker process is enough here, and starts sooner.
    env = namespace_env(redis_url, AGENTEXEC_NUM_WORKERS="1")
    with running(tmp_path / "worker.py", env) as worker:
        wait_for(
            lambda: tables_exist(tmp_path / "agents.db") or worker.poll() is not None,
            timeout=30,
            what="worker.py to create the tables",
        )
        assert worker.poll() is None, "worker.py exited early; its output above says why"
        done = run_to_end(tmp_path / "app.py", env, timeout=scaled(90))
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == expected_output(files["app.py"])

        # web.py's views, driven in a process of their own (it imports worker.py's pool).
        driver = textwrap.dedent(
            """
            import asyncio, httpx, web

            async def main():
                transport = httpx.ASGITransport(app=web.app)
                async with httpx.AsyncClient(transport=transport, base_url="http://web") as c:
                    started = await c.post("/crawls", params={"pages": 2})
                    agent_id = started.json()["agent_id"]
                    async with asyncio.timeout(60):
                        while True:
                            got = await c.get(f"/crawls/{agent_id}")
                            if got.status_code == 200 and got.json()["status"] == "complete":
                                break
                            await asyncio.sleep(0.05)
                    listed = (await c.get("/crawls")).json()
                    missing = await c.get("/crawls/00000000-0000-4000-8000-000000000000")
                print(got.json()["latest_log"], listed["total"], missing.status_code)
                await web.engine.dispose()

            asyncio.run(main())
            """
        )
        web = run_to_end([sys.executable, "-c", driver], env, scaled(90), cwd=tmp_path)
        assert web.returncode == 0, web.stderr
        assert web.stdout.strip() == "Task completed successfully. 2 404"
