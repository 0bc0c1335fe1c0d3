"""A warning for a process that reads a read model no projector is keeping up to date.

Without a running projector the tables never change, and code that reads them (seed 000's
polling loop, a list view) sees nothing happen: "Total: 0" forever. The first read, and at
most one read a minute after it, looks at the event log: when its oldest event that no
projector has taken is older than `STALE_AFTER` seconds and no projector holds the lease, the
process logs one warning that says so and how to start one. The look is two Redis commands;
when Redis is unreachable it gives up for the life of the process, and it never fails a read.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from agentexec.runtime import current

__all__ = ["STALE_AFTER", "check_projected"]

logger = logging.getLogger(__name__)

STALE_AFTER = 30.0
"""Seconds an event may wait for a projector before a reader warns."""

_EVERY = 60.0
_lock = threading.Lock()
_next_look = 0.0
_done = False


def check_projected() -> None:
    """Warn once per process when the read model has fallen behind a log nobody projects."""
    global _next_look, _done
    now = time.monotonic()
    with _lock:
        if _done or now < _next_look:
            return
        _next_look = now + _EVERY
    broker = current().broker
    try:
        waiting = broker.unprojected_since_ms()
    except (redis.RedisError, OSError) as e:
        logger.debug("read model freshness: Redis not reachable (%s); not checking again", e)
        _done = True
        return
    if waiting is None or time.time() * 1000 - waiting < STALE_AFTER * 1000:
        return
    _done = True
    age = time.time() - waiting / 1000
    logger.warning(
        "the read model is not being updated: events of namespace %r have waited %.0fs and "
        "no projector is running, so reads show old (or no) activity. Start one with "
        "`agentexec projector --database-url <this database>` (add --create-tables on an "
        "empty database), or give the pool the engine: ax.Pool(engine=engine).",
        broker.keys.prefix,
        age,
    )
