"""Retention: the projector trims the Redis log below what it committed and archived, keeping
the hot window; `prune` removes ended activities and, when asked, archived events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec import events
from agentexec.activity.models import Activity, ActivityLog, ArchivedEvent
from agentexec.cli import main
from agentexec.connection import get_redis, get_sync_redis
from agentexec.errors import ConfigurationError
from agentexec.events import Event
from agentexec.projector import Projector, checkpoints
from agentexec.projector.checkpoints import parse_id
from agentexec.projector.retention import prune_archive
from agentexec.runtime import current
from agentexec.streams import PROJECTOR_GROUP, Keys

from .conftest import database_url
from .test_async_reads import async_url
from .workload import append_all, checkpoint_position, lifecycle, snapshot, traffic


def log_key() -> str:
    return Keys(ax.CONF.key_prefix).events


def log_ids() -> list[str]:
    return [i.decode() for i, _ in get_sync_redis().xrange(log_key())]


def count(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


async def test_projector_trims_the_log_below_its_checkpoint(
    engine: Engine, redis_conf: str
) -> None:
    ax.CONF.log_hot_window = 0
    evs = traffic(600)
    last = append_all(evs)
    projector = Projector(engine, batch_size=100, lease_seconds=5)
    assert await projector.catch_up() == len(evs)

    # Trimmed in batches (a trim every few seconds at most), never past the checkpoint.
    assert checkpoint_position(engine) == last
    kept = log_ids()
    assert kept and kept[-1] == last
    assert 0 < projector.retention.trimmed == len(evs) - len(kept)
    assert count(engine, ArchivedEvent) == len(evs)

    # Entries after the checkpoint stay; the next trim takes only what was committed.
    projector.retention.interval = 0
    more = append_all(traffic(50, seed=2))
    assert await projector.catch_up() == len(traffic(50, seed=2))
    assert log_ids() == [more]


async def test_the_hot_window_is_kept(engine: Engine, projector: Projector) -> None:
    assert ax.CONF.log_hot_window == 600
    evs = traffic(200)
    append_all(evs)
    await projector.catch_up()
    assert len(log_ids()) == len(evs)


async def test_trim_never_passes_the_checkpoint_nor_another_group(redis_conf: str) -> None:
    client = get_redis()
    # One millisecond each, a minute back: a hot window of 0 keeps the current millisecond.
    base = days_ago_ms(1 / 1440)
    ids = [await client.xadd(log_key(), {b"event": b"{}"}, id=f"{base + n}-0") for n in range(20)]
    ids = [i.decode() for i in ids]
    from agentexec.projector.retention import LogRetention

    await client.xgroup_create(log_key(), PROJECTOR_GROUP, id=ids[19])  # the projector's own
    retention = LogRetention(hot_window=0, interval=0)
    broker = current().broker
    assert await retention.after_commit(broker, ids[15]) == 15
    assert log_ids() == ids[15:]

    # A group that still has entries to read, or unacknowledged ones, holds the trim back.
    await client.xgroup_create(log_key(), "audit", id=ids[16])
    await client.xreadgroup("audit", "reader", {log_key(): ">"}, count=2)
    assert await retention.after_commit(broker, ids[19]) == 2
    assert log_ids() == ids[17:]
    await client.xack(log_key(), "audit", ids[17], ids[18])
    assert await retention.after_commit(broker, ids[19]) == 2
    assert log_ids() == ids[19:]


async def test_a_lost_log_is_not_trimmed_until_the_projector_takes_it_over(
    redis_conf: str,
) -> None:
    from agentexec.projector.retention import LogRetention

    # The projector had committed up to `checkpoint`; then Redis lost the log, and new events
    # got ids below the checkpoint (its clock is behind): none of them is archived yet.
    client = get_redis()
    checkpoint = "99999999999999-0"
    base = days_ago_ms(1 / 1440)  # a minute back, one millisecond each (see above)
    ids = [
        (await client.xadd(log_key(), {b"event": b"{}"}, id=f"{base + n}-0")).decode()
        for n in range(5)
    ]
    retention = LogRetention(hot_window=0, interval=0)
    broker = current().broker
    assert await retention.after_commit(broker, checkpoint) == 0
    assert log_ids() == ids

    # The projector's takeover lifts such entries above the checkpoint and creates its group;
    # from then on, trimming goes on.
    await client.xgroup_create(log_key(), PROJECTOR_GROUP, id=ids[-1])
    assert await retention.after_commit(broker, ids[3]) == 3
    assert log_ids() == ids[3:]


def old_lifecycle(days_ago: float, *, ended: bool = True) -> list[Event]:
    """A task's events with producer timestamps `days_ago` days back."""
    ts = datetime.now(UTC) - timedelta(days=days_ago)
    life = lifecycle(uuid.uuid4())
    if not ended:
        life = life[:-1]
    return [msgspec.structs.replace(e, ts=ts) for e in life]


