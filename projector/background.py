"""`ProjectorThread`: a pool's projector, on a thread of its own at a lower CPU priority.

A pool with a database runs the projector beside its workers, on the same cores. Given the
same priority, the projector's SQL transactions compete with the workers' task starts and
ends, which adds to every task's latency; at a lower priority the read model lags by a few
milliseconds more under load and the tasks run first. `AGENTEXEC_PROJECTOR_NICENESS` sets the
niceness (0 keeps the pool's own priority). Linux gives each thread its own niceness, and the
threads this one starts (the projector's SQL runs on them) inherit it; elsewhere the thread
keeps the process's priority, since lowering it would lower the pool's workers too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading

from agentexec.connection import close_redis

from .projector import Projector

logger = logging.getLogger(__name__)


class ProjectorThread:
    """Runs `projector` on a thread; with `dispose_engine` (an engine made for it), disposes of
    the projector's engine once it stopped."""

    def __init__(
        self, projector: Projector, niceness: int | None = None, *, dispose_engine: bool = False
    ) -> None:
        self.projector = projector
        self.dispose_engine = dispose_engine
        settings = projector.runtime.settings
        self.niceness = settings.projector_niceness if niceness is None else niceness
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._running = threading.Event()
        self._thread = threading.Thread(target=self._main, name="agentexec-projector", daemon=True)

    def start(self) -> None:
        """Start the projector and return once its event loop runs."""
        self._thread.start()
        self._running.wait()

    async def stop(self) -> None:
        """Stop the projector, after it applied what was appended up to now (see
        `Projector.stop`), without blocking the caller's event loop."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        await asyncio.to_thread(self._thread.join)

    def _main(self) -> None:
        lower_priority(self.niceness)
        try:
            asyncio.run(self._run())
        finally:
            self._running.set()  # a start() waiting on a thread that failed early returns

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.projector.start()
        self._running.set()
        try:
            await self._stop.wait()
            await self.projector.stop()
        finally:
            await close_redis(sync=False)
            if self.dispose_engine:
                self.projector.engine.dispose()


def lower_priority(niceness: int) -> None:
    """Give the calling thread (and the threads it starts) `niceness`, on Linux only."""
    if niceness <= 0 or sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread)
        if current < niceness:
            os.setpriority(os.PRIO_PROCESS, thread, niceness)
    except OSError as e:
        logger.warning(
            "projector: could not lower its CPU priority to niceness %d (%s)", niceness, e
        )
        return
    logger.info("projector: runs at niceness %d, below the pool's workers", max(current, niceness))
