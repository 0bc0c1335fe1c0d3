"""A pipeline and tracker tasks used by the integration tests (module level, so that spawned
worker processes can import them). Steps and children record their runs in files, so that
tests can count them across processes."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from pydantic import BaseModel, field_validator

import agentexec as ax

pipeline_pool = ax.Pool(queue_name="pipelines", num_workers=2, concurrency=4)
tracker_pool = ax.Pool(queue_name="trackers", num_workers=2, concurrency=1)


def runs_file(run_id: UUID) -> Path:
    """Where the steps of run `run_id` log their runs, one step index per line."""
    return Path(tempfile.gettempdir()) / f"agentexec-test-run-{run_id}.log"


def note(run_id: UUID, step: int) -> None:
    with runs_file(run_id).open("a") as f:
        f.write(f"{step}\n")


class InputContext(BaseModel):
    company: str


class BrandResult(BaseModel):
    company: str
    brand: str


class MarketResult(BaseModel):
    market: str


class Analysis(BaseModel):
    company: str
    text: str


async def research_brand(context: InputContext) -> BrandResult:
    await asyncio.sleep(0.01)
    return BrandResult(company=context.company, brand=f"{context.company} brand")


async def research_market(context: InputContext) -> MarketResult:
    await asyncio.sleep(0.01)
    return MarketResult(market=f"{context.company} market")


pipeline = ax.Pipeline(pipeline_pool)


class ResearchPipeline(pipeline.Base):
    """Company names steer it: "crash..." kills the worker in step 1 the first time,
    "fail..." fails step 2 for good."""

    @pipeline.step(0, "parallel research")
    async def gather_data(self, context: InputContext) -> tuple[BrandResult, MarketResult]:
        note(self.run_id, 0)
        # As in the seed: gather's list output fans in to the next step's two parameters.
        return await asyncio.gather(  # type: ignore[return-value]
            research_brand(context),
            research_market(context),
        )

    @pipeline.step(1, "analysis")
    async def analyze(self, brand: BrandResult, market: MarketResult) -> Analysis:
        note(self.run_id, 1)
        marker = runs_file(self.run_id).with_suffix(".crashed")
        if brand.company.startswith("crash") and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(13)
        return Analysis(company=brand.company, text=f"{brand.brand} in {market.market}")

    @pipeline.step(2, "report", max_retries=0)
    def report(self, analysis: Analysis) -> str:
        note(self.run_id, 2)
        if analysis.company.startswith("fail"):
            raise ValueError(f"no report for {analysis.company}")
        return f"Report: {analysis.text}"


class Draft(BaseModel):
    company: str
    text: str

    @field_validator("text")
    @classmethod
    def _checked(cls, text: str) -> str:
        if text == "boom":
            raise RuntimeError("the validator has a bug")  # not a ValueError: not wrapped
        return text


control = ax.Pipeline(pipeline_pool)


class ControlPipeline(control.Base):
    """Company names steer it: "hold..." holds step 1 until it is canceled, "stubborn..." holds
    it and returns normally when canceled; "bad..." makes step 0's output miss a field of
    step 1's input, "boom..." makes validating it raise; "huge-N" puts N characters in it."""

    @control.step(0, "prepare")
    async def prepare(self, context: InputContext) -> dict[str, Any]:
        note(self.run_id, 0)
        company = context.company
        if company.startswith("bad"):
            return {"company": company}
        if company.startswith("boom"):
            return {"company": company, "text": "boom"}
        if company.startswith("huge-"):
            return {"company": company, "text": "x" * int(company.removeprefix("huge-"))}
        return {"company": company, "text": "ready"}

    @control.step(1, "hold")
    async def hold(self, draft: Draft) -> Draft:
        note(self.run_id, 1)
        if draft.company.startswith(("hold", "stubborn")):
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                if draft.company.startswith("hold"):
                    raise
                # "stubborn" finishes its work: the cancel came too late for this step.
        return draft

    @control.step(2, "publish")
    async def publish(self, draft: Draft) -> str:
        note(self.run_id, 2)
        return f"published {draft.company}"


class Child(BaseModel):
    batch_id: str
    index: int
    workdir: str
    failures: int = 0
    """Attempts that fail (after counting the child done) before one succeeds."""


class Aggregate(BaseModel):
    batch_id: str
    workdir: str


@tracker_pool.task("child", max_retries=3, retry_on=(ConnectionError,))
def child(agent_id: UUID, context: Child) -> int:
    """Waits for the test's "go" file, so that children finish at the same instant."""
    workdir = Path(context.workdir)
    attempts = workdir / f"child-{context.index}.attempts"
    attempt = int(attempts.read_text()) + 1 if attempts.exists() else 1
    attempts.write_text(str(attempt))
    (workdir / f"child-{context.index}.running").touch()
    deadline = time.monotonic() + 30
    while not (workdir / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.002)
    ax.Tracker("research", context.batch_id).decr()
    if attempt <= context.failures:
        raise ConnectionError(f"attempt {attempt} of child {context.index} failed")
    return attempt


@tracker_pool.task("aggregate")
def aggregate(agent_id: UUID, context: Aggregate) -> int:
    with (Path(context.workdir) / "aggregated").open("a") as f:
        f.write(f"{agent_id}\n")
    return ax.Tracker("research", context.batch_id).total
