"""Retention: the event log is trimmed below what was archived, and the archive on request.

- `LogRetention` trims each partition's Redis event log after the projector's commits to it,
  at most once every `interval` seconds (never per event), with `XTRIM MINID` (never
  `MAXLEN`) to below the lowest of: the projector's committed checkpoint (its archive is
  written in the same transaction), the position of every consumer group of the log (its
  oldest pending entry, else its last delivered one), and the start of the hot window
  (`AGENTEXEC_LOG_HOT_WINDOW` seconds back on the Redis clock), which live feeds resume from;
  older positions are served from the SQL archive (`agentexec.api.history`).
- `prune_archive` deletes archived events older than a bound, in batches, and only those the
  projector no longer needs: at or below its checkpoint of their partition, older than
  `AGENTEXEC_RESULT_TTL` (results are restored from them when Redis loses its data), and not
  of a task that has not ended (restore queues those again from their archived `task.queued`).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, Table, select

from agentexec.activity.models import Checkpoint
from agentexec.broker import Broker
from agentexec.errors import BrokerError, ConfigurationError
from agentexec.positions import Position
from agentexec.runtime import Runtime, current

from .archive import Archive
from .checkpoints import ORIGIN, parse_id

__all__ = ["LogRetention", "prune_archive"]

logger = logging.getLogger(__name__)

_checkpoints: Table = Checkpoint.__table__  # type: ignore[assignment]


class LogRetention:
    """Trims the partitions' event logs to what the projector committed, keeping `hot_window`
    seconds."""

    def __init__(self, hot_window: float, *, interval: float = 5.0) -> None:
        self.hot_window = hot_window
        self.interval = interval
        """Seconds between trims: a trim reads every consumer group of the log, so it follows
        commits in batches rather than each of them."""
        self.trimmed = 0
        """Entries this object trimmed so far."""
        self._last: dict[int, float] = {}

    async def after_commit(self, broker: Broker, checkpoint: str, partition: int = 0) -> int:
        """Trim `partition`'s log, committed up to `checkpoint`, if its last trim is
        `interval` seconds old; returns how many entries went."""
        if time.monotonic() - self._last.get(partition, -float("inf")) < self.interval:
            return 0
        self._last[partition] = time.monotonic()
        try:
            return await self.trim(broker, checkpoint, partition)
        except BrokerError as e:
            # Trimming is housekeeping: the next one tries again, projection goes on.
            stream = broker.partitions.keys(partition).events
            logger.warning("log retention: could not trim %s: %s", stream, e)
            return 0

    async def trim(self, broker: Broker, checkpoint: str, partition: int = 0) -> int:
        """Trim `partition`'s log now (`Broker.trim_log`); returns how many entries were
        removed."""
        hot_ms = int(self.hot_window * 1000)
        removed, bound = await broker.trim_log(checkpoint, hot_ms, partition)
        if removed:
            self.trimmed += removed
            logger.debug(
                "log retention: trimmed %d entries of %s below %s",
                removed,
                broker.partitions.keys(partition).events,
                bound,
            )
        return removed


def prune_archive(
    engine: Engine,
    older_than: timedelta,
    *,
    batch_size: int = 5000,
    stream: str | None = None,
    runtime: Runtime | None = None,
) -> int:
    """Delete archived events older than `older_than` that the projector no longer needs
    (see the module's docstring); returns how many. Deletes `batch_size` rows per
    transaction, logging progress at INFO. Each partition's events go below its own
    checkpoint; `stream` (one partition's log) defaults to every partition's log of
    `AGENTEXEC_KEY_PREFIX`.

    A rebuild of the read model (`agentexec projector --rebuild`) starts from what is left:
    prune ended activities first (`ax.activity.prune`) so that it does not bring back a part
    of their history.
    """
    if older_than < timedelta(0) or batch_size < 1:
        raise ConfigurationError(
            f"prune_archive(older_than={older_than!r}, batch_size={batch_size!r}): use a "
            "duration >= 0 and a batch size >= 1."
        )
    runtime = runtime or current()
    partitions = runtime.partitions
    logs = [(p, partitions.keys(p).events) for p in partitions]
    if stream is not None:
        logs = [(p, name) for p, name in logs if name == stream] or [(0, stream)]
    age = max(older_than, timedelta(seconds=runtime.settings.result_ttl))
    cutoff = int((datetime.now(UTC) - age).timestamp() * 1000)
    removed = 0
    for partition, name in logs:
        with engine.connect() as conn:
            checkpoint = conn.execute(
                select(_checkpoints.c.position).where(_checkpoints.c.name == name)
            ).scalar()
        if checkpoint is None or checkpoint == ORIGIN:
            logger.info("prune: no checkpoint of %s; no archived event of it removed", name)
            continue
        bound = min(parse_id(str(checkpoint)).after(), Position(cutoff, 0))
        archive = Archive(engine, partition=partition)
        for count in archive.prune(bound, batch_size=batch_size):
            removed += count
            if count:
                logger.info(
                    "prune: %d archived events removed so far (%s below %s-%s)",
                    removed,
                    name,
                    *bound,
                )
    return removed
