"""The feeds' response: every send to the client bounded in time, and the connection of a
client that does not read aborted, so that it gives back its socket and buffers at once.

A client that stops reading (a stuck browser tab, a hostile script) first fills the
kernel's buffers, then the server's; from there each send waits. sse-starlette bounds the
sends of events and keepalives, but not the last one that ends the stream, and a timeout
ends the response with an exception on which the ASGI server closes the connection
*gracefully*: asyncio's `transport.close()` waits for the write buffer to drain, which for a
client that never reads is forever. The socket, its buffers and the request's objects then
stay, and every stuck client adds to them.

Here every send, the last included, is bounded by `send_timeout`; past it the connection is
aborted (reset), which releases everything at once. Aborting needs the server's transport:
`abortable(app)`, the outermost layer of `create_app`'s app, finds it for uvicorn (the
server `agentexec api` runs). Elsewhere the response ends with the timeout's exception and
the server closes the connection as it does.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

import anyio
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["TRANSPORT", "FeedResponse", "OpenFeeds", "SlowClient", "abortable"]

logger = logging.getLogger(__name__)

TRANSPORT = "agentexec.transport"
"""The scope key under which `abortable` leaves the connection's transport."""


class SlowClient(Exception):
    """A send to the client did not complete within the send timeout."""


def abortable(app: ASGIApp) -> ASGIApp:
    """`app`, with each HTTP request's transport in its scope, so that a feed can abort the
    connection of a client that stopped reading. Wrap the outermost app (the ASGI server's
    own `send` is needed); harmless where the server exposes no transport."""

    async def with_transport(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # uvicorn's `send` is a method of its request cycle, which holds the transport.
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if callable(getattr(transport, "abort", None)):
                scope[TRANSPORT] = transport
        await app(scope, receive, send)

    return with_transport


class FeedResponse(EventSourceResponse):
    """An `EventSourceResponse` whose every send completes within `send_timeout` seconds, or
    the client is cut off. `send_buffer`: the connection's kernel send buffer in bytes (None:
    the system's, which grows to megabytes), so that a stuck client holds little and is
    found out soon. `closed` is called once the response ends, however it ends."""

    def __init__(
        self,
        content: Any,
        *,
        send_timeout: float,
        send_buffer: int | None,
        closed: Callable[[], None],
        **options: Any,
    ) -> None:
        super().__init__(content, send_timeout=None, **options)
        self.deadline = send_timeout
        self.send_buffer = send_buffer
        self.closed = closed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = scope.get(TRANSPORT)
        if transport is not None and self.send_buffer is not None:
            _set_send_buffer(transport, self.send_buffer)

        async def bounded(message: Message) -> None:
            with anyio.move_on_after(self.deadline) as timer:
                await send(message)
            if timer.cancelled_caught:
                raise SlowClient(f"a send took longer than {self.deadline} s")

        try:
            await self._respond(scope, receive, bounded)
        finally:
            self.closed()

    async def _respond(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = scope.get(TRANSPORT)
        try:
            await super().__call__(scope, receive, send)
        except* SlowClient:
            if transport is None:
                raise
            logger.info(
                "feed to %s: the client took no data for %s s; connection aborted",
                _peer(scope),
                self.deadline,
            )
            transport.abort()
            # The server learns of the lost connection on the next loop iteration; seeing
            # it, it does not report the unfinished response as an error.
            await asyncio.sleep(0)


def _set_send_buffer(transport: Any, size: int) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    except OSError as e:  # not a TCP socket, or the platform refuses: keep its buffer
        logger.debug("feed: cannot set the send buffer: %s", e)


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "a client"


class OpenFeeds:
    """The feeds one router serves at once, at most `limit`."""

    SETTING = "AGENTEXEC_API_MAX_FEEDS"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self._warned = False
        self._trim: asyncio.TimerHandle | None = None

    @property
    def full(self) -> bool:
        return self.count >= self.limit

    def take(self) -> bool:
        """Count one more feed; False when the limit is reached."""
        if self.full:
            return False
        self.count += 1
        return True

    def release(self) -> None:
        self.count -= 1
        if self.count < self.limit:
            self._warned = False
        if _malloc_trim is not None:
            # The buffers of many clients cut off at once are freed, but the C allocator
            # keeps them: give them back to the system a second after the last close.
            if self._trim is not None:
                self._trim.cancel()
            self._trim = asyncio.get_running_loop().call_later(1.0, _malloc_trim, 0)

    def refusal(self) -> JSONResponse:
        """503: no more feeds here; the client retries later (or elsewhere)."""
        if not self._warned:  # once per episode: a flood of refusals must not flood the log
            self._warned = True
            logger.warning(
                "API: %d feeds open, the limit (%s); more are refused", self.count, self.SETTING
            )
        return JSONResponse(
            {
                "detail": f"this API process serves its limit of {self.limit} live feeds; "
                f"retry later, or raise the limit ({self.SETTING}, or router(max_feeds=...)) "
                "or run more API processes",
                "limit": self.limit,
                "setting": self.SETTING,
            },
            status_code=503,
            headers={"Retry-After": "5"},
        )


def _load_malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None elsewhere."""
    try:
        import ctypes

        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
        return trim
    except (OSError, AttributeError):  # not glibc: nothing to trim with
        return None


_malloc_trim = _load_malloc_trim()
