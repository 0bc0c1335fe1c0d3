"""`EventRecorder`: how a runner appends what its agent does to the event log."""

from __future__ import annotations

import logging
from uuid import UUID

from agentexec.errors import RedisUnavailableError
from agentexec.eventlog import EventLog
from agentexec.events import (
    AgentCheckpoint,
    AgentDelta,
    AgentHandoff,
    AgentToolCall,
    AgentTurn,
    AgentUsage,
    Event,
    TaskProgress,
)
from agentexec.runtime import Runtime, current
from agentexec.tasks import event_identity, own_task

from .redaction import Redactor, redact_secrets, summarize_arguments, truncate

logger = logging.getLogger(__name__)


class EventRecorder:
    """Appends the events of one agent id to the event log, from async code.

    Appends go through the event loop's batcher (commands of one loop iteration share a round
    trip) and are awaited, so the events of a run keep their order and all precede the task's
    completion. Agent events (turn, tool call, handoff, usage) are observations: when Redis is
    unreachable they are dropped with a warning instead of failing the agent. Progress is what
    the agent or the task asked to record: `progress` raises `RedisUnavailableError`.
    """

    def __init__(
        self, agent_id: UUID, *, redact: Redactor | None = None, runtime: Runtime | None = None
    ) -> None:
        self.agent_id = agent_id
        self._runtime = runtime
        self.redact: Redactor = redact or redact_secrets
        self._dropping = False

    @property
    def runtime(self) -> Runtime:
        """The given runtime, else the edge's at each call (`agentexec.runtime.current()`):
        a runner made before `ax.CONF` changed follows the change."""
        return self._runtime or current()

    @property
    def limit(self) -> int:
        return self.runtime.settings.max_event_summary_chars

    async def progress(self, message: str, percentage: int | None = None) -> str:
        """Record progress (a `task.progress` event); returns its stream id.

        `message` longer than `AGENTEXEC_MAX_EVENT_SUMMARY_CHARS` is cut. Raises `ValueError`
        for an empty message or a percentage that is not a whole number from 0 to 100.
        """
        if not isinstance(message, str) or not message.strip():
            raise ValueError(f"message {message!r} is empty; describe what the agent is doing.")
        if percentage is not None and (
            isinstance(percentage, bool)
            or not isinstance(percentage, int)
            or not 0 <= percentage <= 100
        ):
            raise ValueError(f"percentage {percentage!r} is not a whole number from 0 to 100.")
        event = TaskProgress(
            agent_id=self.agent_id,
            **event_identity(self.agent_id),
            message=truncate(message.strip(), self.limit),
            percentage=percentage,
        )
        return await self._xadd(event)

    async def turn(self, agent: str, turn: int, max_turns: int | None = None) -> None:
        of = f" of {max_turns}" if max_turns else ""
        await self.append(
            AgentTurn(
                agent_id=self.agent_id,
                **event_identity(self.agent_id),
                agent=self._name(agent),
                turn=turn,
                max_turns=max_turns,
                message=f"{self._name(agent)}: turn {turn}{of}",
            )
        )

    async def tool_call(
        self, agent: str, turn: int, tool: str, arguments: str, call_id: str = ""
    ) -> None:
        """Record a call of `tool`; `arguments` is the raw JSON the model sent, which is
        redacted and cut to size here."""
        await self.append(
            AgentToolCall(
                agent_id=self.agent_id,
                **event_identity(self.agent_id),
                agent=self._name(agent),
                turn=turn,
                tool=self._name(tool),
                call_id=self._name(call_id),
                arguments=summarize_arguments(tool, arguments, self.redact, self.limit),
                message=f"{self._name(agent)} called {self._name(tool)}",
            )
        )

    async def handoff(self, agent: str, to_agent: str, turn: int) -> None:
        await self.append(
            AgentHandoff(
                agent_id=self.agent_id,
                **event_identity(self.agent_id),
                agent=self._name(agent),
                to_agent=self._name(to_agent),
                turn=turn,
                message=f"{self._name(agent)} handed off to {self._name(to_agent)}",
            )
        )

    async def usage(
        self,
        agent: str,
        turn: int,
        *,
        requests: int,
        input_tokens: int,
        output_tokens: int,
        total_tokens: int,
    ) -> None:
        await self.append(
            AgentUsage(
                agent_id=self.agent_id,
                **event_identity(self.agent_id),
                agent=self._name(agent),
                turn=turn,
                requests=requests,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                total_tokens=total_tokens,
                message=f"{self._name(agent)} used {total_tokens} tokens",
            )
        )

    async def checkpoint(self, agent: str, run: str, turn: int, conversation: bytes) -> bool:
        """Save `conversation` (JSON) as run `run`'s state after its completed turn `turn`,
        with an `agent.checkpoint` event, in the task's own handler (elsewhere no worker can
        take the run over: nothing is saved). Returns whether it was saved; like the other
        agent events, a checkpoint Redis cannot take is dropped with a warning (a takeover
        then resumes from an earlier one)."""
        task = own_task(self.agent_id)
        if task is None or task.lease is None:
            return False
        event = AgentCheckpoint(
            agent_id=self.agent_id,
            **event_identity(self.agent_id),
            agent=self._name(agent),
            turn=turn,
            run=run,
            message=f"{self._name(agent)}: checkpoint {turn} saved",
        )
        try:
            saved = await EventLog(self.runtime.broker).checkpoint(
                event, task.lease, run, conversation
            )
        except RedisUnavailableError as e:
            logger.warning("agent %s: checkpoint of turn %d not saved: %s", self.agent_id, turn, e)
            return False
        return bool(saved)

    async def saved_checkpoint(self, run: str) -> bytes | None:
        """The conversation run `run` saved last in an earlier attempt of this task, read in
        the task's own handler (None elsewhere, when there is none, or when Redis is
        unreachable: the run then starts from its beginning)."""
        if own_task(self.agent_id) is None:
            return None
        try:
            return await EventLog(self.runtime.broker).saved_checkpoint(self.agent_id, run)
        except RedisUnavailableError as e:
            logger.warning("agent %s: checkpoint not read, run starts over: %s", self.agent_id, e)
            return None

    async def delta(
        self,
        kind: str,
        agent: str = "",
        *,
        text: str = "",
        item: str = "",
        turn: int = 0,
        sources: list[object] | None = None,
    ) -> None:
        """Record what a streamed run produced (an `agent.delta`; see `AgentDelta`)."""
        await self.append(
            AgentDelta(
                agent_id=self.agent_id,
                **event_identity(self.agent_id),
                kind=kind,
                agent=self._name(agent),
                turn=turn,
                text=text,
                item=self._name(item),
                sources=sources,
            )
        )

    async def append(self, event: Event) -> str | None:
        """Append an observational event; returns its stream id, or None when Redis is
        unreachable and the event was dropped."""
        try:
            entry_id = await self._xadd(event)
        except RedisUnavailableError as e:
            if not self._dropping:
                logger.warning(
                    "agent %s: Redis unreachable (%s); agent events are dropped until it is back",
                    self.agent_id,
                    e,
                )
                self._dropping = True
            return None
        if self._dropping:
            logger.info("agent %s: recording agent events again", self.agent_id)
            self._dropping = False
        return entry_id

    async def _xadd(self, event: Event) -> str:
        """Append `event`; in the task's own handler fenced by its lease, like its activity
        writes ("" when the worker running the task lost it)."""
        run = own_task(event.agent_id)
        log = EventLog(self.runtime.broker)
        return await log.append(event, run.lease if run is not None else None, check=False)

    def _name(self, name: str) -> str:
        return truncate(name, self.limit)
