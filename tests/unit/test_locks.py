"""The pure part of task locks: lock-key templates checked where a task is declared, keys
formatted at enqueue, and the locks one task takes."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from agentexec.errors import ContextError, TaskDefinitionError
from agentexec.locks import Lock, capacity_of, check_template, format_key, locks_of


class Order(BaseModel):
    customer_id: int
    region: str = "eu"


def test_templates_name_fields_of_the_context() -> None:
    assert (
        check_template("{region}-{customer_id:05d}", Order, "here") == "{region}-{customer_id:05d}"
    )
    with pytest.raises(TaskDefinitionError, match=r"names field 'customer'.*customer_id, region"):
        check_template("{customer.id}", Order, "here")
    with pytest.raises(TaskDefinitionError, match="not a format template"):
        check_template("{customer_id", Order, "here")
    with pytest.raises(TaskDefinitionError, match="positional field"):
        check_template("{}", Order, "here")


def test_keys_format_with_the_context_and_are_bounded() -> None:
    assert format_key("{region}-{customer_id:05d}", Order(customer_id=42), "t") == "eu-00042"
    with pytest.raises(ContextError, match="formats to the empty key"):
        format_key("{region}", Order(customer_id=1, region=""), "t")
    with pytest.raises(ContextError, match="200-character limit"):
        format_key("{region}", Order(customer_id=1, region="x" * 201), "t")


def test_the_locks_of_a_task() -> None:
    order = Order(customer_id=7)
    assert locks_of("c{customer_id}", order, "t", "acme", 3) == [
        Lock("key:c7", 1),
        Lock("tenant:acme", 3),
    ]
    assert locks_of(None, order, "t", "acme", 0) == []
    assert locks_of(None, order, "t", None, 3) == []
    assert capacity_of("tenant:acme", 3) == 3 and capacity_of("key:c7", 3) == 1
    assert "tenant 'acme' already runs 3 task(s)" in Lock("tenant:acme", 3).waiting_message
    assert "lock key 'c7'" in Lock("key:c7", 1).waiting_message


def test_a_parked_task_stays_queued_with_the_reason_as_its_message() -> None:
    from uuid import uuid4

    from agentexec.activity.state import evolve
    from agentexec.eventlog import Recorded
    from agentexec.events import Status, TaskQueued, TaskWaiting
    from agentexec.positions import Position

    aid = uuid4()
    lock = Lock("key:c7", 1)
    state = evolve(None, Recorded(Position(1000, 1), TaskQueued(agent_id=aid, task_name="t")))
    waiting = TaskWaiting(agent_id=aid, task_name="t", message=lock.waiting_message, lock=lock.name)
    after = evolve(state, Recorded(Position(1000, 2), waiting))
    assert after is not None and after.status is Status.QUEUED
    assert after.message == lock.waiting_message and after.attempts == 0
