"""`ax.AgentSession` without Redis: the SDK's Session protocol, the lazy import, the session
events' encoding and the refusals made before anything is stored."""

from __future__ import annotations

import subprocess
import sys
import uuid

import msgspec
import pytest

import agentexec as ax
from agentexec import events
from agentexec.sessions import AgentSession, session_agent_id


def test_it_is_an_agents_sdk_session() -> None:
    from agents.memory import Session

    session = ax.AgentSession("user-123", max_items=50)
    assert isinstance(session, Session)
    assert session.session_id == "user-123" and session.session_settings is None
    assert session.agent_id == session_agent_id("user-123") != session_agent_id("user-124")


def test_import_agentexec_does_not_import_the_agents_sdk() -> None:
    code = "import sys, agentexec as ax; ax.AgentSession; print('agents' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_session_events_round_trip_as_json() -> None:
    key = uuid.uuid4()
    event = events.SessionItemsAdded(
        agent_id=key,
        task_name="",
        session_id="s",
        version=3,
        index=2,
        items=[msgspec.Raw(b'{"role":"user","content":"hi"}')],
        by=uuid.uuid4(),
    )
    data = events.encode(event)
    assert b'"type":"session.items_added"' in data and b'"content":"hi"' in data
    back = events.decode(data)
    assert isinstance(back, events.SessionItemsAdded)
    assert (back.session_id, back.version, back.index, back.by) == ("s", 3, 2, event.by)
    assert [bytes(i) for i in back.items] == [b'{"role":"user","content":"hi"}']
    assert type(back).status is None  # no activity status: a session is not a task


async def test_items_that_cannot_be_stored_are_refused_before_any_write() -> None:
    ax.CONF.redis_url = "redis://127.0.0.1:1/0"  # nothing listens: a write would fail
    ax.CONF.enqueue_timeout = 0.1
    session = AgentSession("s", max_item_bytes=100)
    with pytest.raises(ax.SessionItemError, match="above max_item_bytes=100"):
        await session.add_items([{"content": "x" * 200}])
    with pytest.raises(ax.SessionItemError, match="item 1 \\(object\\) cannot be stored"):
        await session.add_items([{}, object()])
    with pytest.raises(ValueError, match="max_items=-1"):
        AgentSession("s", max_items=-1)
    with pytest.raises(ax.InvalidNameError, match="session id"):
        AgentSession("x" * 256)
