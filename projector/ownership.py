"""Exclusive ownership of the event log by one projector at a time, and reads fenced by it.

The owner holds a Redis lease key (SET NX PX) and renews it; when it dies the lease expires
and another projector takes over. Reads from the consumer group run in a Lua script that first
checks the lease, so a projector that lost its lease (paused, partitioned) cannot take entries
any more: every entry it took earlier is still pending under the shared consumer name, where
the next owner finds it. Commits are fenced separately by the SQL checkpoint (see
`checkpoints.advance`).
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis

from agentexec.scripts import PROJECTOR_READ, PROJECTOR_RELEASE, PROJECTOR_RENEW

__all__ = ["CONSUMER", "Lease"]

logger = logging.getLogger(__name__)

CONSUMER = "projector"
"""Every projector reads as this one consumer, so pending entries outlive their reader."""

Entries = list[tuple[str, dict[bytes, bytes] | None]]
"""(stream id, fields); fields are None for an entry deleted while pending."""


class Lease:
    """The lease `key` held as `owner` for `seconds` at a time."""

    def __init__(self, client: aioredis.Redis, key: str, owner: str, seconds: float) -> None:
        self.client = client
        self.key = key
        self.owner = owner
        self.ms = max(1, int(seconds * 1000))
        self._renew = client.register_script(PROJECTOR_RENEW.source)
        self._release = client.register_script(PROJECTOR_RELEASE.source)
        self._read = client.register_script(PROJECTOR_READ.source)

    async def acquire(self) -> bool:
        """Take the lease if it is free (or already ours); True when we hold it."""
        if await self.client.set(self.key, self.owner, nx=True, px=self.ms):
            return True
        return bool(await self.renew())

    async def renew(self) -> bool:
        """Extend the lease; False when it is not ours any more."""
        return bool(await self._renew(keys=[self.key], args=[self.owner, self.ms]))

    async def release(self) -> None:
        await self._release(keys=[self.key], args=[self.owner])

    async def read(self, stream: str, group: str, cursor: str, count: int) -> Entries | None:
        """XREADGROUP `cursor` (`">"` new entries, `"0"` pending ones) as `CONSUMER`, only
        while we hold the lease; None when we do not."""
        reply: Any = await self._read(
            keys=[self.key, stream], args=[self.owner, group, CONSUMER, count, cursor]
        )
        if not reply or reply[0] != 1:
            return None
        entries: Entries = []
        if len(reply) < 2 or not reply[1]:
            return entries
        for entry_id, flat in reply[1][0][1]:
            fields = dict(zip(flat[::2], flat[1::2], strict=True)) if flat else None
            entries.append((entry_id.decode(), fields))
        return entries
