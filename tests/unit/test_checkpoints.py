"""What a run saves after each turn, and how a resumed run finds its place
(`agentexec.runners.checkpoints`), without Redis."""

from __future__ import annotations

import msgspec
from agents import Agent, handoff

from agentexec.runners.checkpoints import (
    SavedRun,
    decode_run,
    encode_run,
    find_agent,
    mismatch,
    run_name,
)


def test_a_run_is_named_by_its_agent_and_input_and_its_rank_among_equal_runs() -> None:
    seen: dict[str, int] = {}
    first = run_name("Researcher", "Begin", seen)
    assert run_name("Researcher", "Begin", seen) == first.replace(":1", ":2")
    assert run_name("Writer", "Begin", seen).endswith(":1")
    assert run_name("Researcher", [{"role": "user", "content": "Begin"}], seen).endswith(":1")
    # Another attempt of the same handler (a new runner) names its runs the same way.
    assert run_name("Researcher", "Begin", {}) == first


def test_the_saved_conversation_round_trips_and_an_unsavable_one_is_skipped() -> None:
    items = [{"role": "user", "content": "Begin"}, {"type": "function_call", "id": "x"}]
    data = encode_run("Researcher", 2, items)
    assert data is not None
    saved = decode_run(data)
    assert saved is not None and (saved.agent, saved.turn, saved.items) == ("Researcher", 2, items)
    assert encode_run("Researcher", 2, [{"content": object()}]) is None
    assert decode_run(b"not json") is None


def test_the_agent_holding_the_conversation_is_found_through_handoffs() -> None:
    writer = Agent(name="Writer")
    editor = Agent(name="Editor")
    reviewer = Agent(name="Reviewer", handoffs=[handoff(editor)])
    triage = Agent(name="Triage", handoffs=[writer, handoff(reviewer)])
    assert find_agent(triage, "Triage") is triage
    assert find_agent(triage, "Writer") is writer
    assert find_agent(triage, "Editor") is editor
    assert find_agent(triage, "Nobody") is None


def test_a_session_run_saves_the_session_length_instead_of_its_items() -> None:
    data = encode_run("Researcher", 2, [], session=5)
    assert data is not None
    assert msgspec.json.decode(data) == {
        "agent": "Researcher",
        "turn": 2,
        "items": [],
        "session": 5,
    }
    assert decode_run(data) == SavedRun(agent="Researcher", turn=2, items=[], session=5)
    # Turn 0 is the session's length before the run: a takeover in turn 1 rewinds to it.
    start = encode_run("Researcher", 0, [], session=0)
    assert start is not None and decode_run(start) == SavedRun("Researcher", 0, [], 0)


def test_a_checkpoint_saved_before_sessions_were_resumable_reads_as_one_without() -> None:
    old = b'{"agent":"Researcher","turn":2,"items":[{"role":"user","content":"Begin"}]}'
    saved = decode_run(old)
    assert saved is not None and saved.session is None
    assert saved.items == [{"role": "user", "content": "Begin"}]
    assert decode_run(b'{"agent":"Researcher","turn":"two","items":[]}') is None


def test_a_checkpoint_resumes_only_a_run_it_fits() -> None:
    agent = Agent(name="Researcher")
    plain = SavedRun("Researcher", 2, [{"role": "user", "content": "Begin"}])
    in_session = SavedRun("Researcher", 2, [], session=5)
    assert mismatch(None, None, 10, None) == ""
    assert mismatch(plain, agent, 10, None) == ""
    assert mismatch(in_session, agent, 10, 5) == ""
    assert mismatch(in_session, agent, 10, 7) == ""  # 2 items to remove
    assert mismatch(SavedRun("Researcher", 0, [], session=3), agent, 10, 4) == ""
    assert "no agent named 'Researcher'" in mismatch(plain, None, 10, None)
    assert mismatch(plain, agent, 10, 5) == "saved without a session"
    assert mismatch(in_session, agent, 10, None) == "saved with a session"
    assert mismatch(SavedRun("Researcher", 0, []), agent, 10, None) != ""
    assert "max_turns 2" in mismatch(plain, agent, 2, None)
    assert "holds 4 item(s), fewer than the 5" in mismatch(in_session, agent, 10, 4)


async def test_any_sdk_session_is_counted_and_rewound_to_a_checkpoint() -> None:
    # AgentSession counts in Redis (tests/integration/test_agent_session_resume.py); another
    # SDK session is counted by its items.
    from agents import SQLiteSession

    from agentexec.runners.openai import _rewind, _session_length

    session = SQLiteSession("chat")
    await session.add_items([{"role": "user", "content": f"message {n}"} for n in range(5)])
    assert await _session_length(session) == 5
    assert await _rewind(session, 5, 3) == 2
    assert [i["content"] for i in await session.get_items()] == [
        "message 0",
        "message 1",
        "message 2",
    ]
    assert await _rewind(session, 3, 3) == 0
    assert await _rewind(session, 5, 0) == 3  # the session holds fewer than said: stops empty
    assert await _session_length(session) == 0
