"""Checkpoints of agent runs: what a runner saves after each completed turn, so that a worker
taking a task over resumes its run instead of starting it again (see docs/runner.md).

A run is named by a fingerprint of its starting agent's name and its input, and by how many
runs of the same agent and input the runner started before it: the same handler, run again
by another worker, names its runs the same way. What is saved is the conversation the model
was given for the next turn (the run's input and every item of the completed turns: messages,
tool calls and their outputs), the agent that holds the conversation, and the number of
completed turns. Does not import the Agents SDK.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import msgspec

logger = logging.getLogger(__name__)

__all__ = ["RESUMABLE_WITHOUT", "SavedRun", "decode_run", "encode_run", "find_agent", "run_name"]

RESUMABLE_WITHOUT = (
    "session",
    "previous_response_id",
    "conversation_id",
    "auto_previous_response_id",
)
"""Run options that keep the conversation elsewhere (an SDK session, the model provider's
server): a run given one is not checkpointed, and starts over when taken over."""


class SavedRun(msgspec.Struct, frozen=True):
    """A run's state after its completed turn `turn`."""

    agent: str
    """The name of the agent that takes the next turn (after a handoff, not the first)."""
    turn: int
    items: list[Any]
    """The model input of the next turn."""


def run_name(agent_name: str, input: Any, seen: dict[str, int]) -> str:
    """The name of a run of `agent_name` on `input`; `seen` counts the names given so far by
    one runner, so a second identical run gets its own."""
    data = json.dumps([agent_name, input], sort_keys=True, default=str).encode()
    digest = hashlib.sha256(data).hexdigest()[:16]
    seen[digest] = seen.get(digest, 0) + 1
    return f"{digest}:{seen[digest]}"


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json", exclude_unset=True)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode_run(agent: str, turn: int, items: list[Any]) -> bytes | None:
    """The saved form of a run's state; None (with a warning) when an item cannot be saved."""
    try:
        plain = json.loads(json.dumps(items, default=_jsonable))
    except (TypeError, ValueError) as e:
        logger.warning(
            "turn %d of %s not checkpointed: an input item cannot be saved (%s)", turn, agent, e
        )
        return None
    return msgspec.json.encode(SavedRun(agent=agent, turn=turn, items=plain))


def decode_run(data: bytes) -> SavedRun | None:
    """The run state saved as `data`; None (with a warning) when it is not one."""
    try:
        return msgspec.json.decode(data, type=SavedRun)
    except msgspec.DecodeError as e:
        logger.warning("a saved checkpoint cannot be read (%s); the run starts over", e)
        return None


def _reachable(agent: Any) -> Iterator[Any]:
    """`agent` and every agent it can hand off to, directly or not."""
    seen: set[int] = set()
    stack = [agent]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for handoff in getattr(current, "handoffs", None) or ():
            if hasattr(handoff, "handoffs"):
                stack.append(handoff)
            else:
                ref = getattr(handoff, "_agent_ref", None)
                stack.append(ref() if callable(ref) else None)


def find_agent(start: Any, name: str) -> Any | None:
    """The agent named `name` among `start` and the agents it can hand off to, or None."""
    return next((a for a in _reachable(start) if getattr(a, "name", None) == name), None)
