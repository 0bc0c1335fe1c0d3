"""Retention: the event log is trimmed below what was archived, and the archive on request.

- `LogRetention` trims the Redis event log after the projector's commits, at most once every
  `interval` seconds (never per event), with `XTRIM MINID` (never `MAXLEN`) to below the
  lowest of: the projector's committed checkpoint (its archive is written in the same
  transaction), the position of every consumer group of the log (its oldest pending entry,
  else its last delivered one), and the start of the hot window (`AGENTEXEC_LOG_HOT_WINDOW`
  seconds back on the Redis clock), which live feeds resume from; older positions are served
  from the SQL archive (`agentexec.api.history`).
- `prune_archive` deletes archived events older than a bound, in batches, and only those the
  projector no longer needs: at or below its checkpoint, older than `AGENTEXEC_RESULT_TTL` (results
  are restored from them when Redis loses its data), and not of a task that has not ended
  (restore queues those again from their archived `task.queued`).
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
    """Trims the event log to what the projector committed, keeping `hot_window` seconds."""

    def __init__(self, hot_window: float, *, interval: float = 5.0) -> None:
        self.hot_window = hot_window
        self.interval = interval
        """Seconds between trims: a trim reads every consumer group of the log, so it follows
        commits in batches rather than each of them."""
        self.trimmed = 0
        """Entries this object trimmed so far."""
        self._last = -float("inf")

    async def after_commit(self, broker: Broker, checkpoint: str) -> int:
        """Trim if the last trim is `interval` seconds old; returns how many entries went."""
        if time.monotonic() - self._last < self.interval:
            return 0
        self._last = time.monotonic()
        try:
            return await self.trim(broker, checkpoint)
        except BrokerError as e:
            # Trimming is housekeeping: the next one tries again, projection goes on.
            logger.warning("log retention: could not trim %s: %s", broker.keys.events, e)
            return 0

    async def trim(self, broker: Broker, checkpoint: str) -> int:
        """Trim now (`Broker.trim_log`); returns how many entries were removed."""
        removed, bound = await broker.trim_log(checkpoint, int(self.hot_window * 1000))
        if removed:
            self.trimmed += removed
            logger.debug(
                "log retention: trimmed %d entries of %s below %s",
                removed,
                broker.keys.events,
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
    transaction, logging progress at INFO. `stream` defaults to the event log of
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
    stream = stream or runtime.keys.events
    with engine.connect() as conn:
        checkpoint = conn.execute(
            select(_checkpoints.c.position).where(_checkpoints.c.name == stream)
        ).scalar()
    if checkpoint is None or checkpoint == ORIGIN:
        logger.info("prune: no checkpoint of %s; no archived event removed", stream)
        return 0
    age = max(older_than, timedelta(seconds=runtime.settings.result_ttl))
    cutoff = int((datetime.now(UTC) - age).timestamp() * 1000)
    bound = min(parse_id(str(checkpoint)).after(), Position(cutoff, 0))
    removed = 0
    for count in Archive(engine).prune(bound, batch_size=batch_size):
        removed += count
        if count:
            logger.info("prune: %d archived events removed so far (below %s-%s)", removed, *bound)
    return removed
