"""docs/operations.md's walkthrough, run as written: its application files, the three processes
of its shell block (projector, worker pool, API) as separate processes with the block's
settings, its enqueue script with its printed output, the API showing the tasks, and a SIGTERM
that every process answers by exiting 0.

The test's own Redis, key prefix and a free port stand in for the block's Redis URL and port
8000."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx

from tests.support.docs import (
    doc_files,
    namespace_env,
    output_after,
    page_text,
    run_to_end,
    running,
    write_files,
)
from tests.support.metrics import free_port
from tests.support.waiting import scaled, wait_for

PAGE = "operations.md"
AGENTEXEC = Path(sys.executable).with_name("agentexec")


def shell_block() -> tuple[dict[str, str], list[list[str]]]:
    """The settings (`export`) and the commands of the block that starts the processes."""
    block = next(
        b for b in re.findall(r"```bash\n(.*?)```", page_text(PAGE), re.S) if "export" in b
    )
    settings: dict[str, str] = {}
    commands: list[list[str]] = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            name, _, value = words[1].partition("=")
            settings[name] = value
        elif words:
            commands.append(words)
    return settings, commands


def test_the_walkthrough_runs_as_written(redis_url: str, tmp_path: Path) -> None:
    write_files(tmp_path, doc_files(PAGE))
    settings, commands = shell_block()
    assert settings["AGENTEXEC_DATABASE_URL"] == "sqlite:///shop.db"
    assert [c[:2] for c in commands] == [
        ["agentexec", "projector"],
        ["agentexec", "worker"],
        ["agentexec", "api"],
    ]
    port = free_port()
    env = namespace_env(
        redis_url, f"axops-{uuid.uuid4().hex[:8]}", **{**settings, "PYTHONPATH": str(tmp_path)}
    )
    processes: list[subprocess.Popen[bytes]] = []
    with ExitStack() as stack:
        for words in commands:
            words = [str(AGENTEXEC), *words[1:]]
            if "--port" in words:
                words[words.index("--port") + 1] = str(port)
            processes.append(stack.enter_context(running(words, env, cwd=tmp_path)))
        api = f"http://127.0.0.1:{port}"

        def serving() -> bool:
            assert all(p.poll() is None for p in processes), "a process exited"
            try:
                return httpx.get(f"{api}/api/activities", timeout=scaled(2)).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(serving, timeout=60, what="the API to serve the read model")
        done = run_to_end(tmp_path / "enqueue.py", env, timeout=scaled(120))
        assert done.returncode == 0, done.stderr
        assert done.stdout == output_after(PAGE, "enqueue.py")

        def listed() -> bool:
            items = httpx.get(f"{api}/api/activities", timeout=scaled(2)).json()["items"]
            return sorted(i["status"] for i in items) == ["complete"] * 3

        wait_for(listed, timeout=30, what="the three tasks complete in the read model")
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=scaled(60)) for process in processes]
        assert codes == [0, 0, 0], f"exit statuses (projector, worker, api): {codes}"
