"""Coalescing of a streamed run's deltas (`agentexec.runners.streaming.Deltas`), without Redis:
the recorder is replaced by a list."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest

import agentexec as ax
from agentexec.runners.streaming import Deltas


class Recorded:
    def __init__(self) -> None:
        self.deltas: list[dict[str, Any]] = []

    async def delta(self, kind: str, agent: str = "", **fields: Any) -> None:
        self.deltas.append({"kind": kind, "agent": agent, **fields})


def text(delta: str) -> Any:
    data = SimpleNamespace(type="response.output_text.delta", delta=delta)
    return SimpleNamespace(type="raw_response_event", data=data)


def raw(kind: str) -> Any:
    return SimpleNamespace(type="raw_response_event", data=SimpleNamespace(type=kind))


def tool_called(name: str) -> Any:
    item = SimpleNamespace(raw_item=SimpleNamespace(name=name, arguments='{"secret": "x"}'))
    return SimpleNamespace(type="run_item_stream_event", name="tool_called", item=item)


async def test_text_is_coalesced_by_size_and_flushed_at_boundaries() -> None:
    recorder = Recorded()
    deltas = Deltas(recorder, interval=3600, chars=10)  # type: ignore[arg-type]
    agent = SimpleNamespace(name="Writer")
    await deltas.see(SimpleNamespace(type="agent_updated_stream_event", new_agent=agent), 0)
    for word in ["ab ", "cd ", "ef ", "gh ", "ij ", "kl"]:
        await deltas.see(text(word), 1)
    await deltas.see(raw("response.output_text.done"), 1)
    await deltas.see(raw("response.completed"), 1)  # nothing waits: no event
    await deltas.see(tool_called("search"), 1)
    assert recorder.deltas == [
        {"kind": "start", "agent": "Writer", "turn": 1},
        {"kind": "text", "agent": "Writer", "turn": 1, "text": "ab "},  # the first at once
        {"kind": "text", "agent": "Writer", "turn": 1, "text": "cd ef gh ij "},  # 10 chars
        {"kind": "text", "agent": "Writer", "turn": 1, "text": "kl"},  # the text part ended
        # The tool's name, never its arguments.
        {"kind": "item", "agent": "Writer", "turn": 1, "item": "tool_called", "text": "search"},
    ]


async def test_text_is_coalesced_by_time() -> None:
    recorder = Recorded()
    deltas = Deltas(recorder, interval=0, chars=10_000)  # type: ignore[arg-type]
    for word in ["a", "b", "c"]:
        await deltas.see(text(word), 2)
    assert [d["text"] for d in recorder.deltas] == ["a", "b", "c"]
    await deltas.flush()
    assert len(recorder.deltas) == 3


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"stream_interval": -1}, "stream_interval=-1"),
        ({"stream_chars": 0}, "stream_chars=0"),
        ({"stream_chars": True}, "stream_chars=True"),
    ],
)
def test_bad_delta_limits_are_refused_when_the_runner_is_made(
    options: dict[str, Any], match: str
) -> None:
    with pytest.raises(ax.ConfigurationError, match=match):
        ax.OpenAIRunner(uuid.uuid4(), **options)


def test_agent_stream_refuses_what_it_cannot_use() -> None:
    with pytest.raises(ax.ConfigurationError, match="not a UUID"):
        ax.AgentStream("nope")
    with pytest.raises(ax.ConfigurationError, match="event_callback"):
        ax.AgentStream(uuid.uuid4(), event_callback="print")  # type: ignore[arg-type]
