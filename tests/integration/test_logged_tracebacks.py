"""Every path that logs a user's traceback logs it redacted: a handler that raised after
reporting its error, a task's transition hook, and a pipeline step's transition."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import msgspec
import pytest

import agentexec as ax
from agentexec.events import TaskQueued
from agentexec.pipelines import advance
from agentexec.results import Outcome
from agentexec.workers.worker import Worker
from tests.apps import edges, workflows


def _assert_redacted(caplog: pytest.LogCaptureFixture, headline: str) -> None:
    logged = [r.getMessage() for r in caplog.records if headline in r.getMessage()]
    assert logged, f"no log line with {headline!r}"
    assert "Traceback (most recent call last)" in logged[0]  # the traceback is there...
    assert "ConnectionError" in logged[0]
    assert edges.PASSWORD not in caplog.text  # ...without the secrets in its exception
    assert edges.API_KEY not in caplog.text


@pytest.fixture
async def worker(redis_conf: str) -> AsyncIterator[list[Worker]]:
    """Runs, in this process, the workers a test appends; stops them all at the end."""
    started: list[Worker] = []
    running: list[asyncio.Task[None]] = []

    async def watch() -> None:
        while True:
            while len(running) < len(started):
                running.append(asyncio.create_task(started[len(running)].run()))
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    try:
        yield started
    finally:
        watcher.cancel()
        for w in started:
            w.stopping.set()
        await asyncio.wait_for(asyncio.gather(*running, return_exceptions=True), 60)


async def test_a_handler_that_raised_after_its_error_logs_a_redacted_traceback(
    worker: list[Worker], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.WARNING)
    worker.append(Worker(edges.pool.worker_spec("in-process-0")))
    task = await ax.enqueue("leaky_after_error", edges.Runs(path=str(tmp_path / "runs")))
    with pytest.raises(ax.TaskFailedError):
        await ax.get_result(task, timeout=60)
    _assert_redacted(caplog, "raised after reporting its error")


async def test_a_transition_hook_that_raised_logs_a_redacted_traceback(
    worker: list[Worker], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.WARNING)
    spec = edges.pool.worker_spec("in-process-0")
    definitions = tuple(
        dataclasses.replace(d, transition=edges.leaky_transition) if d.name == "plain" else d
        for d in spec.definitions
    )
    worker.append(Worker(dataclasses.replace(spec, definitions=definitions)))
    task = await ax.enqueue("plain", edges.Runs(path=str(tmp_path / "runs")))
    assert await ax.get_result(task, timeout=60) == "done"  # recorded without the hook's writes
    _assert_redacted(caplog, "its outcome is recorded without it")


def test_a_pipeline_transition_that_raised_logs_a_redacted_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(workflows.pipeline, "_transition", edges.leaky_transition)
    run_id = uuid4()
    ref = {"run_id": run_id, "pipeline": "ResearchPipeline", "step": 0, "input": {}}
    queued = TaskQueued(
        agent_id=uuid4(),
        task_name="ResearchPipeline.gather_data",
        queue="q",
        context=msgspec.Raw(msgspec.json.encode(ref)),
        parent_id=run_id,
    )
    writes = advance(queued, Outcome("complete", queued.task_name, result=msgspec.Raw(b"{}")))
    assert writes  # the run ends ERROR instead of going on
    _assert_redacted(caplog, "its transition raised")
