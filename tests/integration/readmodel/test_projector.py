"""The projector's guarantees: exactly-once effect, dead letters, ownership and outages."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.activity.models import Activity, ActivityLog, ArchivedEvent, Checkpoint
from agentexec.connection import close_redis, get_redis, get_sync_redis
from agentexec.errors import FencedError
from agentexec.projector import Projector, checkpoints
from agentexec.projector.rebuild import rebuild
from agentexec.runtime import current
from agentexec.streams import PROJECTOR_GROUP, Keys
from tests.apps import basic
from tests.support.waiting import scaled

from .conftest import sqlite_engine
from .workload import append_all, checkpoint_position, snapshot, traffic, wait_until


def count(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


async def test_batches_apply_once_even_when_redelivered(
    engine: Engine, projector: Projector
) -> None:
    evs = traffic(2500)
    append_all(evs)
    assert await projector.catch_up() == len(evs)
    before = snapshot(engine, checkpoint=True)
    assert count(engine, ArchivedEvent) == len(evs)
    assert count(engine, ActivityLog) == len(evs)

    # Redeliver the whole log, as after a crash between commit and ack.
    await get_redis().xgroup_setid(current().keys.events, PROJECTOR_GROUP, "0")
    assert await projector.catch_up() == 0
    assert snapshot(engine, checkpoint=True) == before

    await rebuild(engine)
    assert snapshot(engine, checkpoint=True) == before


async def test_undecodable_event_is_dead_lettered_and_projection_goes_on(
    engine: Engine, projector: Projector, caplog: pytest.LogCaptureFixture
) -> None:
    keys = current().keys  # partition 0's: the log checkpoint_position looks at
    client = get_sync_redis()
    aid = ax.activity.create("before")
    bad_json = client.xadd(keys.events, {b"event": b"{not json"}).decode()  # type: ignore[union-attr]
    no_field = client.xadd(keys.events, {b"other": b"1"}).decode()  # type: ignore[union-attr]
    after = ax.activity.create("after")
    assert await projector.catch_up() == 2

    letters = client.xrange(keys.dead_letters)
    assert [f[b"id"].decode() for _, f in letters] == [bad_json, no_field]  # type: ignore[union-attr]
    assert all(
        b"not a valid agentexec event" in f[b"reason"] or b"no b'event'" in f[b"reason"]
        for _, f in letters
    )  # type: ignore[union-attr]
    assert "dead-lettering" in caplog.text
    assert count(engine, Activity) == 2
    assert checkpoint_position(engine) == client.xrevrange(keys.events, count=1)[0][0].decode()  # type: ignore[index]
    pending = client.xpending(keys.events, PROJECTOR_GROUP)
    assert pending["pending"] == 0  # type: ignore[index]
    with engine.connect() as conn:
        assert set(conn.execute(select(Activity.agent_id)).scalars()) == {aid, after}


async def test_two_projectors_at_once_never_double_apply(engine: Engine, redis_conf: str) -> None:
    first = Projector(engine, batch_size=200, lease_seconds=0.6, name="first")
    second = Projector(engine, batch_size=200, lease_seconds=0.6, name="second")
    stops = {"first": asyncio.Event(), "second": asyncio.Event()}
    runs = {p.name: asyncio.create_task(p.run(stops[p.name])) for p in (first, second)}
    evs = traffic(3000, seed=7)
    last = ""
    for start in range(0, len(evs), 500):
        last = append_all(evs[start : start + 500])
        await asyncio.sleep(0)
    # Stop the owner mid-stream; the other, which has been trying all along, takes over.
    await wait_until(lambda: checkpoint_position(engine) not in (None, "0-0"))
    owner = get_sync_redis().get(current().keys.projector_lease).decode()  # type: ignore[union-attr]
    stops[owner].set()
    await runs[owner]
    await wait_until(lambda: checkpoint_position(engine) == last)
    for stop in stops.values():
        stop.set()
    await asyncio.gather(*runs.values())

    assert count(engine, ArchivedEvent) == len(evs)
    assert count(engine, ActivityLog) == len(evs)
    assert first.applied + second.applied == len(evs)
    assert first.applied > 0 and second.applied > 0
    live = snapshot(engine)
    await rebuild(engine)
    assert snapshot(engine) == live
    await close_redis()


async def test_a_stale_owner_cannot_commit(engine: Engine, redis_conf: str) -> None:
    name = Keys(ax.CONF.key_prefix).events
    with engine.begin() as conn:
        assert checkpoints.load(conn, name, "a") == "0-0"
    with engine.begin() as conn:
        checkpoints.advance(conn, name, "0-0", "5-0", "b")
    with pytest.raises(FencedError, match="'5-0'"), engine.begin() as conn:
        checkpoints.advance(conn, name, "0-0", "3-0", "a")
    with engine.connect() as conn:
        assert conn.execute(select(Checkpoint.owner, Checkpoint.position)).one() == ("b", "5-0")


async def test_lease_is_exclusive_and_fails_over(engine: Engine, redis_conf: str) -> None:
    holder = Projector(engine, lease_seconds=0.5, name="holder")
    waiter = Projector(engine, lease_seconds=0.5, name="waiter")
    assert await holder._take_over(holder.logs[0])
    assert not await waiter._take_over(waiter.logs[0])
    ax.activity.create("t")
    # The holder dies without releasing: the waiter gets the log when the lease expires.
    assert await waiter.catch_up(timeout=scaled(5)) == 1
    assert (await holder._step(holder.logs[0], asyncio.Event(), block=False)) == "lost"
    await close_redis()


@pytest.mark.skipif(sys.platform != "linux", reason="only Linux gives a thread its own niceness")
@pytest.mark.parametrize("niceness", [10, 0])
async def test_a_pools_projector_runs_on_its_own_thread_below_the_workers(
    redis_conf: str, tmp_path: Path, niceness: int
) -> None:
    ax.CONF.projector_niceness = niceness
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    engine = sqlite_engine(tmp_path / "agents.db")
    pool = ax.Pool(engine=engine, num_workers=1)
    pool.task("echo")(basic.echo)
    pool.start()
    try:
        task = await ax.enqueue("echo", basic.Echo(text="hi"))
        await ax.get_result(task, timeout=scaled(20))

        def complete() -> bool:
            with Session(engine) as db:
                activity = ax.activity.detail(db, task.agent_id)
                return activity is not None and activity.status == ax.Status.COMPLETE

        await wait_until(complete)
        [thread] = [t for t in threading.enumerate() if t.name == "agentexec-projector"]
        assert thread.native_id is not None
        assert os.getpriority(os.PRIO_PROCESS, thread.native_id) == max(own, niceness)
        [worker] = pool.worker_pids
        assert os.getpriority(os.PRIO_PROCESS, worker) == own, "the workers keep their priority"
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own
    finally:
        pool.shutdown()
        engine.dispose()
    assert not [t for t in threading.enumerate() if t.name == "agentexec-projector"]
