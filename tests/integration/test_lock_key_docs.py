"""docs/tasks.md's lock_key example, extracted from the page and run as written: `python
billing.py`, then `python app.py`, whose output is compared with the page."""

from __future__ import annotations

from pathlib import Path

from tests.support.docs import doc_files, namespace_env, page_text, run_to_end, running, write_files
from tests.support.waiting import scaled

PAGE = "tasks.md"


def expected_output() -> str:
    text = page_text(PAGE)
    return text.split("then `python app.py` prints:\n\n```\n", 1)[1].split("```", 1)[0].strip()


def test_the_lock_key_example_runs_as_written(redis_url: str, tmp_path: Path) -> None:
    write_files(tmp_path, doc_files(PAGE), "billing.py", "app.py")
    env = namespace_env(redis_url)
    with running(tmp_path / "billing.py", env):
        done = run_to_end(tmp_path / "app.py", env, timeout=scaled(120))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected_output()
