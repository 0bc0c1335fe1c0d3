"""docs/agents.md's complete example, extracted from the page and run as written:
`python weather_app.py` (the workers, on the page's scripted model) and `python ask.py`."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.docs import doc_files, namespace_env, run_to_end, running, write_files


def test_the_complete_example_runs_as_written(redis_url: str, tmp_path: Path) -> None:
    write_files(tmp_path, doc_files("agents.md"), "weather_app.py", "ask.py")
    env = namespace_env(redis_url)
    with running(tmp_path / "weather_app.py", env):
        done = run_to_end(tmp_path / "ask.py", env, timeout=300)
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
