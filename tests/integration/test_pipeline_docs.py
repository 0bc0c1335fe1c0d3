"""docs/pipelines.md's examples, extracted from the page and run as written: `python worker.py`
and `python app.py` for the analysis pipeline, and the `-> dict` step of "When a run cannot go
on", which must be accepted when defined and end its run with the documented error."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import agentexec as ax
from agentexec.connection import close_redis

DOCS = Path(__file__).parents[2] / "docs" / "pipelines.md"


def doc_files() -> dict[str, str]:
    """The page's Python blocks that start with a `# name.py` line, by file name."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    return {m.group(1): b for b in blocks if (m := re.match(r"# (\w+\.py)\n", b))}


@contextmanager
def running(script: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """`python script` in its folder, stopped with SIGTERM (then killed) at the end."""
    process = subprocess.Popen([sys.executable, script.name], cwd=script.parent, env=env)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def namespace_env(redis_url: str, prefix: str) -> dict[str, str]:
    return {**os.environ, "AGENTEXEC_REDIS_URL": redis_url, "AGENTEXEC_KEY_PREFIX": prefix}


def test_define_and_run_a_pipeline_as_written(redis_url: str, tmp_path: Path) -> None:
    files = doc_files()
    for name in ("worker.py", "app.py"):
        (tmp_path / name).write_text(files[name])
    env = namespace_env(redis_url, f"axdocs-{uuid.uuid4().hex[:8]}")
    with running(tmp_path / "worker.py", env):
        done = subprocess.run(
            [sys.executable, "app.py"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Anthropic is known for ... Anthropic competes in ..."


async def test_a_dict_step_is_accepted_and_its_run_ends_with_the_documented_error(
    redis_conf: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "lookup.py").write_text(doc_files()["lookup.py"])
    monkeypatch.syspath_prepend(str(tmp_path))
    import lookup  # type: ignore[import-not-found]  # defining it must not raise

    env = namespace_env(redis_conf, ax.CONF.key_prefix)
    try:
        with running(tmp_path / "lookup.py", env):
            task = await lookup.pipeline.enqueue(context=lookup.Company(name="Acme"))
            with pytest.raises(ax.TaskFailedError) as failed:
                await ax.get_result(task, timeout=120)
        assert re.search(
            r"task 'LookupPipeline' \(agent .*\) failed: step 0 \(fetch\) complete, but the run "
            r"cannot go on: its output is not a valid input of step 1 \(summarise\): 1 "
            r"validation error for Profile",
            str(failed.value),
        ), str(failed.value)
    finally:
        sys.modules.pop("lookup", None)
        await close_redis()
