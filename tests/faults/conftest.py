"""Fixtures of the fault suite: a `Cluster` per test, and the figures table at the end.

The figures of the run are written to `build/fault-figures.json` and printed as a table in
pytest's summary (paste it into docs/reliability.md after a full run).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.faults.cluster import ROOT, Cluster, Figures

_figures: list[Figures] = []


@pytest.fixture
async def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    fault = request.node.get_closest_marker("fault")
    postgres = request.node.get_closest_marker("postgres") is not None
    cluster = Cluster(tmp_path, fault.args[0] if fault else request.node.name, postgres=postgres)
    try:
        yield cluster
    finally:
        await cluster.close()
    if cluster.figures.seconds:  # the checker ran to its end
        _figures.append(cluster.figures)


def table(figures: list[Figures]) -> str:
    lines = [
        "| fault | tasks | faults injected | time to recover (s) | tasks lost | "
        "completed twice | reruns allowed by the fault | test time (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for f in figures:
        recovery = "-" if f.recovery_seconds is None else f"{f.recovery_seconds:.1f}"
        lines.append(
            f"| {f.fault} | {f.tasks} | {f.faults_injected} | {recovery} | {f.tasks_lost} | "
            f"{f.completed_twice} | {f.reruns} | {f.seconds:.1f} |"
        )
    return "\n".join(lines)


def _order(figures: Figures) -> tuple[int, str]:
    number = figures.fault.split(".", 1)[0]
    return (int(number) if number.isdigit() else 99, figures.fault)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _figures:
        return
    figures = sorted(_figures, key=_order)
    out = ROOT / "build" / "fault-figures.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps([dataclasses.asdict(f) for f in figures], indent=2) + "\n")
    terminalreporter.write_sep("-", f"fault suite figures (also in {out.relative_to(ROOT)})")
    terminalreporter.write_line(table(figures))
