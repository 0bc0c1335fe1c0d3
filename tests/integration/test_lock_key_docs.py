"""docs/tasks.md's lock_key example, extracted from the page and run as written: `python
billing.py`, then `python app.py`, whose output is compared with the page."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

from tests.integration.test_pipeline_docs import namespace_env, running
from tests.support.waiting import scaled

DOCS = Path(__file__).parents[2] / "docs" / "tasks.md"


def doc_files() -> dict[str, str]:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    return {m.group(1): b for b in blocks if (m := re.match(r"# (\w+\.py)\n", b))}


def expected_output() -> str:
    text = DOCS.read_text()
    return text.split("then `python app.py` prints:\n\n```\n", 1)[1].split("```", 1)[0].strip()


def test_the_lock_key_example_runs_as_written(redis_url: str, tmp_path: Path) -> None:
    files = doc_files()
    for name in ("billing.py", "app.py"):
        (tmp_path / name).write_text(files[name])
    env = namespace_env(redis_url, f"axdocs-{uuid.uuid4().hex[:8]}")
    with running(tmp_path / "billing.py", env):
        done = subprocess.run(
            [sys.executable, "app.py"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=scaled(120),
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected_output()
