"""docs/migrating.md's example, extracted from the page and run as written: `worker.py`
started with the page's `agentexec run` command, then `python app.py`, whose output must be
the one the page shows. Every Python block of the page is one of the two, or the test fails."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import agentexec as ax
from tests.integration.test_pipeline_docs import namespace_env
from tests.support.waiting import scaled

DOCS = Path(__file__).parents[3] / "docs" / "migrating.md"


def python_blocks() -> dict[str, str]:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    named = {m.group(1): b for b in blocks if (m := re.match(r"# (\w+\.py)\n", b))}
    assert len(named) == len(blocks), "a Python block without a `# name.py` line: run it here"
    return named


def test_the_030_program_on_the_page_runs_as_written(redis_conf: str, tmp_path: Path) -> None:
    files = python_blocks()
    assert sorted(files) == ["app.py", "worker.py"], "a new script on the page: run it here"
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    [command] = re.findall(r"```bash\n(agentexec run .*?)\n```", DOCS.read_text())
    [expected] = re.findall(r"It prints:\n\n```\n(.*?)```", DOCS.read_text(), flags=re.S)
    env = namespace_env(redis_conf, ax.CONF.key_prefix)
    argv = [sys.executable, "-m", "agentexec.cli", *shlex.split(command)[1:]]
    worker = subprocess.Popen(argv, cwd=tmp_path, env=env)
    try:
        done = subprocess.run(
            [sys.executable, "app.py"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=scaled(180),
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(scaled(30))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected
