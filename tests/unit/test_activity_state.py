"""The activity fold: the rules the projection and the monitor share, on plain values."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from agentexec.activity.state import Attempt, AttemptOutcome, evolve
from agentexec.eventlog import Recorded
from agentexec.events import (
    AgentToolCall,
    Ending,
    Event,
    Status,
    TaskCanceled,
    TaskCancelRequested,
    TaskCompleted,
    TaskFailed,
    TaskProgress,
    TaskQueued,
    TaskRetried,
    TaskStarted,
    TrackerIncremented,
)
from agentexec.positions import ORIGIN, Position
from agentexec.results import Outcome

AGENT = uuid.uuid4()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seq: int, event: Event) -> Recorded:
    return Recorded(Position(1000, seq), event)


def fold(*events: Event) -> Any:
    state = None
    for seq, event in enumerate(events):
        state = evolve(state, at(seq, event))
    return state


def test_a_task_lifecycle() -> None:
    state = fold(
        TaskQueued(agent_id=AGENT, task_name="t", queue="q", ts=T0),
        TaskStarted(agent_id=AGENT, task_name="t", ts=T0 + timedelta(seconds=1)),
        TaskProgress(agent_id=AGENT, task_name="t", message="half", percentage=50),
        TaskFailed(agent_id=AGENT, task_name="t", error="boom", ts=T0 + timedelta(seconds=3)),
    )
    assert state is not None
    assert (state.status, state.attempts, state.error, state.percentage, state.queue) == (
        Status.ERROR,
        1,
        "boom",
        50,
        "q",
    )
    assert state.created_at == T0.replace(tzinfo=None)
    assert state.last_event_id == "1000-3"


def test_terminal_statuses_are_final_and_the_same_state_comes_back() -> None:
    done = fold(
        TaskQueued(agent_id=AGENT, task_name="t"), TaskCompleted(agent_id=AGENT, task_name="t")
    )
    assert evolve(done, at(9, TaskProgress(agent_id=AGENT, task_name="t", message="late"))) is done


def test_events_without_a_status_create_nothing() -> None:
    assert fold(TaskCancelRequested(agent_id=AGENT, task_name="")) is None
    assert (
        fold(TrackerIncremented(agent_id=AGENT, task_name="x", tracker="x", batch_id="b")) is None
    )
    assert fold(AgentToolCall(agent_id=AGENT, task_name="t", tool="s", message="m")) is None


def test_agent_events_set_the_message_of_a_running_task_only() -> None:
    queued = TaskQueued(agent_id=AGENT, task_name="t", message="waiting")
    call = AgentToolCall(agent_id=AGENT, task_name="t", tool="s", message="called s")
    assert fold(queued, call).message == "waiting"
    started = TaskStarted(agent_id=AGENT, task_name="t")
    assert fold(queued, started, call).message == "called s"


def test_an_event_without_a_task_name_keeps_the_name_learnt() -> None:
    state = fold(
        TaskQueued(agent_id=AGENT, task_name="t"),
        TaskProgress(agent_id=AGENT, task_name="", message="from outside the handler"),
    )
    assert state.task_name == "t"
    named = fold(
        TaskQueued(agent_id=AGENT, task_name=""), TaskStarted(agent_id=AGENT, task_name="t")
    )
    assert named.task_name == "t"


def test_recorded_events_name_and_position() -> None:
    recorded = Recorded.from_entry(
        b"5-1",
        {
            b"event": b'{"type":"task.progress","agent_id":"%s","task_name":""}'
            % str(AGENT).encode()
        },
    )
    assert (recorded.position, recorded.event_id, recorded.type) == (
        Position(5, 1),
        "5-1",
        "task.progress",
    )
    assert recorded.task_name == ""  # recorded by an older version: still read
    assert ORIGIN < recorded.position and recorded.position.before().after() == recorded.position


def test_outcomes_are_typed_whichever_way_they_are_given() -> None:
    assert Outcome("complete", "t").status is Ending.COMPLETE
    assert Outcome(Ending.ERROR, "t").status == "error"
    assert Ending.CANCELED.status is Status.CANCELED


def seconds(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


def naive(n: float) -> datetime:
    return seconds(n).replace(tzinfo=None)


def test_timing_of_a_retried_task() -> None:
    state = fold(
        TaskQueued(agent_id=AGENT, task_name="t", queue="q", ts=seconds(0)),
        TaskStarted(agent_id=AGENT, task_name="t", ts=seconds(0.25), worker="w-1"),
        TaskRetried(agent_id=AGENT, task_name="t", ts=seconds(1), error="E: one", delay=2.0),
        TaskStarted(agent_id=AGENT, task_name="t", ts=seconds(3.5), worker="w-2", attempt=2),
        TaskCompleted(agent_id=AGENT, task_name="t", ts=seconds(4), attempt=2),
    )
    assert (state.queued_at, state.started_at, state.finished_at) == (
        naive(0),
        naive(3.5),
        naive(4),
    )
    assert (state.attempts, state.retries, state.worker, state.error) == (2, 1, "w-2", None)
    assert state.queue_wait_seconds == 0.25 + 0.5
    assert state.run_seconds == 0.75 + 0.5
    first, second = state.attempt_history
    assert first == Attempt(
        attempt=1,
        worker="w-1",
        due_at=naive(0),
        started_at=naive(0.25),
        queue_wait_seconds=0.25,
        finished_at=naive(1),
        run_seconds=0.75,
        outcome=AttemptOutcome.RETRIED,
        error="E: one",
    )
    assert (second.due_at, second.queue_wait_seconds, second.run_seconds) == (naive(3), 0.5, 0.5)
    assert second.outcome is AttemptOutcome.COMPLETE


def test_a_delayed_task_waits_from_when_it_is_due() -> None:
    state = fold(
        TaskQueued(agent_id=AGENT, task_name="t", queue="q", ts=seconds(0), not_before=seconds(10)),
        TaskStarted(agent_id=AGENT, task_name="t", ts=seconds(10.5)),
    )
    assert (state.queued_at, state.due_at, state.queue_wait_seconds) == (naive(0), naive(10), 0.5)
    assert state.run_seconds is None
    assert state.current.outcome is None


def test_a_redelivered_attempt_marks_the_first_lost() -> None:
    state = fold(
        TaskQueued(agent_id=AGENT, task_name="t", queue="q", ts=seconds(0)),
        TaskStarted(agent_id=AGENT, task_name="t", ts=seconds(1), worker="a"),
        TaskStarted(agent_id=AGENT, task_name="t", ts=seconds(20), worker="b", attempt=2),
        TaskFailed(agent_id=AGENT, task_name="t", ts=seconds(21), error="E: no", attempt=2),
    )
    lost, last = state.attempt_history
    assert (lost.outcome, lost.finished_at, lost.run_seconds) == (AttemptOutcome.LOST, None, None)
    assert (last.due_at, last.queue_wait_seconds, last.run_seconds) == (None, None, 1.0)
    assert (last.outcome, last.error, state.error) == (AttemptOutcome.ERROR, "E: no", "E: no")
    assert (state.queue_wait_seconds, state.run_seconds, state.retries) == (1.0, 1.0, 0)


def test_a_task_ended_before_it_started_has_no_attempt() -> None:
    state = fold(
        TaskQueued(agent_id=AGENT, task_name="t", queue="q", ts=seconds(0)),
        TaskCanceled(agent_id=AGENT, task_name="t", ts=seconds(1)),
    )
    assert (state.attempts, state.attempt_history, state.run_seconds) == (0, (), None)
    assert state.finished_at == naive(1)


def test_waits_are_never_negative_across_skewed_clocks() -> None:
    state = fold(
        TaskQueued(agent_id=AGENT, task_name="t", queue="q", ts=seconds(1)),
        TaskStarted(agent_id=AGENT, task_name="t", ts=seconds(0.9)),
    )
    assert state.queue_wait_seconds == 0.0
