"""`agentexec --log-level WARNING demo` as the README runs it, in an 80-column terminal: no
traceback for the task that fails on purpose, and every progress line keeps its bar and
percentage."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

AGENTEXEC = str(Path(sys.executable).parent / "agentexec")


def test_demo_at_warning_in_80_columns(redis_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "80", "AGENTEXEC_REDIS_URL": redis_url}
    done = subprocess.run(
        [AGENTEXEC, "--log-level", "WARNING", "demo", "--tasks", "3", "--database", "demo.db"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "No filings found for Initech" in done.stderr  # one WARNING line says it
    lines = {
        c: [ln for ln in done.stdout.splitlines() if ln.startswith(c)]
        for c in ("Acme", "Globex", "Initech")
    }
    for company, found in lines.items():
        assert found, f"{company}: {done.stdout}"
        line = found[-1]
        assert len(line) <= 80, line
        assert re.search(r"━{12}", line), line  # the bar keeps its 16 columns (80% at least)
        assert re.search(r"\b(100|80)% (complete|error)\b", line), line
