"""Retry timing and the delayed set: a task waiting for its retry is not held by any worker.

A failed attempt moves the task's entry to the queue's delayed set (scored by due time); a
promoter in every worker moves due entries back to their stream. Each promoter sleeps until
the earliest due time it knows of, is woken early when its own worker schedules an earlier
retry, and looks again at least every lease period, which covers retries scheduled by
workers that have since died.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from agentexec.connection import REDIS_ERRORS, Reconnect, stop_if_cancelled
from agentexec.errors import BrokerError
from agentexec.locks import Lock, capacity_of
from agentexec.runtime import Runtime

logger = logging.getLogger(__name__)


def backoff_delay(attempt: int, base: float, maximum: float) -> float:
    """Seconds before retrying after failed attempt `attempt` (1-based): exponential, capped,
    with full jitter over the upper half so that retries of a burst spread out."""
    ceiling: float = min(base * 2 ** (attempt - 1), maximum)
    return ceiling * random.uniform(0.5, 1.0)


class Promoter:
    """Moves due delayed tasks of one queue back to their streams."""

    def __init__(self, runtime: Runtime, queue_name: str) -> None:
        self.broker = runtime.broker
        self.settings = runtime.settings
        self.queue_name = queue_name
        self.woken = asyncio.Event()
        self._reconnect = Reconnect(f"promoter of {queue_name!r}")

    def schedule(self) -> None:
        """Tell the promoter that a task was delayed here, so it rechecks its wake-up time."""
        self.woken.set()

    async def run(self) -> None:
        while True:
            wait = self.settings.lease_seconds
            try:
                nxt = await self._promote()
                await self._sweep_locks()
                self._reconnect.succeeded()
                if nxt is not None:
                    wait = min(wait, max(0.0, (nxt - _now_ms()) / 1000))
            except REDIS_ERRORS as e:
                await self._reconnect.failed(e)
                continue
            except BrokerError as e:
                logger.error("promoter: %s", e)
            except Exception as e:  # any error of the client library: an outage
                await self._reconnect.failed(e)
                continue
            stop_if_cancelled()  # a cancel the client library swallowed in the pass
            self.woken.clear()
            # Not `asyncio.wait_for`: on Python 3.11 it loses a cancel that comes as the
            # event is set (a stopping worker defers a task, which wakes the promoter), and
            # the worker then waited for its promoter until the pool killed it.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self.woken.wait()

    async def _promote(self) -> float | None:
        """Promote the due tasks of every partition's delayed set; the next due time of
        those left (ms), None when none is."""
        due = [
            await self.broker.promote(self.queue_name, _now_ms(), 100, partition)
            for partition in self.broker.partitions
        ]
        left = [ms for ms in due if ms is not None]
        return min(left) if left else None

    async def _sweep_locks(self) -> None:
        """Wake the waiters of locks whose holds expired: their holders died or were stopped
        without releasing them (see `agentexec.locks`), in every partition."""
        for partition in self.broker.partitions:
            await self._sweep_partition(partition)

    async def _sweep_partition(self, partition: int) -> None:
        now = _now_ms()
        limit = self.settings.max_concurrency_per_tenant
        for name in await self.broker.locks_due(self.queue_name, now, partition=partition):
            woken = await self.broker.unlock(
                self.queue_name, None, [Lock(name, capacity_of(name, limit))], now, partition
            )
            if woken:
                logger.info(
                    "promoter: woke %d task(s) waiting for lock %r of queue %r after its "
                    "holder's lease expired",
                    woken,
                    name,
                    self.queue_name,
                )


def _now_ms() -> int:
    return int(time.time() * 1000)
