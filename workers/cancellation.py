"""Cancel requests reach the worker that holds a task through one pub/sub channel; a task
canceled before it starts is caught by the marker its start script checks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from uuid import UUID

from agentexec.connection import REDIS_ERRORS, Reconnect, get_redis
from agentexec.streams import Keys

logger = logging.getLogger(__name__)


class CancelListener:
    def __init__(self, keys: Keys, on_cancel: Callable[[UUID], None]) -> None:
        self.keys = keys
        self.on_cancel = on_cancel
        self._reconnect = Reconnect("cancel listener")

    async def run(self) -> None:
        pubsub = get_redis().pubsub()
        try:
            while True:
                try:
                    if not pubsub.subscribed:
                        await pubsub.subscribe(self.keys.cancel_channel)
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    self._reconnect.succeeded()
                except REDIS_ERRORS as e:
                    await self._reconnect.failed(e)
                    continue
                if message is None or message["type"] != "message":
                    continue
                try:
                    agent_id = UUID(bytes(message["data"]).decode())
                except ValueError:
                    logger.warning(
                        "cancel listener: ignoring malformed request %r", message["data"]
                    )
                    continue
                self.on_cancel(agent_id)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