def append_at(evs: list[Event], ms: int) -> list[str]:
    """XADD with explicit ids at `ms` (milliseconds since the epoch), one sequence each."""
    client = get_sync_redis()
    ids = []
    for seq, event in enumerate(evs):
        ids.append(client.xadd(log_key(), events.entry(event), id=f"{ms}-{seq}").decode())  # type: ignore[union-attr]
    return ids


def days_ago_ms(days: float) -> int:
    return int((datetime.now(UTC) - timedelta(days=days)).timestamp() * 1000)


async def test_prune_removes_ended_activities_and_only_asked_archive_rows(
    engine: Engine, projector: Projector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    old_done = [old_lifecycle(40) for _ in range(7)]
    old_running = old_lifecycle(40, ended=False)
    append_at([e for life in old_done for e in life] + old_running, days_ago_ms(40))
    recent = traffic(100)
    append_all(recent)
    await projector.catch_up()
    old_agents = {life[0].agent_id for life in old_done}
    recent_agents = {e.agent_id for e in recent}

    with Session(engine) as session:
        assert ax.activity.prune(session, older_than=timedelta(days=30), batch_size=3) == 7
    with engine.connect() as conn:
        left = set(conn.execute(select(Activity.agent_id)).scalars())
        logs = set(conn.execute(select(ActivityLog.activity_id)).scalars())
    assert left == recent_agents | {old_running[0].agent_id}
    assert not old_agents & left
    assert len(logs) == len(left)  # no log row of a removed activity is left
    assert "prune: removed 7 activities" in caplog.text
    # The archive stays unless asked.
    archived = count(engine, ArchivedEvent)
    assert archived == sum(map(len, old_done)) + len(old_running) + len(recent)

    assert prune_archive(engine, timedelta(days=30), batch_size=4) == sum(map(len, old_done))
    with engine.connect() as conn:
        agents = set(conn.execute(select(ArchivedEvent.agent_id)).scalars())
    # The task that has not ended keeps its history (restore queues it again from it).
    assert agents == recent_agents | {old_running[0].agent_id}

    # Idempotent, and the projector goes on from where it was.
    before = snapshot(engine)
    with Session(engine) as session:
        assert ax.activity.prune(session, older_than=timedelta(days=30)) == 0
    assert prune_archive(engine, timedelta(days=30)) == 0
    assert await projector.catch_up() == 0
    assert snapshot(engine) == before


async def test_prune_archive_keeps_what_is_above_the_checkpoint(
    engine: Engine, projector: Projector
) -> None:
    first = append_at(old_lifecycle(40), days_ago_ms(41))
    second = append_at(old_lifecycle(40), days_ago_ms(40))
    await projector.catch_up()
    # The checkpoint moved back by hand: the projector goes over `second` again, and needs
    # its archived rows to tell what it applied.
    with engine.begin() as conn:
        checkpoints.reset(conn, log_key(), first[-1], "test")
    assert prune_archive(engine, timedelta(days=30)) == len(first)
    with engine.connect() as conn:
        kept = conn.execute(select(ArchivedEvent.stream_ms, ArchivedEvent.stream_seq)).all()
    assert sorted(f"{ms}-{seq}" for ms, seq in kept) == sorted(second, key=parse_id)


def test_prune_rejects_a_negative_age(engine: Engine) -> None:
    with pytest.raises(ConfigurationError, match="older_than"), Session(engine) as session:
        ax.activity.prune(session, older_than=timedelta(days=-1))


async def test_the_prune_command(engine: Engine, projector: Projector) -> None:
    old = old_lifecycle(40)
    append_at(old, days_ago_ms(40))
    recent = traffic(30)
    append_all(recent)
    await projector.catch_up()
    url = database_url(engine)
    runner = CliRunner()

    result = runner.invoke(main, ["prune", "--older-than", "30d", "--database-url", url])
    assert result.exit_code == 0, result.output
    assert "removed 1 ended activities older than 30d" in result.output
    assert count(engine, ArchivedEvent) == len(old) + len(recent)

    args = ["prune", "--older-than", "4w", "--archive", "--database-url", url]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"removed {len(old)} archived events older than 4w" in result.output
    assert count(engine, ArchivedEvent) == len(recent)


def test_the_prune_command_rejects_a_bad_duration() -> None:
    result = CliRunner().invoke(main, ["prune", "--older-than", "30 days"])
    assert result.exit_code == 2
    assert "'30 days' is not a duration" in result.output


async def test_prune_with_an_async_session(engine: Engine, projector: Projector) -> None:
    old = old_lifecycle(40)
    append_at(old, days_ago_ms(40))
    append_all(traffic(20))
    await projector.catch_up()
    async_engine = create_async_engine(async_url(engine))
    try:
        async with AsyncSession(async_engine) as session:
            assert await ax.activity.prune(session, older_than=timedelta(days=30)) == 1
    finally:
        await async_engine.dispose()
    with engine.connect() as conn:
        assert old[0].agent_id not in set(conn.execute(select(Activity.agent_id)).scalars())
