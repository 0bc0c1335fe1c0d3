"""A conversation in an `ax.AgentSession` survives restarts. It continues across worker
processes: the first turn runs in one `agentexec worker` process, which is then stopped, the
second in a new one, and the model of the second run is given the first run's turns; the
projected table then holds the whole conversation. And it survives a Redis restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import create_engine, select

import agentexec as ax
from agentexec import events
from agentexec.activity.models import SessionItem
from agentexec.connection import close_redis, get_redis
from agentexec.embedded import EmbeddedRedis
from agentexec.projector import Projector
from agentexec.streams import Keys
from tests.support.waiting import scaled

ROOT = Path(__file__).resolve().parents[2]


class Chat(BaseModel):
    """The same shape as the app's context; the worker validates it as its own."""

    session_id: str
    message: str


@pytest.fixture
def start_worker(redis_conf: str, tmp_path: Path) -> Iterator[Callable[[], None]]:
    """Starts `agentexec worker tests.apps.sessions:pool`, stopping the one started before."""
    env = {
        **os.environ,
        "AGENTEXEC_REDIS_URL": redis_conf,
        "AGENTEXEC_KEY_PREFIX": ax.CONF.key_prefix,
        "AGENTEXEC_PARTITIONS": str(ax.CONF.partitions),
        "AGENTEXEC_GRACEFUL_SHUTDOWN_TIMEOUT": "10",
    }
    running: list[subprocess.Popen[bytes]] = []

    def stop() -> None:
        while running:
            process = running.pop()
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=scaled(30))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def start() -> None:
        stop()
        log = tmp_path / f"worker{len(list(tmp_path.glob('worker*.log')))}.log"
        with log.open("wb") as out:
            running.append(
                subprocess.Popen(
                    [sys.executable, "-m", "agentexec.cli", "worker", "tests.apps.sessions:pool"],
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )

    try:
        yield start
    finally:
        stop()
        for log in sorted(tmp_path.glob("worker*.log")):
            print(log.read_text())  # shown by pytest when the test failed


async def turn(session_id: str, message: str) -> dict[str, Any]:
    task = await ax.enqueue(
        "chat", Chat(session_id=session_id, message=message), queue_name="session_chat"
    )
    result: dict[str, Any] = await ax.get_result(task, timeout=scaled(60))
    return {**result, "agent_id": task.agent_id}


async def test_a_conversation_continues_on_another_worker_process(
    start_worker: Callable[[], None], tmp_path: Path
) -> None:
    start_worker()
    first = await turn("user-123", "My name is Ada.")
    assert first["reply"] == "You said: My name is Ada."

    start_worker()  # the first worker process is stopped; a new one takes the next turn
    second = await turn("user-123", "What is my name?")
    assert second["pid"] != first["pid"]
    assert second["reply"] == "You said: My name is Ada. / What is my name?"
    assert second["needs_summarization"]  # 4 items, max_items=4

    session = ax.AgentSession("user-123")
    history = await session.get_items()
    assert [(item.get("role"), item.get("type")) for item in history] == [
        ("user", None),
        ("assistant", "message"),
        ("user", None),
        ("assistant", "message"),
    ]
    assert history[0]["content"] == "My name is Ada."
    # Each change names the task whose handler made it.
    log = await get_redis().xrange(Keys(ax.CONF.key_prefix).events)
    changes = [
        e for e in (events.decode_entry(f) for _, f in log) if isinstance(e, events.SessionEvent)
    ]
    assert {e.by for e in changes} == {first["agent_id"], second["agent_id"]}

    engine = create_engine(f"sqlite:///{tmp_path / 'agents.db'}")
    ax.Base.metadata.create_all(engine)
    await Projector(engine).catch_up()
    with engine.connect() as conn:
        rows = conn.execute(
            select(SessionItem.item)
            .where(SessionItem.session_id == "user-123")
            .order_by(SessionItem.position)
        ).all()
    assert [row.item for row in rows] == history
    engine.dispose()


async def test_a_session_survives_a_redis_restart(redis_conf: str) -> None:
    """Killed and restarted (AOF on, as production runs it), Redis keeps the session's items
    and its version, so writers go on from where they were."""
    server = EmbeddedRedis(appendonly=True).start()
    ax.CONF.redis_url = server.url
    try:
        session = ax.AgentSession("kept")
        await session.add_items([{"role": "user", "content": "before"}])
        server.kill()
        EmbeddedRedis.start(server)
        later = ax.AgentSession("kept")
        assert await later.get_items() == [{"role": "user", "content": "before"}]
        await later.add_items([{"role": "user", "content": "after"}])
        assert await later.pop_item() == {"role": "user", "content": "after"}
        log = await get_redis().xrange(Keys(ax.CONF.key_prefix).events)
        versions = [events.decode_entry(fields).version for _, fields in log]  # type: ignore[union-attr]
        assert versions == [1, 2, 3]
    finally:
        await close_redis()
        server.close()
