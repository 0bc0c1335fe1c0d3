"""Handlers whose failures and messages are hard to record (module level, so that spawned
worker processes can import them)."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from pydantic import BaseModel

import agentexec as ax

PASSWORD = "hunter2-pw-Xy7"
API_KEY = "sk-proj-" + "Q9w8E7r6T5y4U3i2O1p0" * 2


class Runs(BaseModel):
    """Each run appends a line to `path`, to count how many times the handler ran."""

    path: str


pool = ax.Pool(queue_name="edges", num_workers=1, concurrency=2)


def _count(context: Runs) -> None:
    with Path(context.path).open("a") as f:
        f.write("run\n")


@pool.task("surrogate_failure", max_retries=0)
async def surrogate_failure(agent_id: UUID, context: Runs) -> None:
    _count(context)
    raise ValueError("bad \udc80 text")  # as text decoded from model output can hold


@pool.task("unprintable_failure", max_retries=0)
async def unprintable_failure(agent_id: UUID, context: Runs) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("str() of this exception raises")

    _count(context)
    raise Unprintable()


@pool.task("leaky_failure", max_retries=0)
def leaky_failure(agent_id: UUID, context: Runs) -> None:
    _count(context)
    raise ConnectionError(
        f"could not reach redis://agent:{PASSWORD}@cache.internal:6379/0 using key {API_KEY}"
    )


@pool.task("surrogate_result", max_retries=0)
async def surrogate_result(agent_id: UUID, context: Runs) -> str:
    _count(context)
    return "bad \udc80 result"


@pool.task("awkward_progress")
async def awkward_progress(agent_id: UUID, context: Runs) -> str:
    _count(context)
    ax.activity.update(agent_id, "nul \x00 and \udc80 surrogate", percentage=10)
    ax.activity.update(agent_id, "x" * 5_000_000, percentage=50)
    return "done"


@pool.task("leaky_after_error", max_retries=0)
async def leaky_after_error(agent_id: UUID, context: Runs) -> None:
    _count(context)
    ax.activity.error(agent_id, "gave up")
    raise ConnectionError(f"then redis://agent:{PASSWORD}@cache.internal:6379/0 with {API_KEY}")


@pool.task("plain", max_retries=0)
async def plain(agent_id: UUID, context: Runs) -> str:
    _count(context)
    return "done"


def leaky_transition(*args: object) -> None:
    """A transition hook that fails with credentials in its message."""
    raise ConnectionError(f"hook: redis://agent:{PASSWORD}@cache.internal:6379/0 {API_KEY}")
