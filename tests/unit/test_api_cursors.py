"""The global feed's cursor (one position per partition): its text form, both ways, and the
errors that name a bad id and its fix."""

from __future__ import annotations

import uuid

import pytest

from agentexec.api.cursors import Cursor
from agentexec.api.feeds import _Feed
from agentexec.api.messages import Delivery
from agentexec.events import TaskProgress
from agentexec.positions import ORIGIN, Position


@pytest.mark.parametrize(
    ("cursor", "text"),
    [
        (Cursor((Position(17, 3),)), "17-3"),  # one partition: the stream id, as always
        (Cursor((ORIGIN,)), "0-0"),
        (
            Cursor((Position(1733500000000, 3), ORIGIN, Position(1733500000012, 0))),
            "1733500000000-3_0_1733500000012",
        ),
        (Cursor.origin(3), "0_0_0"),
    ],
)
def test_cursors_are_written_and_read_back(cursor: Cursor, text: str) -> None:
    assert str(cursor) == text
    assert Cursor.parse(text, len(cursor)) == cursor
    assert Cursor.parse(text) == cursor


def test_zero_is_the_beginning_of_every_partition() -> None:
    assert Cursor.parse("0", 3) == Cursor.parse("0-0", 3) == Cursor.origin(3)
    assert Cursor.parse("0") == Cursor.origin(1)


@pytest.mark.parametrize("text", ["", "x", "1-2-3", "1__2", "1_x_3", "_", "9" * 30 + "_1"])
def test_malformed_cursors_are_refused_naming_the_value(text: str) -> None:
    with pytest.raises(ValueError, match="is not an event id; use the `id:`") as e:
        Cursor.parse(text)
    assert repr(text[:200]) in str(e.value)


@pytest.mark.parametrize(("text", "count"), [("17-3", 3), ("1_2", 3), ("1_2_3_4", 3), ("1_2", 1)])
def test_cursors_of_another_partition_count_are_refused(text: str, count: int) -> None:
    with pytest.raises(ValueError, match=f"this log has {count} partitions") as e:
        Cursor.parse(text, count)
    assert repr(text) in str(e.value)


def test_the_global_feed_ids_its_frames_by_its_cursor() -> None:
    agent = uuid.uuid4()
    batch = [
        Delivery(Position(10, 0), TaskProgress(agent_id=agent, task_name="t"), partition=2),
        Delivery(Position(11, 0), TaskProgress(agent_id=agent, task_name="t"), partition=0),
        Delivery(Position(9, 0), TaskProgress(agent_id=agent, task_name="t"), partition=1),
        Delivery(Position(5, 0), TaskProgress(agent_id=agent, task_name="t"), partition=1),
    ]
    feed = _Feed(None, Cursor((ORIGIN, Position(5, 0), ORIGIN)), None, None)  # type: ignore[arg-type]
    frames = b"".join(feed.live(batch)).split(b"\r\n\r\n")[:-1]
    assert [f.split(b"\r\n")[0] for f in frames] == [b"id: 0_5_10", b"id: 11_5_10", b"id: 11_9_10"]
    # The rest of a frame is the event's, as the feed of one partition sends it.
    assert frames[0].split(b"\r\n", 1)[1] == batch[0].frame.split(b"\r\n", 1)[1].rstrip(b"\r\n")
    assert feed.cursor == Cursor((Position(11, 0), Position(9, 0), Position(10, 0)))
