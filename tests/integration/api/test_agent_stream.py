"""A streamed agent run's text on the SSE feeds, live, coalesced, and resumable without gaps:
a real pool runs the run (tests/apps/streaming.py) against a real Redis, a real uvicorn serves
the feeds."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

import agentexec as ax
from tests.apps import streaming
from tests.support.sse import Message, open_stream
from tests.support.waiting import scaled


@pytest.fixture
def streaming_pool(redis_conf: str) -> Iterator[ax.Pool]:
    streaming.pool.start()
    try:
        yield streaming.pool
    finally:
        streaming.pool.shutdown()


def text_of(messages: list[Message]) -> str:
    return "".join(
        m.json.get("text", "")
        for m in messages
        if m.event == "agent.delta" and m.json.get("kind", "text") == "text"
    )


async def test_a_streamed_runs_text_reaches_the_feed_live_and_coalesced(
    streaming_pool: ax.Pool, db: Engine, serve: Any, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    server = await serve(db)
    seen = tmp_path / "seen"
    task = await ax.enqueue("stream_story", streaming.Story(seen=str(seen)), queue_name="streaming")
    url = f"{server.url}/api/activities/{task.agent_id}/events"
    async with open_stream(http, url) as feed:
        # The run waits in its tool until the opening sentence was read here: the text came
        # while the run was going, not at its end.
        before = await feed.until(lambda m: text_of([m]).endswith("first."), timeout=30)
        assert streaming.OPENING in text_of(before)
        assert not any(m.event == "task.completed" for m in before)
        seen.touch()
        after = await feed.rest(timeout=30)
    messages = before + after
    assert after[-1].event == "task.completed"
    assert await ax.get_result(task, timeout=scaled(10)) == streaming.ANSWER

    deltas = [m.json for m in messages if m.event == "agent.delta"]
    kinds = [d.get("kind", "text") for d in deltas]  # "text", the default, is left out
    assert [k for k in kinds if k != "text"] == [
        "start",  # emit_agent_start (the seed's StreamingHelper)
        "start",  # the run's agent starts
        "item",  # the tool call
        "item",  # its output
        "answer",  # emit_answer
    ]
    assert deltas[0] == {**deltas[0], "agent": "Storyteller", "turn": 1}
    tool = next(d for d in deltas if d.get("kind") == "item")
    assert (tool["item"], tool["text"]) == ("tool_called", "wait_for_reader")
    assert deltas[-1]["text"] == streaming.ANSWER and deltas[-1]["sources"] == ["the script"]
    assert text_of(messages) == streaming.OPENING + streaming.ANSWER
    # 301 words of the answer came as 301 deltas from the model; the feed got a few events.
    answer_events = [d for d in deltas if "kind" not in d and d.get("turn") == 2 and d.get("text")]
    assert len(answer_events) <= len(streaming.ANSWER) // streaming.STREAM_CHARS + 2
    assert all(len(d["text"]) < streaming.STREAM_CHARS + 20 for d in answer_events)


async def test_a_client_that_reconnects_gets_the_rest_of_the_text_without_gaps(
    streaming_pool: ax.Pool, db: Engine, serve: Any, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    server = await serve(db)
    seen = tmp_path / "seen"
    seen.touch()  # the run does not wait
    task = await ax.enqueue("stream_story", streaming.Story(seen=str(seen)), queue_name="streaming")
    assert await ax.get_result(task, timeout=scaled(30)) == streaming.ANSWER
    url = f"{server.url}/api/activities/{task.agent_id}/events"
    async with open_stream(http, url) as feed:
        everything = await feed.rest()
    texts = [m for m in everything if m.event == "agent.delta" and "kind" not in m.json]
    assert len(texts) >= 3
    cut = texts[1].id
    assert cut is not None
    async with open_stream(http, url) as feed:
        first = await feed.until(lambda m: m.id == cut)
    async with open_stream(http, url, {"Last-Event-ID": cut}) as feed:
        rest = await feed.rest()
    assert [m.id for m in first + rest] == [m.id for m in everything]
    assert text_of(first) + text_of(rest) == streaming.OPENING + streaming.ANSWER


async def test_agent_stream_outside_a_task_appends_and_calls_back(
    db: Engine, serve: Any, http: httpx.AsyncClient
) -> None:
    server = await serve(db)
    agent = ax.activity.create("research", "queued")
    got: list[dict[str, Any]] = []
    stream = ax.AgentStream(agent, event_callback=got.append)
    async with open_stream(http, f"{server.url}/api/activities/{agent}/events") as feed:
        stream.emit_agent_start("analyzer", iteration=2)
        stream.emit_answer("The weather is sunny!", sources=[])
        stream.emit_error("Something went wrong")
        messages = await feed.take(4)
    assert [m.event for m in messages] == ["task.queued"] + ["agent.delta"] * 3
    assert [(m.json["kind"], m.json.get("text")) for m in messages[1:]] == [
        ("start", None),
        ("answer", "The weather is sunny!"),
        ("error", "Something went wrong"),
    ]
    assert messages[1].json["agent"] == "analyzer" and messages[1].json["turn"] == 2
    assert [g["kind"] for g in got] == ["start", "answer", "error"]
    with pytest.raises(ax.UnknownActivityError):
        ax.AgentStream(uuid.uuid4()).emit_error("nobody listens")
