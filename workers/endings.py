"""How a worker's entries end: complete, failed for good, retried after a backoff, canceled,
deferred while another worker runs their task, or dead-lettered when they cannot run.

Every end goes through `persist`, which retries while Redis is unreachable; an end that another
worker's takeover made moot is rejected by the Broker and logged here. A task's transition
(`TaskDefinition.transition`) commits with its outcome.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import msgspec

from agentexec import events
from agentexec.connection import REDIS_ERRORS, Reconnect
from agentexec.consumer import Consumer, Entry, EntryKey, entry_key
from agentexec.events import (
    Ending,
    TaskCanceled,
    TaskCompleted,
    TaskFailed,
    TaskQueued,
    TaskRetried,
)
from agentexec.limits import describe_traceback, recordable
from agentexec.outbox import flush_events
from agentexec.results import Outcome
from agentexec.tasks import TaskDefinition
from agentexec.transitions import Write

from . import deadletters
from .leases import Leases
from .retries import Promoter, backoff_delay

__all__ = ["Endings"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Endings:
    def __init__(
        self,
        consumer: Consumer,
        leases: Leases,
        definitions: dict[str, TaskDefinition],
        promoter: Promoter,
        reconnect: Reconnect,
    ) -> None:
        self._consumer = consumer
        self._settings = consumer.settings
        self._leases = leases
        self._definitions = definitions
        self._promoter = promoter
        self._reconnect = reconnect

    @property
    def consumer(self) -> Consumer:
        return self._consumer

    async def complete(
        self,
        entry: Entry,
        event: TaskQueued,
        result: bytes,
        took: float,
        result_type: str | None = None,
    ) -> None:
        """End the task with the handler's return value `result` (JSON), after `took` seconds;
        `result_type` names the value's model class (`agentexec.results.result_type_of`)."""
        completed = TaskCompleted(
            agent_id=event.agent_id,
            task_name=event.task_name,
            attempt=event.attempt,
            message=self._settings.activity_message_complete,
            percentage=100,
            result=msgspec.Raw(result),
            result_type=result_type,
        )
        await self._finish(
            entry,
            event,
            completed,
            Outcome(
                Ending.COMPLETE, event.task_name, result=completed.result, result_type=result_type
            ),
        )
        logger.info("task %s (agent %s) complete in %.3fs", event.task_name, event.agent_id, took)

    async def persist(
        self,
        verb: Callable[[int | None], Awaitable[T]],
        ending: EntryKey | None = None,
        appends: bool = False,
    ) -> T:
        """Run a verb of this worker's, retrying while Redis is unreachable. `ending`: the
        entry the verb removes from the stream (lease renewal leaves it alone from now).
        `appends`: the verb appends an event, and takes the time of the first try when it
        runs again, so that a retry after a lost reply does not append it twice."""
        if ending is not None:
            self._leases.ending(ending)
        # Stream ids come from Redis's clock: allow for some skew.
        first_try = int(time.time() * 1000) - 5000
        since: int | None = None
        while True:
            try:
                reply = await verb(since)
                self._reconnect.succeeded()
                if ending is not None:
                    self._leases.ended(ending)
                return reply
            except REDIS_ERRORS as e:
                if appends:
                    since = first_try
                await self._reconnect.failed(e)

    def still_running(self, event: TaskQueued, where: str) -> None:
        logger.info(
            "worker %s: task %s (agent %s) still runs in %s; checking again in %.0fs",
            self._consumer.name,
            event.task_name,
            event.agent_id,
            where,
            self._settings.lease_seconds,
        )

    async def defer(self, entry: Entry, event: TaskQueued) -> None:
        """Park an entry whose task another worker still runs (START's -2) for a lease."""
        due_ms = int((time.time() + self._settings.lease_seconds) * 1000)
        await self.persist(
            lambda _: self._consumer.defer(entry, event.priority, due_ms), ending=entry_key(entry)
        )
        self._promoter.schedule()

    async def end_canceled(self, entry: Entry, event: TaskQueued) -> None:
        canceled = TaskCanceled(
            agent_id=event.agent_id,
            task_name=event.task_name,
            attempt=event.attempt,
            message="Task canceled.",
        )
        await self._finish(
            entry, event, canceled, Outcome(Ending.CANCELED, event.task_name, error="canceled")
        )
        logger.info("task %s (agent %s) canceled", event.task_name, event.agent_id)

    async def failed_attempt(
        self,
        entry: Entry,
        event: TaskQueued,
        definition: TaskDefinition,
        exc: Exception,
        error: str,
    ) -> None:
        """Retry after a backoff when the policy allows, else fail the task for good."""
        max_retries = (
            self._settings.max_task_retries
            if definition.max_retries is None
            else definition.max_retries
        )
        if not isinstance(exc, definition.retry_on) or event.attempt > max_retries:
            await self.fail(entry, event, error)
            return
        await flush_events(event.agent_id)
        delay = backoff_delay(
            event.attempt, self._settings.retry_backoff, self._settings.retry_backoff_max
        )
        retried = TaskRetried(
            agent_id=event.agent_id,
            task_name=event.task_name,
            attempt=event.attempt,
            error=error,
            delay=round(delay, 3),
            message=f"Attempt {event.attempt} failed ({error}); retrying in {delay:.1f}s.",
        )
        again = msgspec.structs.replace(event, attempt=event.attempt + 1, ts=events.utcnow())
        due_ms = int((time.time() + delay) * 1000)
        await self.persist(
            lambda since: self._consumer.retry(entry, again, retried, due_ms, since),
            ending=entry_key(entry),
            appends=True,
        )
        self._promoter.schedule()
        logger.warning(
            "task %s (agent %s) attempt %d failed: %s; retrying in %.1fs",
            event.task_name,
            event.agent_id,
            event.attempt,
            error,
            delay,
        )

    async def fail(
        self, entry: Entry, event: TaskQueued, error: str, message: str | None = None
    ) -> None:
        error = recordable(error)
        failed = TaskFailed(
            agent_id=event.agent_id,
            task_name=event.task_name,
            attempt=event.attempt,
            message=message or self._settings.activity_message_error.replace("{error}", error),
            error=error,
        )
        await self._finish(
            entry,
            event,
            failed,
            Outcome(Ending.ERROR, event.task_name, error=error, attempts=event.attempt),
        )
        logger.warning("task %s (agent %s) failed: %s", event.task_name, event.agent_id, error)

    def transition(self, queued: TaskQueued, outcome: Outcome) -> Sequence[Write]:
        """The writes the task's definition commits with its outcome, if it has a hook."""
        definition = self._definitions.get(queued.task_name)
        if definition is None or definition.transition is None:
            return ()
        try:
            return definition.transition(queued, outcome)
        except Exception as e:
            logger.error(
                "transition of task %s (agent %s) raised; its outcome is recorded without it\n%s",
                queued.task_name,
                queued.agent_id,
                describe_traceback(e),
            )
            return ()

    async def _finish(
        self,
        entry: Entry,
        queued: TaskQueued,
        event: TaskCompleted | TaskFailed | TaskCanceled,
        outcome: Outcome,
    ) -> None:
        """Append the terminal event, store and publish the outcome, ack, and apply the task's
        transition, atomically, if this worker still holds the entry; a worker that lost it
        cannot end the task."""
        await flush_events(event.agent_id)  # what the handler wrote comes before its outcome
        writes = self.transition(queued, outcome)
        ended = await self.persist(
            lambda _: self._consumer.finish(entry, event, outcome, writes),
            ending=entry_key(entry),
        )
        if not ended:
            logger.warning(
                "worker %s: task %s (agent %s) was taken over by another worker; "
                "this worker's outcome is discarded",
                self._consumer.name,
                event.task_name,
                event.agent_id,
            )

    async def dead_letter(self, entry: Entry, reason: str) -> None:
        """Move an entry that cannot run to the dead-letter stream (see
        `workers.deadletters`)."""
        await deadletters.dead_letter(self, entry, reason)
