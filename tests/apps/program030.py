"""A program written for agentexec 0.3.0, as its documentation shows one: keyword-only
handlers, `pool.add_task`, `ax.activity.update(..., status=...)`, a pipeline with sortable
step orders and no descriptions. Run with `agentexec run tests.apps.program030:pool
--workers 2 --create-tables`; the database is `AGENTEXEC_DATABASE_URL`."""

from __future__ import annotations

import os
from uuid import UUID

import agentexec as ax
from tests.apps.program030_models import Report, ResearchContext, Summary

QUEUE = "compat030"

pool = ax.Pool(database_url=os.environ.get("AGENTEXEC_DATABASE_URL"), queue_name=QUEUE)


@pool.task("compat030_research")
async def research(*, agent_id: UUID, context: ResearchContext) -> Report:
    ax.activity.update(
        agent_id, f"Researching {context.company}", percentage=50, status=ax.activity.Status.RUNNING
    )
    return Report(company=context.company, findings=["founded", "growing"])


def summarize(*, agent_id: UUID, context: ResearchContext) -> Summary:
    ax.activity.update(agent_id, "Summarizing", percentage=10)
    return Summary(text=f"{context.company} in one line")


pool.add_task("compat030_summarize", summarize)


@pool.task("compat030_flaky", max_retries=1)
async def flaky(*, agent_id: UUID, context: ResearchContext) -> None:
    raise RuntimeError(f"no data about {context.company}")


pipeline = ax.Pipeline(pool)


class CompanyPipeline(pipeline.Base):
    @pipeline.step(10)
    async def gather_facts(self, context: ResearchContext) -> Report:
        return Report(company=context.company, findings=["fact"])

    @pipeline.step(20)
    async def write_summary(self, report: Report) -> Summary:
        return Summary(text=f"{report.company}: {len(report.findings)} finding(s)")
