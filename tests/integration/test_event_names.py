"""Every event reaches the log with its task's name, whichever door wrote it: enqueue, the
worker, activity writes from a sync or an async handler and from outside any handler, runner
events inside and outside a handler, `ax.cancel`, and pipeline events (real Redis, real worker
processes)."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

import agentexec as ax
from agentexec import events
from agentexec.broker import Broker
from agentexec.connection import get_redis
from agentexec.eventlog import EventLog
from agentexec.runners import EventRecorder
from agentexec.streams import WORKERS_GROUP, Keys
from agentexec.tasks import TaskLease
from tests.apps.basic import Echo
from tests.apps.workflows import InputContext, pipeline, runs_file
from tests.support.waiting import scaled


async def event_log() -> list[events.AnyEvent]:
    entries = await get_redis().xrange(Keys(ax.CONF.key_prefix).events)
    return [events.decode_entry(f) for _, f in entries]


def names_by_agent(log: list[events.AnyEvent]) -> dict[UUID, set[str]]:
    names: dict[UUID, set[str]] = {}
    for event in log:
        names.setdefault(event.agent_id, set()).add(event.task_name)
    return names


async def test_every_door_names_its_events(running_pool: ax.Pool) -> None:
    tasks = [
        await ax.enqueue("sync_writes", Echo(text="s")),
        await ax.enqueue("agent_writes", Echo(text="a")),
        await ax.enqueue("progress", Echo(text="p")),
        await ax.enqueue("boom", Echo(text="b")),
    ]
    for task in tasks:
        try:
            await ax.get_result(task, timeout=scaled(30))
        except ax.TaskFailedError:
            pass
    # From outside any handler: the name comes from the task's enqueue (or `create`).
    outside = ax.activity.create("outside", message="tracked by hand")
    ax.activity.update(outside, "half way", percentage=50)
    await EventRecorder(outside).progress("a runner outside a handler", 60)
    await EventRecorder(outside).turn("agent", 1)
    ax.activity.complete(outside)
    ax.activity.update(tasks[0].agent_id, "after the task ended")
    ax.activity.error(tasks[2].agent_id, error="judged later")
    later = await ax.enqueue("echo", Echo(text="later"), delay=3600)
    assert await ax.cancel(later.agent_id)

    log = await event_log()
    kinds = {type(e).__name__ for e in log}
    assert {
        "TaskQueued",
        "TaskStarted",
        "TaskProgress",
        "TaskCompleted",
        "TaskFailed",
        "TaskCancelRequested",
        "AgentTurn",
        "AgentToolCall",
        "AgentHandoff",
        "AgentUsage",
    } <= kinds
    expected = {t.agent_id: {t.task_name} for t in [*tasks, later]} | {outside: {"outside"}}
    assert names_by_agent(log) == expected
    of_agent_writes = [e for e in log if e.agent_id == tasks[1].agent_id]
    assert [e.message for e in of_agent_writes if isinstance(e, events.TaskProgress)] == [
        "queued by an async handler",
        "recorded",
        "queued again",
    ]


async def test_pipeline_events_carry_their_names(pipeline_pool: ax.Pool) -> None:
    run = await pipeline.enqueue(context=InputContext(company="Names"))
    try:
        await ax.get_result(run, timeout=scaled(60))
    finally:
        runs_file(run.agent_id).unlink(missing_ok=True)
    log = await event_log()
    started = [e for e in log if isinstance(e, events.PipelineStepStarted)]
    assert len(started) == 3
    assert all(name and "" not in names for names in names_by_agent(log).values() for name in names)
    assert {e.task_name for e in log if e.agent_id == run.agent_id} == {"ResearchPipeline"}


async def test_a_lost_lease_discards_the_append_and_an_unknown_agent_is_refused(
    redis_conf: str,
) -> None:
    broker = Broker()
    consumer = broker.consumer("q", "w:0")
    await consumer.ensure_groups()
    queued = events.TaskQueued(agent_id=uuid4(), task_name="fenced", queue="q")
    await broker.enqueue(queued)
    [entry] = await consumer.read(10)
    lost = TaskLease(entry[0], entry[1], WORKERS_GROUP, "w:1")
    step = events.PipelineStepStarted(
        agent_id=queued.agent_id, task_name="fenced", step=0, steps=1, step_agent_id=uuid4()
    )
    assert await EventLog(broker).append(step, lost) == ""
    with pytest.raises(ax.UnknownActivityError, match="is not known"):
        await EventLog(broker).append(events.TaskProgress(agent_id=uuid4(), task_name=""))
    assert [type(e) for e in await event_log()] == [events.TaskQueued]
