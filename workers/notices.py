"""Notices that reach every worker of a queue through one pub/sub connection: cancel requests
(the worker holding the task stops it) and delayed tasks' due times (the promoter rechecks).
A notice missed during an outage is covered: a canceled task's start script checks its
marker, and the promoter looks at the delayed set at least every lease period."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from uuid import UUID

from agentexec.connection import Reconnect, ready, supervise
from agentexec.partitions import Partitions
from agentexec.runtime import Runtime, current
from agentexec.streams import Keys

logger = logging.getLogger(__name__)


class NoticeListener:
    def __init__(
        self,
        keys: Partitions | Keys,
        queue_name: str,
        on_cancel: Callable[[UUID], None],
        on_schedule: Callable[[], None],
        runtime: Runtime | None = None,
    ) -> None:
        """`keys`: the namespace's partitions (or the keys of its one partition): the cancel
        channel is shared by all, each has a schedule channel of its own."""
        self._runtime = runtime or current()
        partitions = Partitions.single(keys) if isinstance(keys, Keys) else keys
        self.channels: dict[bytes, Callable[[bytes], None]] = {
            partitions.keys(0).cancel_channel.encode(): self._cancel,
        }
        for partition in partitions:
            channel = partitions.keys(partition).schedule_channel(queue_name)
            self.channels[channel.encode()] = lambda _: on_schedule()
        self.on_cancel = on_cancel
        self.ready = asyncio.Event()
        """Set once subscribed: the worker takes no task before it can hear of its cancel."""
        self._reconnect = Reconnect("notice listener")

    def _cancel(self, data: bytes) -> None:
        try:
            agent_id = UUID(data.decode())
        except ValueError:
            logger.warning("notice listener: ignoring malformed cancel request %r", data)
            return
        self.on_cancel(agent_id)

    async def run(self) -> None:
        await supervise(self._reconnect, self._listen)

    async def _listen(self) -> None:
        # A fresh connection each time: redis-py's reconnect of a pub/sub connection can fail
        # with errors that are not connection errors.
        pubsub = (await ready(self._runtime.redis())).pubsub()
        try:
            await pubsub.subscribe(*self.channels)
            self.ready.set()
            self._reconnect.succeeded()
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is not None and message["type"] == "message":
                    handler = self.channels.get(message["channel"])
                    if handler is not None:
                        handler(bytes(message["data"]))
        finally:
            with contextlib.suppress(Exception):  # the connection is broken already
                await pubsub.aclose()  # type: ignore[no-untyped-call]
