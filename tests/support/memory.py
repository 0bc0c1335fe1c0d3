"""Filling a test's own Redis to its `maxmemory`, and freeing it again (out-of-memory faults)."""

from __future__ import annotations

import redis
import redis.asyncio


async def fill(client: redis.asyncio.Redis) -> int:
    """Write filler keys until Redis refuses writes for lack of memory; returns how many."""
    written = 0
    while True:
        try:
            await client.set(f"filler:{written}", b"x" * 20_000)
        except redis.exceptions.OutOfMemoryError:
            return written
        written += 1


async def free(client: redis.asyncio.Redis, written: int) -> None:
    """Delete the filler keys `fill` wrote."""
    for start in range(0, written + 1, 500):
        await client.delete(*(f"filler:{i}" for i in range(start, start + 500)))
