"""docs/pipelines.md's examples, extracted from the page and run as written: `python worker.py`
and `python app.py` for the analysis pipeline, and the `-> dict` step of "When a run cannot go
on", which must be accepted when defined and end its run with the documented error."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

import agentexec as ax
from agentexec.connection import close_redis
from tests.support.docs import doc_files, namespace_env, run_to_end, running, write_files

PAGE = "pipelines.md"


def test_define_and_run_a_pipeline_as_written(redis_url: str, tmp_path: Path) -> None:
    write_files(tmp_path, doc_files(PAGE), "worker.py", "app.py")
    env = namespace_env(redis_url)
    with running(tmp_path / "worker.py", env):
        done = run_to_end(tmp_path / "app.py", env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Anthropic is known for ... Anthropic competes in ..."


async def test_a_dict_step_is_accepted_and_its_run_ends_with_the_documented_error(
    redis_conf: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_files(tmp_path, doc_files(PAGE), "lookup.py")
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
