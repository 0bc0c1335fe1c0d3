"""Retries, timeouts, cancellation, idempotent enqueue and dead letters, with real workers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import agentexec as ax
from agentexec import events
from agentexec.batcher import get_batcher
from agentexec.connection import get_redis
from agentexec.embedded import EmbeddedRedis
from agentexec.scripts import RETRY, START
from agentexec.streams import WORKERS_GROUP, Keys, ensure_group
from tests.apps import basic
from tests.apps.basic import Echo, Flaky, Record
from tests.integration.test_pool import _wait_running
from tests.support.waiting import async_wait_for, scaled


async def log_of(agent_id: object) -> list[events.AnyEvent]:
    entries = await get_redis().xrange(Keys(ax.CONF.key_prefix).events)
    return [e for e in (events.decode_entry(f) for _, f in entries) if e.agent_id == agent_id]


async def test_a_retried_task_succeeds_and_each_retry_is_an_event(
    fast_retries: None, running_pool: ax.Pool, tmp_path: Path
) -> None:
    task = await ax.enqueue("flaky", Flaky(path=str(tmp_path / "n"), failures=2))
    assert await ax.get_result(task, timeout=scaled(30)) == 3
    log = await log_of(task.agent_id)
    retried = [e for e in log if isinstance(e, events.TaskRetried)]
    assert [(e.attempt, e.error) for e in retried] == [
        (1, "ConnectionError: run 1 failed"),
        (2, "ConnectionError: run 2 failed"),
    ]
    assert all(0 < e.delay <= 0.2 for e in retried)
    assert [e.attempt for e in log if isinstance(e, events.TaskStarted)] == [1, 2, 3]
    assert not [e for e in log if isinstance(e, events.TaskFailed)]
    assert isinstance(log[-1], events.TaskCompleted) and log[-1].attempt == 3


async def test_exhausted_retries_end_in_error(
    fast_retries: None, running_pool: ax.Pool, tmp_path: Path
) -> None:
    task = await ax.enqueue("flaky", Flaky(path=str(tmp_path / "n"), failures=5))
    with pytest.raises(ax.TaskFailedError, match="run 3 failed"):
        await ax.get_result(task, timeout=scaled(30))
    log = await log_of(task.agent_id)
    assert len([e for e in log if isinstance(e, events.TaskRetried)]) == 2
    [failed] = [e for e in log if isinstance(e, events.TaskFailed)]
    assert failed.attempt == 3 and log[-1] is failed


async def test_exceptions_outside_retry_on_fail_at_once(
    fast_retries: None, running_pool: ax.Pool, tmp_path: Path
) -> None:
    task = await ax.enqueue(
        "flaky", Flaky(path=str(tmp_path / "n"), failures=1, exception="ValueError")
    )
    with pytest.raises(ax.TaskFailedError, match="ValueError: run 1 failed"):
        await ax.get_result(task, timeout=scaled(30))
    assert not [e for e in await log_of(task.agent_id) if isinstance(e, events.TaskRetried)]


async def test_a_task_waiting_for_its_retry_does_not_hold_a_worker(
    redis_conf: str, tmp_path: Path
) -> None:
    ax.CONF.retry_backoff = ax.CONF.retry_backoff_max = 2.0  # jitter: 1 to 2 s
    pool = ax.Pool(num_workers=1, concurrency=1)
    pool.task("flaky", max_retries=1, retry_on=(ConnectionError,))(basic.flaky)
    pool.task("record")(basic.record)
    pool.start()
    try:
        failing = await ax.enqueue("flaky", Flaky(path=str(tmp_path / "n"), failures=1))
        await _wait_running(failing.agent_id)
        other = await ax.enqueue("record", Record(path=str(tmp_path / "order"), label="other"))
        await ax.get_result(other, timeout=scaled(30))
        # The only slot ran `other` while `failing` waited for its retry.
        assert not [e for e in await log_of(failing.agent_id) if e.attempt == 2]
        assert await ax.get_result(failing, timeout=scaled(30)) == 2
    finally:
        pool.shutdown()


async def test_timeouts_from_the_decorator_and_from_enqueue(running_pool: ax.Pool) -> None:
    slow = await ax.enqueue("slow", Echo(text="x", delay=10))
    with pytest.raises(ax.TaskFailedError, match=r"ran longer than its 0\.3s timeout"):
        await ax.get_result(slow, timeout=scaled(30))
    quick = await ax.enqueue("slow", Echo(text="x", delay=0.01))
    assert await ax.get_result(quick, timeout=scaled(30)) == "finished"
    # A timeout given at enqueue overrides the decorator's, both ways.
    longer = await ax.enqueue("slow", Echo(text="x", delay=0.6), timeout=scaled(5))
    assert await ax.get_result(longer, timeout=scaled(30)) == "finished"
    shorter = await ax.enqueue("slow", Echo(text="x", delay=0.2), timeout=0.05)
    with pytest.raises(ax.TaskFailedError, match=r"ran longer than its 0\.05s timeout"):
        await ax.get_result(shorter, timeout=scaled(30))
    with pytest.raises(ValueError, match="timeout=0"):
        await ax.enqueue("echo", Echo(text="x"), timeout=0)


async def test_cancel_stops_a_running_task(running_pool: ax.Pool) -> None:
    task = await ax.enqueue("echo", Echo(text="x", delay=60))
    await _wait_running(task.agent_id)
    assert await ax.cancel(task.agent_id) is True
    with pytest.raises(ax.TaskFailedError, match="canceled"):
        await ax.get_result(task, timeout=scaled(30))
    log = await log_of(task.agent_id)
    assert isinstance(log[-1], events.TaskCanceled)
    assert any(isinstance(e, events.TaskCancelRequested) for e in log)
    assert await ax.cancel(task.agent_id) is False  # already ended


async def test_cancel_of_a_queued_task_stops_it_before_it_starts(redis_conf: str) -> None:
    task = await ax.enqueue("echo", Echo(text="never runs"))
    assert await ax.cancel(str(task.agent_id)) is True
    basic.pool.start()
    try:
        with pytest.raises(ax.TaskFailedError, match="canceled"):
            await ax.get_result(task, timeout=scaled(30))
    finally:
        basic.pool.shutdown()
    log = await log_of(task.agent_id)
    assert not [e for e in log if isinstance(e, events.TaskStarted)]
    assert isinstance(log[-1], events.TaskCanceled)
    with pytest.raises(ValueError, match="not a UUID"):
        await ax.cancel("nope")


async def test_idempotent_enqueue_returns_the_same_task(redis_conf: str) -> None:
    first = await ax.enqueue("echo", Echo(text="once"), idempotency_key="order-42")
    second = await ax.enqueue("echo", Echo(text="once"), idempotency_key="order-42")
    other = await ax.enqueue("echo", Echo(text="once"), idempotency_key="order-43")
    assert second.agent_id == first.agent_id and second.event_id == first.event_id
    assert other.agent_id != first.agent_id
    keys = Keys(ax.CONF.key_prefix)
    assert await get_redis().xlen(keys.events) == 2
    assert await get_redis().xlen(keys.queue(first.queue_name, first.priority)) == 2


async def test_enqueue_waits_for_redis_to_come_back(redis_conf: str) -> None:
    server = EmbeddedRedis().start(timeout=scaled(10))
    try:
        ax.CONF.redis_url = server.url
        server.kill()
        pending = asyncio.create_task(ax.enqueue("echo", Echo(text="patient")))
        # The outage: long enough for enqueue to try, fail and back off, however busy the
        # machine is; it must still be waiting.
        await asyncio.sleep(scaled(0.5))
        assert not pending.done()
        EmbeddedRedis.start(server, timeout=scaled(10))  # the same port again
        task = await asyncio.wait_for(pending, scaled(30))
        assert await get_redis().xlen(Keys(ax.CONF.key_prefix).events) == 1
        assert task.agent_id
        ax.CONF.enqueue_timeout = 0.3
        server.kill()
        with pytest.raises(ax.RedisUnavailableError, match="AGENTEXEC_ENQUEUE_TIMEOUT"):
            await ax.enqueue("echo", Echo(text="gives up"))
    finally:
        server.close()


async def test_a_poison_task_is_dead_lettered_and_redriven(redis_conf: str) -> None:
    ax.CONF.max_deliveries = 2
    basic.pool.start()
    try:
        task = await ax.enqueue("always_dies", Echo(text="x"))
        with pytest.raises(ax.TaskFailedError, match="delivered 3 times"):
            await ax.get_result(task, timeout=scaled(60))
        # Workers keep serving after the poison task is gone.
        ok = await ax.enqueue("sync_echo", Echo(text="still here"))
        assert await ax.get_result(ok, timeout=scaled(30)) == "STILL HERE"
    finally:
        basic.pool.shutdown()
    env = {
        "AGENTEXEC_REDIS_URL": ax.CONF.redis_url,
        "AGENTEXEC_KEY_PREFIX": ax.CONF.key_prefix,
        "AGENTEXEC_PARTITIONS": str(ax.CONF.partitions),
    }
    listed = _cli("dead", "list", env=env)
    assert "always_dies" in listed and "delivered 3 times" in listed
    dead_id = listed.split()[0]
    redriven = _cli("dead", "redrive", dead_id, env=env)
    assert f"{dead_id} -> agent" in redriven
    assert "no dead letters" in _cli("dead", "list", env=env)
    [requeued] = [
        e
        for e in (
            events.decode_entry(f)
            for _, f in await get_redis().xrange(Keys(ax.CONF.key_prefix).events)
        )
        if isinstance(e, events.TaskQueued) and (e.metadata or {}).get("redriven_from")
    ]
    assert requeued.metadata == {"redriven_from": str(task.agent_id)}


async def test_a_malformed_entry_is_dead_lettered_and_the_worker_goes_on(
    running_pool: ax.Pool,
) -> None:
    keys = Keys(ax.CONF.key_prefix)
    stream = keys.queue(ax.CONF.queue_name, ax.Priority.LOW)
    await get_redis().xadd(stream, {"event": b"{not json"})
    await get_redis().xadd(stream, {"other": b"field"})
    ok = await ax.enqueue("sync_echo", Echo(text="after garbage"))
    assert await ax.get_result(ok, timeout=scaled(30)) == "AFTER GARBAGE"
    dead = await get_redis().xrange(keys.dead_letters)
    reasons = [f[b"reason"].decode() for _, f in dead]
    assert len(reasons) == 2 and all(
        "not a valid agentexec event" in r or "no b'event'" in r for r in reasons
    )
    env = {
        "AGENTEXEC_REDIS_URL": ax.CONF.redis_url,
        "AGENTEXEC_KEY_PREFIX": ax.CONF.key_prefix,
        "AGENTEXEC_PARTITIONS": str(ax.CONF.partitions),
    }
    out = _run_cli("dead", "redrive", dead[0][0].decode(), env=env)
    assert out.returncode == 1 and "cannot be re-driven" in out.stderr


def _run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentexec.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )


def _cli(*args: str, env: dict[str, str]) -> str:
    out = _run_cli(*args, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


async def test_flushall_mid_task_keeps_the_outcome_and_the_workers(running_pool: ax.Pool) -> None:
    task = await ax.enqueue("echo", Echo(text="survives", delay=1.0))
    await _wait_running(task.agent_id)
    await get_redis().flushall()
    # The group is gone, so nobody else can hold the task: its outcome is still recorded.
    assert (await ax.get_result(task, timeout=scaled(30))).text == "survives"
    # The workers recreate their groups and keep serving new work.
    after = await ax.enqueue("sync_echo", Echo(text="after flush"))
    assert await ax.get_result(after, timeout=scaled(30)) == "AFTER FLUSH"


async def test_a_copy_of_a_task_running_in_the_same_worker_waits_for_it(redis_conf: str) -> None:
    """After Redis lost its data the projector queues running tasks again; the copy may reach
    the worker that runs the task, whose held key names that worker: it must not run twice."""
    ax.CONF.lease_seconds = 1
    pool = ax.Pool(num_workers=1, concurrency=2)
    pool.task("echo")(basic.echo)
    pool.start()
    try:
        task = await ax.enqueue("echo", Echo(text="once", delay=1.5))
        await _wait_running(task.agent_id)
        stream = Keys(ax.CONF.key_prefix).queue(task.queue_name, task.priority)
        [(_, fields)] = await get_redis().xrange(stream)
        await get_redis().xadd(stream, fields)  # the copy, as the restore queues it
        assert (await ax.get_result(task, timeout=scaled(30))).text == "once"

        async def copy_dropped() -> bool:
            # Deferred for a lease, then dropped by START: the task has ended.
            return await get_redis().xlen(stream) == 0 and not await get_redis().zcard(
                Keys(ax.CONF.key_prefix).delayed(task.queue_name)
            )

        await async_wait_for(copy_dropped, timeout=30, what="the copy dropped")
    finally:
        pool.shutdown()
    starts = [e for e in await log_of(task.agent_id) if isinstance(e, events.TaskStarted)]
    assert len(starts) == 1, f"started {len(starts)} times"


async def test_a_cancel_whose_notice_was_missed_is_still_acted_on(redis_conf: str) -> None:
    ax.CONF.lease_seconds = 0.6  # lease renewal (which checks cancel markers) every 0.2 s
    basic.pool.start()
    try:
        task = await ax.enqueue("echo", Echo(text="x", delay=60))
        await _wait_running(task.agent_id)
        # The marker without the pub/sub notice, as when the notice fell in an outage.
        await get_redis().set(Keys(ax.CONF.key_prefix).cancel_marker(task.agent_id), "1")
        with pytest.raises(ax.TaskFailedError, match="canceled"):
            await ax.get_result(task, timeout=scaled(30))
    finally:
        basic.pool.shutdown()


async def test_start_and_retry_run_again_after_a_lost_reply_append_once(redis_conf: str) -> None:
    # A worker whose reply was lost runs the script again with the time of its first try.
    client, batcher = get_redis(), get_batcher()
    keys = Keys(ax.CONF.key_prefix)
    stream = keys.queue("q", events.Priority.LOW)
    await ensure_group(client, stream, WORKERS_GROUP)
    entry_id = await client.xadd(stream, {"event": b"{}"})
    await client.xreadgroup(WORKERS_GROUP, "w:0", {stream: ">"})
    aid = uuid.uuid4()
    since = int(time.time() * 1000) - 5000
    started = events.encode(events.TaskStarted(agent_id=aid, task_name="t"))
    start_keys = [keys.events, stream, keys.result(aid), keys.held(aid), keys.cancel_marker(aid)]
    start_args = [started, WORKERS_GROUP, entry_id, "w:0"]
    first = await batcher.run_script(START, start_keys, start_args)
    assert await batcher.run_script(START, start_keys, [*start_args, since]) == first
    retried = events.encode(events.TaskRetried(agent_id=aid, task_name="t", error="e", delay=1))
    retry_keys = [stream, keys.delayed("q"), keys.events]
    retry_args = [WORKERS_GROUP, entry_id, "w:0", b"l:{}", 0, retried]
    first = await batcher.run_script(RETRY, retry_keys, retry_args)
    assert await batcher.run_script(RETRY, retry_keys, [*retry_args, since]) == first
    logged = [events.decode_entry(f) for _, f in await client.xrange(keys.events)]
    assert [type(e) for e in logged] == [events.TaskStarted, events.TaskRetried]
    # Without the time of a first try, a script appends: the scan costs a normal run nothing.
    other = await client.xadd(stream, {"event": b"{}"})
    await client.xreadgroup(WORKERS_GROUP, "w:0", {stream: ">"})
    assert await batcher.run_script(START, start_keys, [started, WORKERS_GROUP, other, "w:0"])
    assert await client.xlen(keys.events) == 3
