"""Feed frames: the JSON of every event type, and positions."""

from __future__ import annotations

import json
import uuid

import msgspec
import pytest

from agentexec.api.cursors import Cursor
from agentexec.api.messages import Delivery, reset_frame
from agentexec.events import AgentToolCall, TaskCompleted, TaskQueued
from agentexec.positions import ORIGIN, Position


def parse(frame: bytes) -> dict[str, str]:
    lines = frame.decode().strip().split("\r\n")
    return dict(line.split(": ", 1) for line in lines)


def test_context_and_result_stay_out_of_the_feed() -> None:
    agent = uuid.uuid4()
    queued = TaskQueued(agent_id=agent, task_name="t", context=msgspec.Raw(b'{"secret":1}'))
    done = TaskCompleted(agent_id=agent, task_name="t", percentage=100, result=msgspec.Raw(b"2"))
    for event in (queued, done):
        frame = parse(Delivery(Position(5, 1), event).frame)
        data = json.loads(frame["data"])
        assert frame["id"] == data["id"] == "5-1"
        assert frame["event"] == data["type"]
        assert "context" not in data and "result" not in data
        assert {"agent_id", "task_name", "ts", "status", "message", "percentage"} <= set(data)


def test_agent_events_have_no_status() -> None:
    event = AgentToolCall(agent_id=uuid.uuid4(), task_name="t", tool="search", arguments="q")
    data = json.loads(parse(Delivery(Position(1, 0), event).frame)["data"])
    assert (data["type"], data["status"], data["tool"]) == ("agent.tool_call", None, "search")


def test_reset_frame_points_past_the_gap() -> None:
    frame = parse(reset_frame(Position(1, 0), Position(9, 3), "gone"))
    assert (frame["event"], frame["id"]) == ("reset", "9-3")
    assert json.loads(frame["data"])["last_event_id"] == "1-0"


@pytest.mark.parametrize(
    ("text", "position"), [("0", ORIGIN), ("17", Position(17, 0)), ("17-3", Position(17, 3))]
)
def test_positions_parse(text: str, position: Position) -> None:
    assert Position.parse(text) == position


@pytest.mark.parametrize("text", ["", "x", "1-", "-1", "1-2-3", " 1 2", "9" * 30, "1.5"])
def test_bad_positions_are_refused_with_the_value(text: str) -> None:
    with pytest.raises(ValueError, match="is not an event id"):
        Position.parse(text)


def test_position_neighbours() -> None:
    assert Position(5, 0).before() < Position(5, 0) < Position(5, 0).after()
    assert Position(5, 1).before() == Position(5, 0)
    assert ORIGIN.before() == ORIGIN
    assert str(Position(5, 0).before().after()) == "5-0"


def test_a_feed_behind_sends_its_batch_in_bounded_chunks() -> None:
    from agentexec.api.feeds import CHUNK, _Feed
    from agentexec.events import TaskProgress

    agent = uuid.uuid4()
    batch = [
        Delivery(Position(10, i), TaskProgress(agent_id=agent, task_name="t", message="x" * 2000))
        for i in range(1000)
    ]
    feed = _Feed(None, Cursor.origin(1), None, None)  # type: ignore[arg-type]
    chunks = list(feed.live(batch))
    assert len(chunks) > 1
    assert max(len(c) for c in chunks) <= CHUNK
    assert b"".join(chunks) == b"".join(d.frame for d in batch)
    assert (feed.sent, feed.cursor) == (1000, Cursor((Position(10, 999),)))
