"""docs/tracing.md's example, extracted from the page and run as written: `python worker.py`
with `AGENTEXEC_TRACING_SETUP=telemetry:setup`, then `python app.py`; the span files the
processes write must hold the trace the page draws."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.docs import doc_files, namespace_env, run_to_end, running, write_files
from tests.support.waiting import scaled, wait_for


def spans(folder: Path) -> list[dict[str, Any]]:
    found = []
    for path in folder.glob("spans-*.jsonl"):
        for line in path.read_text().splitlines():
            if line.endswith("}"):
                span = json.loads(line)
                span["process"] = path.name.split("-")[1]
                found.append(span)
    return found


def test_the_example_records_one_trace_across_its_processes(redis_url: str, tmp_path: Path) -> None:
    write_files(tmp_path, doc_files("tracing.md"), "telemetry.py", "worker.py", "app.py")
    env = namespace_env(redis_url, AGENTEXEC_TRACING_SETUP="telemetry:setup")
    with running(tmp_path / "worker.py", env):
        app_env = {k: v for k, v in env.items() if k != "AGENTEXEC_TRACING_SETUP"}
        done = run_to_end(tmp_path / "app.py", app_env, timeout=scaled(120))
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "Acme makes anvils."

        def projected() -> bool:
            types = [
                t
                for s in spans(tmp_path)
                if s["name"] == "project research"
                for t in s["attributes"]["agentexec.event_types"]
            ]
            return "task.queued" in types and "task.completed" in types

        wait_for(projected, timeout=30, what="the projection of the task's events")

    recorded = spans(tmp_path)
    by_id = {s["context"]["span_id"]: s for s in recorded}

    def parent(name: str) -> str:
        (span,) = [s for s in recorded if s["name"] == name]
        return by_id[span["parent_id"]]["name"]

    assert {s["context"]["trace_id"] for s in recorded} == {
        next(s for s in recorded if s["name"] == "research request")["context"]["trace_id"]
    }
    assert parent("enqueue research") == "research request"
    assert parent("queue wait research") == "enqueue research"
    assert parent("run research") == "enqueue research"
    for name in ("turn 1 Researcher", "tool lookup", "turn 2 Researcher"):
        assert parent(name) == "run research"
    processes = {s["name"]: s["process"] for s in recorded}
    assert processes["enqueue research"] == "app" and processes["run research"] == "worker"
    projections = [s for s in recorded if s["name"] == "project research"]
    assert {s["process"] for s in projections} == {"pool"}
    assert {by_id[s["parent_id"]]["name"] for s in projections} == {
        "enqueue research",
        "run research",
    }
