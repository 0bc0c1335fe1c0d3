"""The pool the fault suite runs (`agentexec worker tests.faults.app:pool`), with hooks that
inject a fault from inside a worker process at a chosen point of a task's first run.

Every run that reaches the end of its handler appends `agent_id pid` to the task's ledger file
(one `write` on an `O_APPEND` descriptor, so lines from concurrent processes never mix): the
checker counts these lines to prove that no task ran to completion twice.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer, model_validator

import agentexec as ax

FAULTS = ("", "before_start", "mid_progress", "after_return", "freeze_after_return", "always")
"""Where a job's first run kills (or, `freeze_*`, SIGSTOPs) its own worker process:
`before_start` while its context is read, before the task.started event; `mid_progress` after
reporting progress; `after_return` after the handler returned (and wrote its ledger line),
before the outcome is recorded; `always` on every run (a poison task)."""


def in_worker() -> bool:
    return multiprocessing.current_process().name.startswith("agentexec-worker")


def first_time(marker: str) -> bool:
    """True the first time it is called with `marker`, across processes (O_EXCL); the marker
    file then holds the pid of the process where the fault fires."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def append_line(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Job(BaseModel):
    ledger: str
    work: float = 0.0
    """Seconds the handler works, in `steps` steps, reporting progress after each."""
    steps: int = 1
    fault: str = ""
    marker: str = ""
    """File whose creation arms the fault once (see `first_time`); also `marker + '.pid'`
    receives the pid of the process running the task, for faults injected from outside."""
    padding: str = ""
    """Makes the context as large as a test needs."""
    key: str = ""
    """The lock key of `fault_keyed_job` (see `agentexec.locks`)."""

    @model_validator(mode="after")
    def _before_start(self) -> Job:
        if self.fault not in FAULTS:
            raise ValueError(f"fault {self.fault!r} is not one of {FAULTS}")
        if self.fault == "before_start" and in_worker() and first_time(self.marker):
            kill_self()
        return self


class Done(BaseModel):
    agent_id: UUID
    pid: int
    fault: str = ""
    marker: str = ""

    @model_serializer(mode="wrap")
    def _after_return(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Serialising the return value is the worker's last step before recording the outcome.
        if in_worker() and self.fault in ("after_return", "freeze_after_return"):
            if first_time(self.marker):
                if self.fault == "after_return":
                    kill_self()
                Path(self.marker + ".pid").write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGSTOP)
        return handler(self)


pool = ax.Pool(num_workers=2, concurrency=4)


@pool.task("fault_job", max_retries=0)
async def job(agent_id: UUID, context: Job) -> Done:
    started = time.time()
    if context.marker:
        Path(context.marker + ".pid").write_text(str(os.getpid()))
    if context.fault == "always":
        kill_self()
    for step in range(context.steps):
        await asyncio.sleep(context.work / context.steps)
        ax.activity.update(
            agent_id, f"step {step + 1}", percentage=(step + 1) * 99 // context.steps
        )
        if context.fault == "mid_progress" and first_time(context.marker):
            kill_self()
    append_line(context.ledger, f"{agent_id} {os.getpid()}")
    if context.key:
        # When the run held its key: no other run of the key may overlap it.
        append_line(context.ledger + ".spans", f"{context.key} {started} {time.time()}")
    return Done(agent_id=agent_id, pid=os.getpid(), fault=context.fault, marker=context.marker)


pool.task("fault_keyed_job", max_retries=0, lock_key="{key}")(job)


class Flaky(BaseModel):
    ledger: str
    counter: str
    failures: int


@pool.task("fault_flaky", max_retries=2, retry_on=(ConnectionError,))
async def flaky(agent_id: UUID, context: Flaky) -> Done:
    """Fails its first `failures` runs (counted in a file per task)."""
    append_line(context.counter, "run")
    runs = len(Path(context.counter).read_text().splitlines())
    if runs <= context.failures:
        raise ConnectionError(f"run {runs} failed")
    append_line(context.ledger, f"{agent_id} {os.getpid()}")
    return Done(agent_id=agent_id, pid=os.getpid())


@pool.task("fault_sync_job", max_retries=0)
def sync_job(agent_id: UUID, context: Job) -> Done:
    """Blocks its thread (a CPU-bound or blocking agent step) for `work` seconds."""
    time.sleep(context.work)
    append_line(context.ledger, f"{agent_id} {os.getpid()}")
    return Done(agent_id=agent_id, pid=os.getpid())
