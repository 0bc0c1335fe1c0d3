"""Rebuild: empty the read model and apply the archive again, in one transaction.

The archive holds every event up to the checkpoint, so after a rebuild the read model is what
projecting the whole log gives; the checkpoint is left where it is and projection carries on
with the log beyond it. The rebuild holds the projector lease, so live projectors pause
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

    Waits up to `timeout` seconds for the lease held by a running projector (TimeoutError).
    """
    runtime = runtime or current()
    lease = runtime.broker.log_lease(f"rebuild:{socket.gethostname()}:{os.getpid()}", lease_seconds)
    async with asyncio.timeout(timeout):
        # The holder renews its lease, or it expires: poll for it.
        while True:
            if await lease.acquire():
                break
            await asyncio.sleep(lease_seconds / 10)
    keeper = asyncio.create_task(_keep(lease))
    try:
        count = await asyncio.to_thread(_replay_archive, engine)
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        await lease.release()
    logger.info("rebuilt the read model of %s from %d archived events", runtime.keys.events, count)
    return count


async def _keep(lease: LogLease) -> None:
    while True:
        await asyncio.sleep(lease.ms / 3000)
        await lease.renew()


def _replay_archive(engine: Engine) -> int:
    count = 0
    with engine.begin() as conn:
        conn.execute(delete(ActivityLog))
        conn.execute(delete(Activity))
        conn.execute(delete(SessionItem))
        conn.execute(delete(ActivityCount))
        for batch in Archive(conn, page=_PAGE).read():
            projection.apply(conn, batch, archive=False)
            count += len(batch)
    return count
