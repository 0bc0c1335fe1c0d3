"""Running a test app's pool on the test's database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import agentexec as ax


@contextmanager
def running_on(pool: ax.Pool, engine: Any) -> Iterator[ax.Pool]:
    """`pool` started with `engine` as its database (its own projector included); shut down
    and given its own engine back at the end."""
    given = pool.engine
    pool.engine = engine
    pool.start()
    try:
        yield pool
    finally:
        pool.shutdown()
        pool.engine = given
