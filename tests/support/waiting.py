"""Explicit waits on conditions (never fixed sleeps), with deadlines that stretch with load.

Every deadline a test sets (a wait here, `get_result(timeout=...)`, a subprocess wait, an SSE
read, pytest-timeout's limit) is `scaled(seconds)`: what it needs on a quiet machine, times
`timeout_factor()`. A deadline only bounds a wait that ends as soon as its condition holds, so
a busy machine makes a failing test slower, never a passing one. Durations that are the
behaviour under test (a handler's own timeout, a lease, an outage) are not scaled.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

FACTOR_VARIABLE = "AGENTEXEC_TEST_TIMEOUT_FACTOR"
MAX_LOAD_FACTOR = 10.0
"""The load average alone never stretches a deadline more than this (the variable can)."""


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def timeout_factor() -> float:
    """How much longer than on a quiet machine a test is willing to wait, now.

    The larger of `AGENTEXEC_TEST_TIMEOUT_FACTOR` (default 1) and `1 + load / cores`, where
    load is the 1-minute load average when the deadline is set (not once per session: the
    average lags a load that starts with the suite, such as CI's CPU hog or the suite's own
    processes), capped at `MAX_LOAD_FACTOR`.
    """
    text = os.environ.get(FACTOR_VARIABLE, "1")
    try:
        given = float(text)
    except ValueError:
        given = 0.0
    if not given > 0:
        raise ValueError(f"{FACTOR_VARIABLE}={text!r} is not a positive number; set it to e.g. 3")
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average on this platform
        load = 0.0
    return max(given, min(1 + load / _cores(), MAX_LOAD_FACTOR))


def scaled(seconds: float) -> float:
    """`seconds` (a deadline on a quiet machine) stretched by `timeout_factor()`."""
    return seconds * timeout_factor()


def _expired(timeout: float, limit: float, what: str) -> AssertionError:
    return AssertionError(
        f"timed out after {limit:.1f}s ({timeout}s scaled by load) waiting for {what}"
    )


def wait_for(predicate: Callable[[], T], timeout: float = 10, what: str = "condition") -> T:
    """Poll `predicate` until it returns a true value, and return it; `timeout` (seconds on a
    quiet machine) is scaled by `timeout_factor()`; raises AssertionError when it runs out."""
    limit = scaled(timeout)
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise _expired(timeout, limit, what)
        time.sleep(0.01)


async def async_wait_for(
    predicate: Callable[[], Awaitable[T]], timeout: float = 10, what: str = "condition"
) -> T:
    """`wait_for` with an async predicate."""
    limit = scaled(timeout)
    deadline = time.monotonic() + limit
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise _expired(timeout, limit, what)
        await asyncio.sleep(0.01)
