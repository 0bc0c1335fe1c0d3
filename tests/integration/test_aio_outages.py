"""An awaited activity write inside a task's handler (`ax.activity.aio`) rides out a short Redis
outage as the sync handler's writes do: it retries, for up to `AGENTEXEC_ENQUEUE_TIMEOUT`,
never appending twice after a lost reply, and then raises `RedisUnavailableError`."""

from __future__ import annotations

from typing import Any

import pytest
import redis

import agentexec as ax
from agentexec import events
from agentexec.broker import Broker
from agentexec.connection import get_redis
from agentexec.runtime import current
from agentexec.streams import WORKERS_GROUP
from agentexec.tasks import RunningTask, TaskLease, reset_running, set_running
from tests.integration.test_broker_contract import held


async def held_task() -> tuple[RunningTask, Broker]:
    """A task of queue "q" whose entry consumer "w:0" holds, as its worker would run it."""
    broker = current().broker
    _consumer, entry, event = await held(broker)
    lease = TaskLease(entry[0], entry[1], WORKERS_GROUP, "w:0")
    return RunningTask(event.agent_id, event.task_name, 1, lease), broker


async def progress_ids(broker: Broker) -> list[str]:
    entries = await get_redis().xrange(broker.keys.events)
    found = [(i, events.decode_entry(f)) for i, f in entries]
    return [i.decode() for i, e in found if isinstance(e, events.TaskProgress)]


async def test_an_awaited_update_waits_out_an_outage_and_appends_once(
    redis_conf: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, broker = await held_task()
    original = Broker.append_held
    tries: list[str] = []

    async def flaky(self: Broker, event: Any, lease: TaskLease, dedup: str) -> str | None:
        tries.append(dedup)
        if len(tries) == 1:  # appended, but the reply was lost with the connection
            await original(self, event, lease, dedup)
            raise redis.ConnectionError("Connection reset by peer")
        if len(tries) == 2:
            raise redis.ConnectionError("Error 111 connecting: Connection refused")
        return await original(self, event, lease, dedup)

    monkeypatch.setattr(Broker, "append_held", flaky)
    token = set_running(run)
    try:
        appended = await ax.activity.aio.update(run.agent_id, "step 1", percentage=10)
    finally:
        reset_running(token)
    assert len(tries) == 3 and len(set(tries)) == 1  # one event, one name for every try
    assert await progress_ids(broker) == [appended]


async def test_an_awaited_update_raises_once_redis_stayed_away(
    redis_conf: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ax.CONF.enqueue_timeout = 0.3
    run, broker = await held_task()

    async def down(self: Broker, event: Any, lease: TaskLease, dedup: str) -> str | None:
        raise redis.ConnectionError("Error 111 connecting: Connection refused")

    monkeypatch.setattr(Broker, "append_held", down)
    token = set_running(run)
    try:
        with pytest.raises(ax.RedisUnavailableError, match="could not record TaskProgress"):
            await ax.activity.aio.update(run.agent_id, "step 1")
    finally:
        reset_running(token)
    assert await progress_ids(broker) == []
