"""docs/agents.md's complete example, extracted from the page and run as written:
`python weather_app.py` (the workers, on the page's scripted model) and `python ask.py`."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

from tests.integration.test_pipeline_docs import namespace_env, running

DOCS = Path(__file__).parents[2] / "docs" / "agents.md"


def doc_files() -> dict[str, str]:
    """The page's Python blocks that start with a `# name.py` line, by file name."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    return {m.group(1): b for b in blocks if (m := re.match(r"# (\w+\.py)\n", b))}


def test_the_complete_example_runs_as_written(redis_url: str, tmp_path: Path) -> None:
    files = doc_files()
    for name in ("weather_app.py", "ask.py"):
        (tmp_path / name).write_text(files[name])
    env = namespace_env(redis_url, f"axdocs-{uuid.uuid4().hex[:8]}")
    with running(tmp_path / "weather_app.py", env):
        done = subprocess.run(
            [sys.executable, "ask.py"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert re.fullmatch(r"weather_assistant: It is sunny and 72F\. \| tokens: \d+", lines[0])
    assert lines[1] == "the tool found: {'weather': ['Paris']}"
    assert lines[2].startswith("refused: ") and lines[2].endswith(
        "input guardrail 'validate_user_input' refused the run: Destructive queries not allowed"
    )
    assert lines[3] == (
        "support: {'intent': 'weather', 'answer': 'It is sunny and 72F.', "
        "'found': {'weather': ['Paris']}}"
    )
