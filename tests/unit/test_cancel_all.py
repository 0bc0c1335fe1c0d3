"""`cancel_all`: a stopping process cancels its background tasks within a bound, sending the
cancel again to a task that swallowed it, and names those that would not end."""

from __future__ import annotations

import asyncio

from agentexec.connection import cancel_all


async def swallows_once() -> None:
    """Swallows the first cancel, as a client library's timeout has done."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        asyncio.current_task().uncancel()  # type: ignore[union-attr]
    await asyncio.Event().wait()


async def never_ends(stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await stop.wait()
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()  # type: ignore[union-attr]


async def test_a_swallowed_cancel_is_sent_again_and_a_task_that_never_ends_is_named() -> None:
    stop = asyncio.Event()
    plain = asyncio.create_task(asyncio.Event().wait())
    swallowing = asyncio.create_task(swallows_once())
    stubborn = asyncio.create_task(never_ends(stop))
    await asyncio.sleep(0)  # each task at its first await
    try:
        left = await cancel_all([plain, swallowing, stubborn], timeout=1.5)
        assert left == {stubborn}
        assert plain.cancelled() and swallowing.cancelled()
    finally:
        stop.set()
        await stubborn
