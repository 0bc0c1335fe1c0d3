"""Cancellation of running tasks: which asyncio task runs each agent id here, and the cancel
requests that stop them.

A request arrives as a notice on the cancel channel (`NoticeListener`), or, when the notice
fell in an outage, as the task's cancel marker, checked with each lease renewal. Canceling a
pipeline run cancels the step of it that runs here.
"""

from __future__ import annotations

import asyncio
import logging
from uuid import UUID

from agentexec.broker import Broker

__all__ = ["Cancellation"]

logger = logging.getLogger(__name__)


class Cancellation:
    def __init__(self, broker: Broker, consumer: str) -> None:
        self._broker = broker
        self._consumer = consumer
        self._tasks: dict[UUID, asyncio.Task[None]] = {}
        self._parents: dict[UUID, UUID] = {}
        """Parent (a pipeline run) of each running task that has one: canceling it cancels
        them."""
        self._requested: set[UUID] = set()

    def running(self, agent_id: UUID, parent_id: UUID | None, task: asyncio.Task[None]) -> None:
        """`task` runs the handler of `agent_id` from now on."""
        self._tasks[agent_id] = task
        if parent_id is not None:
            self._parents[agent_id] = parent_id

    def ended(self, agent_id: UUID) -> None:
        """The handler of `agent_id` returned."""
        self._tasks.pop(agent_id, None)
        self._parents.pop(agent_id, None)
        self._requested.discard(agent_id)

    def requested(self, agent_id: UUID) -> bool:
        """Whether the handler of `agent_id` was stopped by a cancel request (else by a
        shutdown or a lost lease)."""
        return agent_id in self._requested

    def cancel(self, agent_id: UUID) -> None:
        """Stop the task of `agent_id`, and its children (a pipeline run's step), if they
        run here."""
        children = [child for child, parent in self._parents.items() if parent == agent_id]
        for target in (agent_id, *children):
            task = self._tasks.get(target)
            if task is not None and target not in self._requested:
                logger.info("worker %s: canceling task of agent %s", self._consumer, target)
                self._requested.add(target)
                task.cancel()

    async def check_markers(self) -> None:
        """Catch cancel requests whose notice this worker missed (published during an outage)."""
        agents = list({*self._tasks, *self._parents.values()})
        if not agents:
            return
        for agent_id in await self._broker.canceled(agents):
            self.cancel(agent_id)
