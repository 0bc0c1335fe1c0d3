"""Cron schedules: `@pool.schedule("name", "*/5 * * * *")` enqueues the task once per slot.

Every running pool that declares a schedule wakes at each slot and enqueues the task with an
idempotency key made of the queue, the task name and the slot's time, so the task is queued
exactly once per slot however many pools run. Slots missed while no pool ran are not caught up.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel

from agentexec.connection import stop_if_cancelled
from agentexec.errors import AgentexecError, TaskDefinitionError
from agentexec.queue import enqueue

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    task_name: str
    cron: str
    """Five fields (minute hour day month weekday), or six with seconds last."""
    tz: ZoneInfo
    context: BaseModel

    @classmethod
    def declare(
        cls,
        task_name: str,
        cron: str,
        tz: str,
        context: BaseModel | None,
        context_type: type[BaseModel],
    ) -> Schedule:
        where = f"@pool.schedule({task_name!r}, {cron!r})"
        if not croniter.is_valid(cron):
            raise TaskDefinitionError(
                f"{where}: {cron!r} is not a cron expression; use five fields "
                "(minute hour day month weekday), e.g. '*/5 * * * *', or six with seconds last."
            )
        try:
            zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise TaskDefinitionError(
                f"{where}: tz={tz!r} is not a known time zone; use an IANA name such as "
                "'UTC' or 'Europe/Paris'."
            ) from None
        if context is None:
            try:
                context = context_type()
            except Exception as e:
                raise TaskDefinitionError(
                    f"{where}: {context_type.__name__}() cannot be built without arguments ({e}); "
                    "pass context=... to the decorator."
                ) from None
        elif not isinstance(context, context_type):
            raise TaskDefinitionError(
                f"{where}: context is a {type(context).__name__}; the task takes "
                f"{context_type.__name__}."
            )
        return cls(task_name, cron, zone, context)

    def next_slot(self, after: datetime) -> datetime:
        """The first slot strictly after `after`, as an aware datetime in the schedule's zone."""
        slot: datetime = croniter(self.cron, after.astimezone(self.tz)).get_next(datetime)
        return slot


async def run_schedules(schedules: list[Schedule], queue_name: str) -> None:
    """Enqueue each schedule's task at each of its slots, until cancelled."""
    now = datetime.now(UTC)
    upcoming = [s.next_slot(now) for s in schedules]
    while True:
        index = min(range(len(schedules)), key=upcoming.__getitem__)
        schedule, slot = schedules[index], upcoming[index]
        await asyncio.sleep(max(0.0, (slot - datetime.now(UTC)).total_seconds()))
        slot_utc = slot.astimezone(UTC).isoformat()
        try:
            task = await enqueue(
                schedule.task_name,
                schedule.context,
                queue_name=queue_name,
                idempotency_key=f"cron:{queue_name}:{schedule.task_name}:{slot_utc}",
                metadata={"schedule": schedule.cron, "slot": slot_utc},
            )
            logger.info(
                "schedule %r: slot %s -> agent %s",
                schedule.task_name,
                slot.isoformat(),
                task.agent_id,
            )
        except AgentexecError as e:
            logger.error("schedule %r: could not enqueue slot %s: %s", schedule.task_name, slot, e)
        except Exception:
            # The schedule loop's boundary: one failed slot must not end every schedule.
            logger.exception("schedule %r: could not enqueue slot %s", schedule.task_name, slot)
        upcoming[index] = schedule.next_slot(slot)
        stop_if_cancelled()
