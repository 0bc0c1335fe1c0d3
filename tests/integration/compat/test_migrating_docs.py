"""docs/migrating.md's example, extracted from the page and run as written: `worker.py`
started with the page's `agentexec run` command, then `python app.py`, whose output must be
the one the page shows. Every Python block of the page is one of the two, or the test fails."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import agentexec as ax
from tests.support.docs import (
    doc_files,
    namespace_env,
    output_after,
    page_text,
    python_blocks,
    run_to_end,
    running,
    write_files,
)
from tests.support.waiting import scaled

PAGE = "migrating.md"


def test_the_030_program_on_the_page_runs_as_written(redis_conf: str, tmp_path: Path) -> None:
    files = doc_files(PAGE)
    assert len(files) == len(python_blocks(PAGE)), (
        "a Python block without a `# name.py` line: run it here"
    )
    assert sorted(files) == ["app.py", "worker.py"], "a new script on the page: run it here"
    write_files(tmp_path, files)
    [command] = re.findall(r"```bash\n(agentexec run .*?)\n```", page_text(PAGE))
    expected = output_after(PAGE, "app.py")
    env = namespace_env(redis_conf, ax.CONF.key_prefix)
    argv = [sys.executable, "-m", "agentexec.cli", *shlex.split(command)[1:]]
    with running(argv, env, cwd=tmp_path):
        done = run_to_end(tmp_path / "app.py", env, timeout=scaled(180))
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected
