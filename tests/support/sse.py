"""A small SSE client for the tests: parses frames from an httpx streaming response."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.waiting import scaled


@dataclass
class Message:
    id: str | None = None
    event: str | None = None
    data: str = ""
    comments: list[str] = field(default_factory=list)

    @property
    def json(self) -> Any:
        return json.loads(self.data)


class EventStream:
    """The messages of one SSE response; `comments` collects keepalive comments."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.comments: list[str] = []
        self.ended = False
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 10) -> Message:
        """The next message with data; raises EOFError when the stream ended. `timeout` is
        seconds on a quiet machine, stretched by load (tests/support/waiting.py)."""
        return await asyncio.wait_for(self._next(), scaled(timeout))

    async def _next(self) -> Message:
        message = Message()
        async for line in self._lines:
            if not line:
                if message.data or message.event:
                    return message
                message = Message()
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "":
                self.comments.append(value)
            elif name == "data":
                message.data = f"{message.data}\n{value}" if message.data else value
            elif name == "id":
                message.id = value
            elif name == "event":
                message.event = value
        self.ended = True
        raise EOFError("the stream ended")

    async def take(self, count: int, timeout: float = 10) -> list[Message]:
        return [await self.next(timeout) for _ in range(count)]

    async def until(self, stop: Callable[[Message], bool], timeout: float = 10) -> list[Message]:
        """Messages up to and including the first one `stop` accepts."""
        messages: list[Message] = []
        while True:
            messages.append(await self.next(timeout))
            if stop(messages[-1]):
                return messages

    async def rest(self, timeout: float = 10) -> list[Message]:
        """Every message until the server ends the stream."""
        messages: list[Message] = []
        try:
            while True:
                messages.append(await self.next(timeout))
        except EOFError:
            return messages


@contextlib.asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None
) -> AsyncIterator[EventStream]:
    async with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, (response.status_code, await response.aread())
        assert response.headers["content-type"].startswith("text/event-stream")
        yield EventStream(response)
