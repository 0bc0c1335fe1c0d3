"""A pool of small handlers used by the integration tests (module level, so that spawned
worker processes can import them)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from uuid import UUID

from pydantic import BaseModel

import agentexec as ax


class Echo(BaseModel):
    text: str
    delay: float = 0.0


class Answer(BaseModel):
    text: str
    pid: int


class Record(BaseModel):
    """Appends its label to a file when it runs, to observe execution order across processes."""

    path: str
    label: str


pool = ax.Pool(num_workers=2, concurrency=4)


@pool.task("echo")
async def echo(agent_id: UUID, context: Echo) -> Answer:
    if context.delay:
        await asyncio.sleep(context.delay)
    return Answer(text=context.text, pid=os.getpid())


@pool.task("sync_echo")
def sync_echo(agent_id: UUID, context: Echo) -> str:
    time.sleep(context.delay)
    return context.text.upper()


@pool.task("returns_dict")
async def returns_dict(agent_id: UUID, context: Echo) -> dict[str, object]:
    return {"text": context.text, "n": 3, "items": [1, 2]}


@pool.task("returns_none")
async def returns_none(agent_id: UUID, context: Echo) -> None:
    return None


@pool.task("returns_number")
async def returns_number(agent_id: UUID, context: Echo) -> float:
    return 2.5


@pool.task("boom", max_retries=0)
async def boom(agent_id: UUID, context: Echo) -> str:
    raise RuntimeError(f"boom: {context.text}")


@pool.task("progress")
async def progress(agent_id: UUID, context: Echo) -> str:
    for pct in (25, 50, 75):
        ax.activity.update(agent_id, f"step {pct}", percentage=pct)
        await asyncio.sleep(context.delay)
    return "done"


@pool.task("record")
async def record(agent_id: UUID, context: Record) -> None:
    with Path(context.path).open("a") as f:
        f.write(context.label + "\n")


@pool.task("span")
async def span(agent_id: UUID, context: Record) -> None:
    """Appends "+" when it starts and "-" when it ends, to observe how many run at once."""
    with Path(context.path).open("a") as f:
        f.write("+\n")
    await asyncio.sleep(0.05)
    with Path(context.path).open("a") as f:
        f.write("-\n")


@pool.task("die")
async def die(agent_id: UUID, context: Record) -> str:
    """Kills its worker process the first time it runs (a marker file remembers)."""
    marker = Path(context.path)
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(13)
    return f"survived after {marker.read_text()} died"


class Flaky(BaseModel):
    """Fails until it has run `failures` times (counted in a file), then returns."""

    path: str
    failures: int
    exception: str = "ConnectionError"


@pool.task("flaky", max_retries=2, retry_on=(ConnectionError, TimeoutError))
async def flaky(agent_id: UUID, context: Flaky) -> int:
    counter = Path(context.path)
    runs = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(runs))
    if runs <= context.failures:
        raise {"ConnectionError": ConnectionError, "ValueError": ValueError}[context.exception](
            f"run {runs} failed"
        )
    return runs


@pool.task("slow", timeout=0.3, max_retries=0)
async def slow(agent_id: UUID, context: Echo) -> str:
    await asyncio.sleep(context.delay)
    return "finished"


@pool.task("always_dies")
async def always_dies(agent_id: UUID, context: Echo) -> None:
    os._exit(17)


@pool.task("sync_writes")
def sync_writes(agent_id: UUID, context: Echo) -> str:
    """Activity writes from a sync handler's thread."""
    ax.activity.update(agent_id, "from a sync handler", percentage=10)
    return context.text


@pool.task("agent_writes")
async def agent_writes(agent_id: UUID, context: Echo) -> str:
    """Runner events and sync activity writes from an async handler."""
    from agentexec.runners import EventRecorder

    recorder = EventRecorder(agent_id)
    ax.activity.update(agent_id, "queued by an async handler", percentage=5)
    await recorder.progress("recorded", 20)
    await recorder.turn("agent", 1)
    await recorder.tool_call("agent", 1, "search", '{"q": "x"}')
    await recorder.handoff("agent", "other", 1)
    await recorder.usage("agent", 1, requests=1, input_tokens=1, output_tokens=1, total_tokens=2)
    ax.activity.update(agent_id, "queued again", percentage=90)
    return context.text


class Spawn(BaseModel):
    """Queues `children` echo tasks from inside its handler (children of it by default), and
    one with `parent_id=None` when `orphan`; then waits `wait` seconds."""

    children: int
    child_delay: float = 0.0
    wait: float = 0.0
    orphan: bool = False


@pool.task("spawn")
async def spawn(agent_id: UUID, context: Spawn) -> list[str]:
    ids = []
    for i in range(context.children):
        child = await ax.enqueue("echo", Echo(text=f"child {i}", delay=context.child_delay))
        ids.append(str(child.agent_id))
    if context.orphan:
        orphan = await ax.enqueue("echo", Echo(text="orphan"), parent_id=None)
        ids.append(str(orphan.agent_id))
    await asyncio.sleep(context.wait)
    return ids


class Tree(BaseModel):
    """A task tree: the handler queues one `tree` task per entry of `children` (children of
    it, as tasks queued from a handler are); then, when `gate` names a file, waits until it
    exists (at most a minute); then fails when `fail`, else returns."""

    children: list[Tree] = []
    gate: str | None = None
    fail: bool = False


Tree.model_rebuild()


@pool.task("tree", max_retries=0)
async def tree(agent_id: UUID, context: Tree) -> list[str]:
    ids = [str((await ax.enqueue("tree", child)).agent_id) for child in context.children]
    if context.gate is not None:
        deadline = time.monotonic() + 60
        while not Path(context.gate).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{context.gate} was not created within a minute")
            await asyncio.sleep(0.05)
    if context.fail:
        raise RuntimeError("this branch of the tree fails")
    return ids
