"""`agentexec demo`: a few agent-like tasks with live progress, on embedded defaults.

Redis is `AGENTEXEC_REDIS_URL` when set, else a private server started for the demo; the
activity read model goes to a SQLite file. Progress is drawn from the event log as it is
appended (XREAD BLOCK), not by polling.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import uuid
from typing import Any
from uuid import UUID

from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from agentexec import activity, events
from agentexec.config import CONF
from agentexec.connection import close_redis
from agentexec.credentials import redact_url
from agentexec.embedded import EmbeddedRedis
from agentexec.positions import ORIGIN
from agentexec.queue import enqueue
from agentexec.runtime import current

from .pool import Pool

logger = logging.getLogger(__name__)

PHASES = ("Searching sources", "Reading filings", "Comparing competitors", "Drafting report")
COMPANIES = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark Industries")


_FIXED_WIDTH = 16 + 16 + 4 + 8 + 7 + 5
"""The progress line's columns but the message, with the spaces between all six."""


class ResearchContext(BaseModel):
    company: str
    fail: bool = False


pool = Pool(queue_name="agentexec_demo", num_workers=2, concurrency=4)


@pool.task("research_company", max_retries=1)
async def research_company(agent_id: UUID, context: ResearchContext) -> dict[str, str]:
    """Stands in for an agent: waits on "the network" and reports progress as it goes."""
    for i, phase in enumerate(PHASES):
        await asyncio.sleep(random.uniform(0.4, 1.2))
        activity.update(agent_id, f"{phase} for {context.company}", percentage=(i + 1) * 20)
    if context.fail:
        # An expected failure, reported by the handler itself: the task ends ERROR with this
        # message (no retry), and the worker logs one line, not a traceback.
        activity.error(agent_id, f"No filings found for {context.company}")
        return {}
    return {"company": context.company, "summary": f"{context.company} looks promising."}


async def _watch(console: Console, count: int) -> list[Any]:
    runtime = current()
    companies = (COMPANIES * (count // len(COMPANIES) + 1))[:count]
    tasks = [
        await enqueue("research_company", ResearchContext(company=c, fail=i == count - 1))
        for i, c in enumerate(companies)
    ]
    names = {t.agent_id: c for t, c in zip(tasks, companies, strict=True)}
    # Fixed widths for all but the message, which gets what is left and is cut short with an
    # ellipsis: otherwise rich shrinks every column, the bar and the percentage first.
    room = max(8, console.width - _FIXED_WIDTH)
    columns = (
        TextColumn("{task.fields[company]}", table_column=Column(width=16, no_wrap=True)),
        BarColumn(bar_width=16),
        TextColumn("{task.percentage:>3.0f}%", table_column=Column(width=4, no_wrap=True)),
        TextColumn("{task.fields[status]}", table_column=Column(width=8, no_wrap=True)),
        TextColumn(
            "{task.description}",
            table_column=Column(max_width=room, no_wrap=True, overflow="ellipsis"),
        ),
        TimeElapsedColumn(table_column=Column(width=7, no_wrap=True)),
    )
    with Progress(*columns, console=console) as progress:
        bars = {
            t.agent_id: progress.add_task(
                "queued", total=100, company=names[t.agent_id], status="queued"
            )
            for t in tasks
        }
        open_tasks = set(bars)
        last = ORIGIN
        broker = runtime.broker
        while open_tasks:
            page = await broker.wait_log(last, count=1000, block_ms=runtime.settings.block_ms)
            last = page.last or last
            for recorded in page.recorded:
                event = recorded.event
                bar = bars.get(event.agent_id)
                if bar is None or event.status is None:
                    continue
                update: dict[str, Any] = {"status": event.status.wire}
                if event.message:
                    update["description"] = event.message
                if event.percentage is not None:
                    update["completed"] = event.percentage
                progress.update(bar, **update)
                if event.status in events.TERMINAL:
                    open_tasks.discard(event.agent_id)
    results = await asyncio.gather(*(_result(t) for t in tasks))
    await close_redis()
    return results


async def _result(task: Any) -> Any:
    from agentexec.results import get_result

    try:
        return await get_result(task, timeout=30)
    except Exception as e:
        return e


def run_demo(count: int = 6, database: str = "agentexec-demo.db") -> None:
    """Run the demo: `count` tasks on two worker processes, the last one failing on purpose
    (it reports its own error with `ax.activity.error`).

    The pool runs a projector into the SQLite file `database`; at the end the demo prints the
    activity read model from it, as an application would query it.
    """
    # The demo is an application: like a user's script, it sets `CONF` (its own Redis and
    # namespace) before anything runs; the calls below read it at the edge.
    console = Console()
    server = None
    if not os.environ.get("AGENTEXEC_REDIS_URL"):
        server = EmbeddedRedis().start()
        CONF.redis_url = server.url
    CONF.key_prefix = f"agentexec-demo-{uuid.uuid4().hex[:8]}"
    engine = create_engine(f"sqlite:///{database}")
    from agentexec.activity.models import Base

    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    pool.engine = engine
    console.print(
        f"[bold]agentexec demo[/]: Redis {redact_url(CONF.redis_url)}, SQLite file {database}"
    )
    pool.start()
    try:
        results = asyncio.run(_watch(console, count))
    finally:
        pool.shutdown()  # stops the projector after it applied the last events
        if server is not None:
            server.close()
    console.print("\n[bold]Results[/] (ax.get_result):")
    for result in results:
        console.print(f"  {result}")
    with Session(engine) as session:
        console.print(_activity_table(session))


def _activity_table(session: Session) -> Table:
    """The read model as seed 001's CLI monitor shows it."""
    listing = activity.list(session, page=1, page_size=20)
    table = Table(
        title=f"Activity read model: {listing.total} tasks, {activity.active_count(session)} active"
    )
    for column in ("Agent", "Task", "Status", "Progress", "Latest message"):
        table.add_column(column)
    for item in listing.items:
        table.add_row(
            str(item.agent_id)[:8],
            item.agent_type,
            item.status.wire,
            f"{item.latest_percentage or 0}%",
            item.latest_log or "",
        )
    return table
