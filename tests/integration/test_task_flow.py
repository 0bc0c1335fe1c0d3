"""enqueue -> worker -> result, against a real Redis server and real worker processes."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from pydantic import BaseModel, ConfigDict

import agentexec as ax
from agentexec import events
from agentexec.connection import get_redis
from tests.apps.basic import Answer, Echo, Record
from tests.support.listeners import wait_for_idle_workers
from tests.support.logs import keys_of, log_entries, log_length
from tests.support.topology import single_log_only
from tests.support.waiting import scaled


async def event_log() -> list[events.AnyEvent]:
    entries = await log_entries()
    return [events.decode_entry(fields) for _, fields in entries]


async def test_enqueue_appends_the_task_and_its_queued_event(redis_conf: str) -> None:
    task = await ax.enqueue("echo", Echo(text="hi"), priority=ax.Priority.HIGH)
    assert isinstance(task.agent_id, uuid.UUID)
    assert task.queue_name == ax.CONF.queue_name and task.priority is ax.Priority.HIGH
    keys = keys_of(task.agent_id)
    [queued] = await event_log()
    assert isinstance(queued, events.TaskQueued)
    assert queued.agent_id == task.agent_id and queued.message == ax.CONF.activity_message_create
    assert msgspec.json.decode(queued.context) == {"text": "hi", "delay": 0.0}
    entries = await get_redis().xrange(keys.queue(task.queue_name, ax.Priority.HIGH))
    assert len(entries) == 1
    assert await get_redis().xlen(keys.queue(task.queue_name, ax.Priority.LOW)) == 0


@pytest.mark.parametrize(
    ("task_name", "expected"),
    [
        ("echo", None),  # checked below: an Answer model
        ("sync_echo", "HELLO"),
        ("returns_dict", {"text": "hello", "n": 3, "items": [1, 2]}),
        ("returns_none", None),
        ("returns_number", 2.5),
    ],
)
async def test_results_come_back_as_the_handler_returned_them(
    running_pool: ax.Pool, task_name: str, expected: Any
) -> None:
    task = await ax.enqueue(task_name, Echo(text="hello"))
    result = await ax.get_result(task, timeout=scaled(20))
    if task_name == "echo":
        assert isinstance(result, Answer) and result.text == "hello"
        assert result.pid in running_pool.worker_pids
    else:
        assert result == expected


async def test_lifecycle_events_are_appended_in_order(running_pool: ax.Pool) -> None:
    task = await ax.enqueue("progress", Echo(text="x"))
    assert await ax.get_result(task, timeout=scaled(20)) == "done"
    log = [e for e in await event_log() if e.agent_id == task.agent_id]
    assert [type(e).__name__ for e in log] == [
        "TaskQueued",
        "TaskStarted",
        "TaskProgress",
        "TaskProgress",
        "TaskProgress",
        "TaskCompleted",
    ]
    assert [e.percentage for e in log[2:]] == [25, 50, 75, 100]
    # Progress written by the handler carries its task's name and attempt.
    assert {(e.task_name, e.attempt) for e in log} == {("progress", 1)}
    assert log[1].message == ax.CONF.activity_message_started
    assert log[-1].message == ax.CONF.activity_message_complete


async def test_a_failing_handler_raises_task_failed_error(running_pool: ax.Pool) -> None:
    task = await ax.enqueue("boom", Echo(text="kaput"))
    with pytest.raises(ax.TaskFailedError, match="RuntimeError: boom: kaput") as info:
        await ax.get_result(task, timeout=scaled(20))
    assert info.value.agent_id == task.agent_id
    failed = [e for e in await event_log() if isinstance(e, events.TaskFailed)]
    assert failed[0].message == "Task failed with error: RuntimeError: boom: kaput"


async def test_an_unknown_task_name_ends_in_error_not_a_crash(running_pool: ax.Pool) -> None:
    task = await ax.enqueue("no_such_task", Echo(text="x"))
    with pytest.raises(ax.TaskFailedError, match="no handler for task 'no_such_task'"):
        await ax.get_result(task, timeout=scaled(20))
    # The worker carries on.
    assert (
        await ax.get_result(await ax.enqueue("sync_echo", Echo(text="ok")), timeout=scaled(20))
    ) == "OK"


async def test_get_result_wakes_on_completion_and_after_it(running_pool: ax.Pool) -> None:
    task = await ax.enqueue("echo", Echo(text="later", delay=0.3))
    waiting = asyncio.create_task(ax.get_result(task, timeout=scaled(20)))
    assert (await waiting).text == "later"
    # Once stored, the result is returned again to any waiter, by agent id too.
    assert (await ax.get_result(task.agent_id, timeout=scaled(5))).text == "later"
    assert (await ax.get_result(str(task.agent_id), timeout=scaled(5))).text == "later"


async def test_get_result_times_out(redis_conf: str) -> None:
    task = await ax.enqueue("echo", Echo(text="nobody runs this"))
    with pytest.raises(TimeoutError, match=str(task.agent_id)):
        await ax.get_result(task, timeout=0.2)


async def test_results_expire_after_the_result_ttl(running_pool: ax.Pool) -> None:
    task = await ax.enqueue("sync_echo", Echo(text="x"))
    await ax.get_result(task, timeout=scaled(20))
    ttl = await get_redis().ttl(keys_of(task.agent_id).result(task.agent_id))
    assert 0 < ttl <= ax.CONF.result_ttl


async def test_gather_returns_results_in_order(running_pool: ax.Pool) -> None:
    tasks = [await ax.enqueue("echo", Echo(text=str(i), delay=0.05 * (5 - i))) for i in range(5)]
    results = await ax.gather(*tasks, timeout=scaled(20))
    assert [r.text for r in results] == ["0", "1", "2", "3", "4"]


async def test_gather_fails_fast(running_pool: ax.Pool) -> None:
    ax.CONF.graceful_shutdown_timeout = 0.5  # hand the 30 s task back at teardown
    # The time measured is the task's, not the pool's start (seconds on a busy machine).
    await wait_for_idle_workers(running_pool.num_workers or 1)
    slow = await ax.enqueue("echo", Echo(text="slow", delay=30))
    bad = await ax.enqueue("boom", Echo(text="first"))
    started = asyncio.get_running_loop().time()
    with pytest.raises(ax.TaskFailedError, match="boom: first"):
        await ax.gather(slow, bad, timeout=scaled(25))
    assert asyncio.get_running_loop().time() - started < 20


@single_log_only(
    "priority and FIFO order hold within one partition's streams; across partitions a worker "
    "takes what its per-partition reads return first (see the cluster report, issue 14)"
)
async def test_high_priority_runs_before_low_and_fifo_within(
    redis_conf: str, tmp_path: Path
) -> None:
    from tests.apps import basic

    out = tmp_path / "order.txt"
    for i in range(4):
        await ax.enqueue("record", Record(path=str(out), label=f"low{i}"))
        await ax.enqueue("record", Record(path=str(out), label=f"high{i}"), priority="high")
    pool = ax.Pool(num_workers=1, concurrency=1)
    pool.task("record")(basic.record)
    pool.start()
    try:
        last = await ax.enqueue("record", Record(path=str(out), label="end"))
        await ax.get_result(last, timeout=scaled(20))
    finally:
        pool.shutdown()
    order = out.read_text().split()
    assert order == ["high0", "high1", "high2", "high3", "low0", "low1", "low2", "low3", "end"]


async def test_no_more_handlers_run_at_once_than_the_concurrency(
    redis_conf: str, tmp_path: Path
) -> None:
    """A slot is freed when its handler returns, before the outcome is recorded: the next
    task may start meanwhile, but never a third handler beside two."""
    from tests.apps import basic

    out = tmp_path / "spans.txt"
    pool = ax.Pool(num_workers=1, concurrency=2)
    pool.task("span")(basic.span)
    pool.start()
    try:
        tasks = [await ax.enqueue("span", Record(path=str(out), label="")) for _ in range(12)]
        await ax.gather(*tasks, timeout=scaled(30))
    finally:
        pool.shutdown()
    running, most = 0, 0
    for mark in out.read_text().split():
        running += 1 if mark == "+" else -1
        most = max(most, running)
    assert most == 2, f"at most {most} handler(s) ran at once"


async def test_pickup_is_pushed_not_polled(redis_conf: str) -> None:
    """With blocking reads of 60 s, an idle pool must still start a task at once."""
    from tests.apps import basic

    ax.CONF.block_ms = 60_000
    basic.pool.start()
    try:
        # Every worker is in its blocking read, so the task must wake one up.
        await wait_for_idle_workers(basic.pool.num_workers or 1)
        started = asyncio.get_running_loop().time()
        result = await ax.get_result(
            await ax.enqueue("sync_echo", Echo(text="x")), timeout=scaled(30)
        )
        elapsed = asyncio.get_running_loop().time() - started
    finally:
        basic.pool.shutdown()
    assert result == "X"
    assert elapsed < 30, "the task waited for a blocking read to time out"


class Other(BaseModel):
    text: str


class Unserialisable(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    handle: object


async def test_enqueue_rejects_bad_contexts_at_the_call(redis_conf: str) -> None:
    with pytest.raises(ax.ContextError, match="not a Pydantic model"):
        await ax.enqueue("echo", {"text": "x"})  # type: ignore[arg-type]
    with pytest.raises(ax.ContextError, match=r"takes tests\.apps\.basic\.Echo; pass Echo"):
        await ax.enqueue("echo", Other(text="x"))
    with pytest.raises(ax.ContextError, match="cannot be serialised"):
        await ax.enqueue("anything", Unserialisable(handle=object()))
    ax.CONF.max_context_bytes = 1000
    with pytest.raises(ax.ContextError, match=r"above the 1,000-byte limit"):
        await ax.enqueue("echo", Echo(text="x" * 2000))
    with pytest.raises(ValueError, match="priority 'urgent'"):
        await ax.enqueue("echo", Echo(text="x"), priority="urgent")
    assert await log_length() == 0


async def test_enqueue_without_redis_says_so(redis_conf: str) -> None:
    ax.CONF.redis_url = "redis://127.0.0.1:1/0"
    ax.CONF.enqueue_timeout = 0.3  # it retries for this long before giving up
    with pytest.raises(ax.RedisUnavailableError, match=r"127\.0\.0\.1:1"):
        await ax.enqueue("echo", Echo(text="x"))


class Mail(BaseModel):
    to: str


async def send(agent_id: uuid.UUID, context: Mail) -> None:
    return None


async def test_default_queue_is_the_registering_pools(redis_conf: str) -> None:
    pool = ax.Pool(queue_name="emails_only")
    pool.task("send_email_default_queue")(send)
    task = await ax.enqueue("send_email_default_queue", Mail(to="a@b.c"))
    assert task.queue_name == "emails_only"
    explicit = await ax.enqueue("send_email_default_queue", Mail(to="a@b.c"), queue_name="other")
    assert explicit.queue_name == "other"


async def send_other(agent_id: uuid.UUID, context: Other) -> None:
    return None


async def test_contexts_are_checked_against_the_handler_of_the_target_queue(
    redis_conf: str,
) -> None:
    ax.Pool(queue_name="dual_a").task("dual_task")(send)
    ax.Pool(queue_name="dual_b").task("dual_task")(send_other)
    assert (await ax.enqueue("dual_task", Mail(to="x"), queue_name="dual_a")).queue_name == "dual_a"
    assert (
        await ax.enqueue("dual_task", Other(text="x"), queue_name="dual_b")
    ).queue_name == "dual_b"
    with pytest.raises(ax.ContextError, match=r"on queue 'dual_b' takes .*Other; pass Other"):
        await ax.enqueue("dual_task", Mail(to="x"), queue_name="dual_b")
