"""Housekeeping of a pool's Redis keys: what would otherwise pile up for good.

- Consumer names: each worker process reads as `host:pool:slot`, and every pool start picks a
  new pool id, so the names of workers that exited stay in their queue's consumer group.
  Those idle for `AGENTEXEC_IDLE_CONSUMER_SECONDS` with no pending entry are removed (one with
  pending entries stays: its tasks are taken over by the lease logic, then it goes too).
- Dead letters older than `AGENTEXEC_DEAD_LETTER_RETENTION` (see `workers.deadletters`).

A pool runs a pass when it starts, then every `every` seconds.
"""

from __future__ import annotations

import asyncio
import logging

from agentexec.connection import REDIS_ERRORS, stop_if_cancelled
from agentexec.runtime import Runtime, current

from .deadletters import trim_dead_letters

__all__ = ["HOUSEKEEPING_INTERVAL", "keep_house", "remove_idle_consumers"]

logger = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL = 600.0
"""Seconds between two passes of a running pool."""


async def remove_idle_consumers(
    queue_name: str, idle_seconds: float, runtime: Runtime | None = None
) -> list[str]:
    """Remove the consumers of `queue_name`'s groups (of every partition) idle for
    `idle_seconds` with no pending entry; returns their names."""
    broker = (runtime or current()).broker
    names: list[str] = []
    for partition in broker.partitions:
        names += await broker.remove_idle_consumers(queue_name, int(idle_seconds * 1000), partition)
    if names:
        logger.info(
            "housekeeping: removed %d idle consumer(s) of queue %r: %s",
            len(names),
            queue_name,
            ", ".join(sorted(set(names))),
        )
    return names


async def keep_house(
    runtime: Runtime, queue_name: str, every: float = HOUSEKEEPING_INTERVAL
) -> None:
    """Run a pass now and every `every` seconds until cancelled; a failed pass (Redis
    unreachable, say) is logged and the next one tries again."""
    settings = runtime.settings
    while True:
        try:
            await remove_idle_consumers(queue_name, settings.idle_consumer_seconds, runtime)
            await trim_dead_letters(settings.dead_letter_retention, runtime)
        except REDIS_ERRORS as e:
            logger.warning("housekeeping: skipped a pass, Redis unreachable (%s)", e)
        except Exception:
            # A background task's boundary: the pool goes on without this pass.
            logger.exception("housekeeping: pass failed")
        stop_if_cancelled()  # a cancel the client library swallowed in the pass
        await asyncio.sleep(every)
