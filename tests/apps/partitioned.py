"""Handlers for the partitions flow tests (module level, so that spawned worker processes can
import them): one pool serving plain, child-queueing, flaky, held, keyed and tracked tasks
and a pipeline, on one queue. Handlers leave their traces in files of the test's directory."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from uuid import UUID

from pydantic import BaseModel

import agentexec as ax

pool = ax.Pool(queue_name="parts", num_workers=2, concurrency=8)


class Text(BaseModel):
    text: str


class Work(BaseModel):
    """What `flaky`, `hold`, `keyed` and `tracked` do, in `workdir`."""

    workdir: str
    name: str
    key: str = ""
    batch_id: str = ""


@pool.task("shout")
async def shout(agent_id: UUID, context: Text) -> str:
    return context.text.upper()


@pool.task("spawn")
async def spawn(agent_id: UUID, context: Text) -> str:
    """Queues a child (`shout`) and returns its agent id."""
    child = await ax.enqueue("shout", Text(text=context.text))
    return str(child.agent_id)


@pool.task("flaky", max_retries=2, retry_on=(ConnectionError,))
async def flaky(agent_id: UUID, context: Work) -> int:
    """Fails its first attempt; returns the attempt that succeeded."""
    counter = Path(context.workdir) / f"{context.name}.runs"
    runs = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(runs))
    if runs == 1:
        raise ConnectionError("the first attempt fails")
    return runs


@pool.task("hold", max_retries=0)
async def hold(agent_id: UUID, context: Work) -> str:
    """Says it started, then sleeps until canceled (a minute at most)."""
    (Path(context.workdir) / f"{context.name}.started").touch()
    await asyncio.sleep(60)
    return "not canceled"


@pool.task("keyed", lock_key="k-{key}")
async def keyed(agent_id: UUID, context: Work) -> list[float]:
    """Runs 0.3 s with its lock key held; returns when it started and ended."""
    start = time.time()
    await asyncio.sleep(0.3)
    return [start, time.time()]


@pool.task("tracked")
def tracked(agent_id: UUID, context: Work) -> str:
    ax.Tracker("parts", context.batch_id).decr()
    return context.name


@pool.task("fan_in")
def fan_in(agent_id: UUID, context: Work) -> int:
    return ax.Tracker("parts", context.batch_id).total


pipeline = ax.Pipeline(pool)


class Numbers(pipeline.Base):
    @pipeline.step(0, "double")
    async def double(self, context: Text) -> Text:
        return Text(text=context.text * 2)

    @pipeline.step(1, "shout")
    async def shout(self, doubled: Text) -> str:
        return doubled.text.upper()
