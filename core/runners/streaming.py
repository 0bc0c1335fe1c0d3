"""What a streamed run produces, as `agent.delta` events on the live feeds.

`Deltas` coalesces a run's text deltas: a fast model sends a few characters per delta, dozens
of times a second, and one event each would flood the log (and the archive, and every feed).
The text is held until `interval` seconds passed since the previous delta event or `chars`
characters are waiting, and flushed before anything else the run produces (a finished item,
another agent) and at the end, so the feed's text is the model's, in order, with at most one
event per `interval` per run while text flows.

`AgentStream` is the seed's `StreamingHelper` (`emit_agent_start`, `emit_answer`,
`emit_error`), writing `agent.delta` events of kinds "start", "answer" and "error" to the same
feed. Does not import the Agents SDK.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from agentexec.config import Settings
from agentexec.errors import ConfigurationError, RedisUnavailableError
from agentexec.eventlog import EventLog
from agentexec.events import AgentDelta
from agentexec.runtime import Runtime, current
from agentexec.tasks import event_identity, own_task, running_task

from .base import run_agent_id
from .recorder import EventRecorder

__all__ = [
    "DEFAULT_DELTA_CHARS",
    "DEFAULT_DELTA_INTERVAL",
    "FROM_SETTINGS",
    "AgentStream",
    "Deltas",
    "FromSettings",
]

logger = logging.getLogger(__name__)

DEFAULT_DELTA_INTERVAL: float = Settings.model_fields["stream_interval"].default
"""Seconds between two text deltas of a run, at least (unless `DEFAULT_DELTA_CHARS` wait);
`AGENTEXEC_STREAM_INTERVAL` changes it for a process."""
DEFAULT_DELTA_CHARS: int = Settings.model_fields["stream_chars"].default
"""Characters of text that are recorded at once, whatever the interval
(`AGENTEXEC_STREAM_CHARS`)."""


class FromSettings(enum.Enum):
    """The marker of a runner option taken from the settings (`AGENTEXEC_STREAM_*`)."""

    FROM_SETTINGS = "from settings"


FROM_SETTINGS = FromSettings.FROM_SETTINGS

_ITEM_NAMES = {
    "tool_called": "tool call",
    "tool_output": "tool output",
    "handoff_requested": "handoff requested",
    "handoff_occured": "handoff",
    "reasoning_item_created": "reasoning",
    "mcp_approval_requested": "approval requested",
}


def check_delta_limits(interval: float | None, chars: int) -> None:
    """Raises `ConfigurationError` for a bad `stream_interval` or `stream_chars`."""
    if interval is not None and (
        isinstance(interval, bool) or not isinstance(interval, int | float) or interval < 0
    ):
        raise ConfigurationError(
            f"stream_interval={interval!r}: use seconds >= 0 between two text deltas of a run "
            f"(default {DEFAULT_DELTA_INTERVAL}), or None to record no deltas."
        )
    if isinstance(chars, bool) or not isinstance(chars, int) or chars < 1:
        raise ConfigurationError(
            f"stream_chars={chars!r}: use a whole number of characters >= 1 (default "
            f"{DEFAULT_DELTA_CHARS})."
        )


class Deltas:
    """Records the stream events of one streamed run as coalesced `agent.delta` events."""

    def __init__(self, recorder: EventRecorder, interval: float, chars: int) -> None:
        self.recorder = recorder
        self.interval = interval
        self.chars = chars
        self.agent = ""
        self.turn = 0
        self._text: list[str] = []
        self._waiting = 0
        self._last: float | None = None
        """When text was last recorded (None: never, so the first text goes at once; the
        monotonic clock may be younger than `interval` on a fresh machine)."""

    async def see(self, event: Any, turn: int) -> None:
        """Take one SDK stream event (duck-typed: `type`, `data`, `name`, `item`)."""
        kind = getattr(event, "type", "")
        if kind == "raw_response_event":
            data = getattr(event, "data", None)
            if getattr(data, "type", "") == "response.output_text.delta":
                await self.text(str(getattr(data, "delta", "") or ""), turn)
            else:  # the end of a text part, an item added or done...: a natural boundary
                await self.flush()
            return
        if kind == "agent_updated_stream_event":
            await self.flush()
            self.agent = str(getattr(getattr(event, "new_agent", None), "name", "") or "")
            await self.recorder.delta("start", self.agent, turn=turn + 1)
            return
        if kind == "run_item_stream_event":
            name = str(getattr(event, "name", "") or "")
            await self.flush()
            if name in _ITEM_NAMES:
                await self.recorder.delta(
                    "item", self.agent, turn=turn, item=name, text=_item_label(event, name)
                )

    async def text(self, delta: str, turn: int) -> None:
        if not delta:
            return
        self.turn = turn
        self._text.append(delta)
        self._waiting += len(delta)
        now = time.monotonic()
        due = self._last is None or now - self._last >= self.interval
        if self._waiting >= self.chars or due:
            await self.flush()

    async def flush(self) -> None:
        """Record the text waiting, if any."""
        if not self._text:
            return
        text, self._text, self._waiting = "".join(self._text), [], 0
        self._last = time.monotonic()
        await self.recorder.delta("text", self.agent, turn=self.turn, text=text)


def _item_label(event: Any, name: str) -> str:
    """A short, secret-free label of a run item: the tool's or the agent's name."""
    item = getattr(event, "item", None)
    raw = getattr(item, "raw_item", None)
    if name in ("handoff_occured",):
        return str(getattr(getattr(item, "target_agent", None), "name", "") or "")
    tool = getattr(raw, "name", None)
    if tool is None and isinstance(raw, dict):
        tool = raw.get("name")
    return str(tool or _ITEM_NAMES[name])


class AgentStream:
    """The seed's `StreamingHelper`: emits a run's milestones for task `agent_id` (default:
    the task whose handler makes it) to the live feeds (as `agent.delta` events) and to
    `event_callback`, if given, with the event's fields as a dict. Raises
    `ConfigurationError` when no `agent_id` is given outside a task's handler.

    The methods are plain calls, as in the seed: inside the task's handler on a worker, the
    event is queued behind the handler's other events (fenced by its lease) and the call
    returns at once; elsewhere it is appended before the call returns, and an agent id no task
    or activity has raises `UnknownActivityError`. Raises `RedisUnavailableError` when Redis
    is unreachable outside a handler.
    """

    def __init__(
        self,
        agent_id: UUID | str | None = None,
        event_callback: Callable[[dict[str, Any]], Any] | None = None,
        *,
        runtime: Runtime | None = None,
    ) -> None:
        if agent_id is None:
            run = running_task()
            if run is None:
                raise ConfigurationError(
                    "AgentStream(): no agent_id given and no task is running here; pass the "
                    "agent_id of the task (or activity) whose feed the events belong to."
                )
            agent_id = run.agent_id
        self.agent_id = run_agent_id(agent_id, "AgentStream")
        if event_callback is not None and not callable(event_callback):
            raise ConfigurationError(
                f"AgentStream(event_callback={event_callback!r}): pass a function of one "
                "dict, or None."
            )
        self.event_callback = event_callback
        self._runtime = runtime

    def emit_agent_start(self, agent: str, iteration: int = 1) -> None:
        """Agent `agent` starts (its `iteration`-th time in this task)."""
        self._emit(kind="start", agent=agent, turn=iteration)

    def emit_answer(self, text: str, sources: list[Any] | None = None) -> None:
        """The final answer `text`, with the `sources` it rests on."""
        self._emit(kind="answer", text=text, sources=list(sources or []))

    def emit_error(self, message: str) -> None:
        """Something went wrong: `message`, for the people watching."""
        self._emit(kind="error", text=message)

    def _emit(self, **fields: Any) -> None:
        event = AgentDelta(agent_id=self.agent_id, **event_identity(self.agent_id), **fields)
        task = own_task(self.agent_id)
        log = EventLog((self._runtime or current()).broker)
        try:
            log.append_sync(event, task.lease if task is not None else None)
        except RedisUnavailableError:
            if task is None:
                raise
            logger.warning("agent %s: %s not recorded", self.agent_id, fields.get("kind"))
        if self.event_callback is not None:
            self.event_callback({"type": "agent.delta", "agent_id": str(self.agent_id), **fields})
