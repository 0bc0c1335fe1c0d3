"""Rebuild: empty the read model and apply the archive again, in one transaction.

The archive holds every event up to the checkpoint, so after a rebuild the read model is what
projecting the whole log gives; the checkpoints are left where they are and projection carries
on with the logs beyond them. With several partitions the archive is applied in time order
(stream id, then partition): each activity's events are in one partition, so each comes in its
log order. The rebuild holds the projector lease of every partition, so live projectors pause
meanwhile; readers see the old tables until it commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from sqlalchemy import Engine, delete

from agentexec.activity.models import Activity, ActivityCount, ActivityLog, SessionItem
from agentexec.broker import LogLease
from agentexec.runtime import Runtime, current

from . import projection
from .archive import Archive

__all__ = ["rebuild"]

logger = logging.getLogger(__name__)

_PAGE = 5000


async def rebuild(
    engine: Engine,
    *,
    timeout: float = 60.0,
    lease_seconds: float = 10.0,
    runtime: Runtime | None = None,
) -> int:
    """Rebuild the read model of the `AGENTEXEC_KEY_PREFIX` namespace in `engine` from its
    archive; returns how many events were applied.

    Waits up to `timeout` seconds for the leases held by running projectors (TimeoutError).
    """
    runtime = runtime or current()
    name = f"rebuild:{socket.gethostname()}:{os.getpid()}"
    broker = runtime.broker
    leases = [broker.log_lease(name, lease_seconds, p) for p in runtime.partitions]
    keeper = asyncio.create_task(_keep(leases))
    try:
        async with asyncio.timeout(timeout):
            # The holders renew their leases, or they expire: poll for each.
            for lease in leases:
                while True:
                    if await lease.acquire():
                        break
                    await asyncio.sleep(lease_seconds / 10)
        count = await asyncio.to_thread(_replay_archive, engine)
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        for lease in leases:
            await lease.release()
    logger.info(
        "rebuilt the read model of %s (%d partitions) from %d archived events",
        runtime.partitions.prefix,
        len(runtime.partitions),
        count,
    )
    return count


async def _keep(leases: list[LogLease]) -> None:
    """Renew the leases taken so far (a lease not taken yet is not renewed: renew only
    extends a lease held)."""
    while True:
        await asyncio.sleep(leases[0].ms / 3000)
        for lease in leases:
            await lease.renew()


def _replay_archive(engine: Engine) -> int:
    count = 0
    with engine.begin() as conn:
        conn.execute(delete(ActivityLog))
        conn.execute(delete(Activity))
        conn.execute(delete(SessionItem))
        conn.execute(delete(ActivityCount))
        for batch in Archive(conn, page=_PAGE, partition=None).read():
            projection.apply(conn, batch, archive=False)
            count += len(batch)
    return count
