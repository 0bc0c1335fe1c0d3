from __future__ import annotations

import uuid

import msgspec
import pytest

from agentexec import events
from agentexec.errors import EventDecodeError
from agentexec.events import Status, TaskCompleted, TaskProgress, TaskQueued


def test_round_trip_keeps_type_and_fields() -> None:
    queued = TaskQueued(
        agent_id=uuid.uuid4(),
        task_name="research",
        queue="q",
        priority=events.Priority.HIGH,
        context=msgspec.Raw(b'{"company":"Acme"}'),
        message="Waiting to start.",
    )
    decoded = events.decode(events.encode(queued))
    assert isinstance(decoded, TaskQueued)
    assert decoded.agent_id == queued.agent_id
    assert decoded.priority is events.Priority.HIGH
    assert msgspec.json.decode(decoded.context) == {"company": "Acme"}
    assert decoded.ts == queued.ts


def test_wire_format_is_readable_json_with_type_tag() -> None:
    event = TaskProgress(agent_id=uuid.uuid4(), task_name="t", message="half", percentage=50)
    data = msgspec.json.decode(events.encode(event))
    assert data["type"] == "task.progress"
    assert data["message"] == "half" and data["percentage"] == 50
    assert data["agent_id"] == str(event.agent_id)


def test_each_event_type_carries_its_status() -> None:
    aid = uuid.uuid4()
    assert TaskQueued(agent_id=aid, task_name="t").status is Status.QUEUED
    assert TaskCompleted(agent_id=aid, task_name="t").status is Status.COMPLETE
    assert Status.COMPLETE in events.TERMINAL and Status.RUNNING in events.ACTIVE


def test_status_compares_with_both_spellings() -> None:
    assert Status.COMPLETE == "COMPLETE"
    assert Status.COMPLETE in ("COMPLETE", "ERROR")
    assert Status.COMPLETE.value == "COMPLETE"
    assert Status.COMPLETE.wire == "complete"


@pytest.mark.parametrize(
    "data",
    [b"not json", b'{"type":"task.unknown","agent_id":"x"}', b'{"type":"task.queued"}', b"[]"],
)
def test_decode_rejects_malformed_events_with_a_clear_error(data: bytes) -> None:
    with pytest.raises(EventDecodeError, match="not a valid agentexec event"):
        events.decode(data)


def test_decode_entry_requires_the_event_field() -> None:
    with pytest.raises(EventDecodeError, match="no b'event' field"):
        events.decode_entry({b"other": b"1"})
