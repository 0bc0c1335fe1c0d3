"""Checkpoints of agent runs: what a runner saves after each completed turn, so that a worker
taking a task over resumes its run instead of starting it again (see docs/runner.md).

A run is named by a fingerprint of its starting agent's name and its input, and by how many
runs of the same agent and input the runner started before it: the same handler, run again
by another worker, names its runs the same way. What is saved is the conversation the model
was given for the next turn (the run's input and every item of the completed turns: messages,
tool calls and their outputs), the agent that holds the conversation, and the number of
completed turns. A run given an SDK session saves no items (the session holds them) but the
number of items the session held: a run taken over removes the ones added after it, so the
session holds each item once. Does not import the Agents SDK.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import msgspec

logger = logging.getLogger(__name__)

__all__ = [
    "RESUMABLE_WITHOUT",
    "SavedRun",
    "decode_run",
    "encode_run",
    "find_agent",
    "mismatch",
    "run_name",
]

RESUMABLE_WITHOUT = (
    "previous_response_id",
    "conversation_id",
    "auto_previous_response_id",
)
"""Run options that keep the conversation on the model provider's server, which a checkpoint
cannot rewind: a run given one is not checkpointed, and starts over when taken over."""


class SavedRun(msgspec.Struct, frozen=True):
    """A run's state after its completed turn `turn`."""

    agent: str
    """The name of the agent that takes the next turn (after a handoff, not the first)."""
    turn: int
    items: list[Any]
    """The model input of the next turn; empty for a run with a session."""
    session: int | None = None
    """How many items the run's SDK session held after turn `turn` (before the run, for turn
    0); None for a run without a session."""


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


def encode_run(agent: str, turn: int, items: list[Any], session: int | None = None) -> bytes | None:
    """The saved form of a run's state (`session`: see `SavedRun.session`); None (with a
    warning) when an item cannot be saved."""
    try:
        plain = json.loads(json.dumps(items, default=_jsonable))
    except (TypeError, ValueError) as e:
        logger.warning(
            "turn %d of %s not checkpointed: an input item cannot be saved (%s)", turn, agent, e
        )
        return None
    return msgspec.json.encode(SavedRun(agent=agent, turn=turn, items=plain, session=session))


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


def mismatch(saved: SavedRun | None, current: Any, max_turns: int, length: int | None) -> str:
    """Why checkpoint `saved` cannot resume this run ("" when it can, or when there is none):
    `current` is the agent it names, `length` the run's session's length (None without one)."""
    if saved is None:
        return ""
    if current is None:
        return f"no agent named {saved.agent!r} among the starting agent and its handoffs"
    if (saved.session is None) != (length is None):
        return "saved with a session" if length is None else "saved without a session"
    if not (0 if length is not None else 1) <= saved.turn < max_turns:
        return f"saved after turn {saved.turn}, with max_turns {max_turns}"
    if length is not None and saved.session is not None and length < saved.session:
        return f"the session holds {length} item(s), fewer than the {saved.session} saved"
    return ""
