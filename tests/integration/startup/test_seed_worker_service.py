"""Seed 001's "Standalone Worker Service" and "Docker Deployment" samples, run as written in a
scratch project: Ctrl-C reaches `except KeyboardInterrupt`, `atexit` cleanup runs once (in the
application process only), and neither cancels a task that another worker will take over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec import events
from agentexec.activity.models import Activity
from agentexec.connection import get_redis
from agentexec.streams import Keys
from tests.apps import service
from tests.support.waiting import async_wait_for

# The handler waits on a file, so that the test controls when a task it ran can finish.
TASK = """
class MyContext(BaseModel):
    gate: str


@pool.task("my_task")
async def my_task(agent_id: UUID, context: MyContext) -> None:
    while not os.path.exists(context.gate):
        await asyncio.sleep(0.05)
"""

STANDALONE = """
import asyncio
import os
from uuid import UUID
from pydantic import BaseModel
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
import agentexec as ax

engine = create_engine(os.environ["DATABASE_URL"])
pool = ax.Pool(engine=engine)
{task}
if __name__ == "__main__":
    try:
        pool.run()
    except KeyboardInterrupt:
        with Session(engine) as db:
            ax.activity.cancel_pending(db)
"""

DOCKER = """
import asyncio
import atexit
import os
from uuid import UUID
from pydantic import BaseModel
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
import agentexec as ax

engine = create_engine(os.environ["DATABASE_URL"])
pool = ax.Pool(engine=engine)

def cleanup() -> None:
    with Session(engine) as db:
        ax.activity.cancel_pending(db)

atexit.register(cleanup)
atexit.register(lambda: open(os.environ["CLEANUP_LOG"], "a").write(f"{{os.getpid()}}\\n"))
{task}
"""


def _environment(redis_url: str, database: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTEXEC_")}
    return {
        **env,
        "AGENTEXEC_KEY_PREFIX": ax.CONF.key_prefix,
        "AGENTEXEC_PARTITIONS": str(ax.CONF.partitions),
        "AGENTEXEC_NUM_WORKERS": "1",
        "AGENTEXEC_GRACEFUL_SHUTDOWN_TIMEOUT": "0.5",
        "DATABASE_URL": database,
        "PYTHONPATH": os.getcwd(),
        "REDIS_URL": redis_url,  # as in seed 001's `docker run -e REDIS_URL=...`
        **extra,
    }


def _launch(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


async def _events_of(agent_id: object) -> list[events.AnyEvent]:
    entries = await get_redis().xrange(Keys(ax.CONF.key_prefix).events)
    found = [events.decode_entry(f) for _, f in entries]
    return [e for e in found if e.agent_id == agent_id]


async def _wait_event(agent_id: object, kind: type[events.Event], what: str) -> None:
    async def seen() -> bool:
        return any(isinstance(e, kind) for e in await _events_of(agent_id))

    await async_wait_for(seen, timeout=90, what=what)


def _status(database: str, agent_id: object) -> object:
    with Session(create_engine(database)) as session:
        return session.scalar(select(Activity.status).where(Activity.agent_id == agent_id))


async def _prepare(tmp_path: Path) -> tuple[str, ax.Task, object]:
    """A read model with one stale activity (no task behind it: nothing will end it) and one
    task that a worker will be running when the pool is stopped."""
    database = f"sqlite:///{tmp_path / 'app.db'}"
    ax.Base.metadata.create_all(create_engine(database))
    stale = ax.activity.create("stale")
    task = await ax.enqueue("my_task", service.Gate(gate=str(tmp_path / "gate")))
    return database, task, stale


async def _stop_and_check(
    process: subprocess.Popen[str], signum: int, database: str, task: ax.Task, stale: object
) -> str:
    try:
        await _wait_event(task.agent_id, events.TaskStarted, "the task to start")
        await async_wait_for(
            _read_model_shows(database, stale, ax.Status.QUEUED), timeout=60, what="projection"
        )
        process.send_signal(signum)
        output, _ = process.communicate(timeout=90)
    finally:
        process.kill()
    assert process.returncode == 0, output
    # The stale activity was canceled; the task handed back to the queue was not ...
    assert any(isinstance(e, events.TaskCanceled) for e in await _events_of(stale)), output
    assert not any(isinstance(e, events.TaskCanceled) for e in await _events_of(task.agent_id))
    return output


def _read_model_shows(
    database: str, agent_id: object, status: object
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return _status(database, agent_id) == status

    return check


async def _taken_over(tmp_path: Path, task: ax.Task) -> None:
    """... and the next worker runs the handed-back task to completion."""
    (tmp_path / "gate").touch()
    service.pool.start()
    try:
        assert await ax.get_result(task, timeout=60) is None
    finally:
        service.pool.shutdown()


async def test_ctrl_c_reaches_except_keyboardinterrupt_around_pool_run(
    redis_conf: str, tmp_path: Path
) -> None:
    database, task, stale = await _prepare(tmp_path)
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(STANDALONE.format(task=TASK)))
    env = _environment(redis_conf, database, AGENTEXEC_REDIS_URL=redis_conf)
    process = _launch([sys.executable, str(script)], tmp_path, env)
    await _stop_and_check(process, signal.SIGINT, database, task, stale)
    await _taken_over(tmp_path, task)


async def test_atexit_cleanup_runs_once_and_spares_handed_back_tasks(
    redis_conf: str, tmp_path: Path
) -> None:
    database, task, stale = await _prepare(tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "worker.py").write_text(textwrap.dedent(DOCKER.format(task=TASK)))
    log = tmp_path / "cleanup.log"
    env = _environment(
        redis_conf, database, AGENTEXEC_WORKER_MODULE="src.worker", CLEANUP_LOG=str(log)
    )
    process = _launch([sys.executable, "-m", "agentexec.cli", "worker"], tmp_path, env)
    output = await _stop_and_check(process, signal.SIGTERM, database, task, stale)
    assert log.read_text().split() == [str(process.pid)], output
    assert f"Redis at {redis_conf}" in output  # from REDIS_URL, logged by each process
    await _taken_over(tmp_path, task)


def test_the_worker_command_without_a_pool_says_how_to_name_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AGENTEXEC_WORKER_MODULE"}
    done = subprocess.run(
        [sys.executable, "-m", "agentexec.cli", "worker"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "AGENTEXEC_WORKER_MODULE=myapp.worker" in done.stderr
