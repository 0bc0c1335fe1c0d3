"""What a run saves after each turn, and how a resumed run finds its place
(`agentexec.runners.checkpoints`), without Redis."""

from __future__ import annotations

from agents import Agent, handoff

from agentexec.runners.checkpoints import decode_run, encode_run, find_agent, run_name


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
