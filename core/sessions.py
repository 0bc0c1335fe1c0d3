"""`AgentSession`: a conversation's history, event-sourced, for the Agents SDK's `Runner`.

A session implements the SDK's `Session` protocol (`get_items`, `add_items`, `pop_item`,
`clear_session`) without importing the SDK. Each change is one or more events in the event
log (`session.items_added`, `session.item_popped`, `session.cleared`), appended by the one
writer (`agentexec.eventlog.EventLog.append_session`) in the same Redis script that changes
the session's live items, a Redis list. So:

- reads see every change made before, by any process (read-your-writes): they read the list,
  which changes only together with the log, never waiting for the projector;
- a change is atomic and exact: the script applies it only if the session is still at the
  version its writer read, else the writer reads again and retries, so two workers popping at
  once never get the same item;
- the projector keeps the `session_items` table (`agentexec.projector.sessions`) equal to a
  fold of the events, rebuilt exactly from the archive, and `agentexec replay` shows them;
- a change made inside a task's handler is fenced by the task's lease like the handler's other
  appends: once its worker lost the task (taken over after its lease expired, as after a
  freeze), the change is discarded with a warning and the session left as it is. Outside a
  handler, changes are unfenced.

A session's events carry `agent_id = session_agent_id(session_id)` (a UUID derived from the
session id) and no task name: a session is not a task, so no activity row is made for it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec

from .broker import SessionState
from .connection import REDIS_ERRORS, Reconnect
from .credentials import redact_url
from .errors import RedisUnavailableError, SessionConflictError, SessionItemError
from .eventlog import EventLog
from .events import SessionCleared, SessionEvent, SessionItemPopped, SessionItemsAdded
from .limits import check_name
from .runtime import Runtime, current
from .tasks import running_task

__all__ = ["DEFAULT_MAX_ITEM_BYTES", "EVENT_ITEMS_BYTES", "AgentSession", "session_agent_id"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_ITEM_BYTES = 1024 * 1024
"""Largest item (its JSON, in bytes) a session stores unless told otherwise."""

EVENT_ITEMS_BYTES = 256 * 1024
"""Items of one `add_items` call are recorded in events of about this many bytes of items each
(one item per event when it is larger), appended in one script: atomically, in order."""

_NAMESPACE = uuid.UUID("0f2a7a2e-4b1d-5c8e-9a63-5e55e0c1d0a7")
_ATTEMPTS = 100
"""Tries of a change against writers that keep changing the session meanwhile."""


def session_agent_id(session_id: str) -> uuid.UUID:
    """The agent id a session's events carry: derived from `session_id`, the same everywhere."""
    return uuid.uuid5(_NAMESPACE, session_id)


def _builtin(value: Any) -> Any:
    """JSON-able form of an item that is not plain data: the SDK's pydantic models."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json", exclude_unset=True)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


_encoder = msgspec.json.Encoder(enc_hook=_builtin)


class AgentSession:
    """The conversation `session_id` (at most 255 characters), for `Runner.run(...,
    session=session)` or by hand. Any number of objects, in any processes, may share one id.

    `max_items`: the number of items from which `needs_summarization()` is True (None: never).
    Items are never dropped on their own: a window could separate a tool call from its output;
    ask for the latest N with `get_items(limit=N)` or `session_settings`.

    `max_item_bytes`: the largest item accepted, as JSON, in bytes (default 1 MiB). A larger
    one is refused with `SessionItemError`, and nothing of that call is stored: keep big
    payloads elsewhere and put a reference in the item.

    Raises `RedisUnavailableError` when Redis is unreachable, `SessionConflictError` when
    other writers kept changing the session for all of its retries.
    """

    session_settings: Any = None
    """The SDK's `SessionSettings` (its `limit` is `get_items`' default), or None."""

    def __init__(
        self,
        session_id: str,
        max_items: int | None = None,
        *,
        max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES,
        session_settings: Any = None,
        runtime: Runtime | None = None,
    ) -> None:
        self.session_id = check_name(session_id, "session id")
        if max_items is not None and max_items < 1:
            raise ValueError(f"max_items={max_items!r}: give a positive number of items, or None")
        if max_item_bytes < 1:
            raise ValueError(f"max_item_bytes={max_item_bytes!r}: give a positive byte count")
        self.max_items = max_items
        self.max_item_bytes = max_item_bytes
        self.session_settings = session_settings
        self.agent_id = session_agent_id(session_id)
        self._runtime = runtime
        self._length: int | None = None

    def __repr__(self) -> str:
        return f"AgentSession({self.session_id!r}, max_items={self.max_items!r})"

    def _log(self) -> EventLog:
        return EventLog((self._runtime or current()).broker)

    async def get_items(self, limit: int | None = None) -> list[Any]:
        """The latest `limit` items (all with None, or `session_settings.limit` when set),
        oldest first, including every change made before this call by any process."""
        if limit is None and self.session_settings is not None:
            limit = getattr(self.session_settings, "limit", None)
        if limit is not None and limit < 0:
            raise ValueError(f"limit={limit!r}: give a number of items >= 0, or None for all")
        broker = self._log().broker
        found, self._length = await self._outlasting(
            "get_items", lambda: broker.session_items(self.agent_id, limit)
        )
        return [msgspec.json.decode(item) for item in found]

    async def add_items(self, items: Sequence[Any]) -> None:
        """Append `items` (dicts, or the SDK's models), in order, after the latest item."""
        encoded = [self._encode(i, item) for i, item in enumerate(items)]
        if not encoded:
            return

        def change(state: SessionState) -> list[SessionEvent]:
            changes: list[SessionEvent] = []
            index = state.length
            for part in _parts(encoded):
                changes.append(
                    SessionItemsAdded(
                        index=index,
                        items=[msgspec.Raw(item) for item in part],
                        **self._identity(state.version + len(changes) + 1),
                        message=f"{len(part)} item(s) added at {index}",
                    )
                )
                index += len(part)
            return changes

        length, added = await self._change("add_items", "add", change, encoded)
        if not added:
            return
        logger.info("session %r: %d item(s) added (%d now)", self.session_id, len(encoded), length)

    async def pop_item(self) -> Any | None:
        """Remove and return the latest item; None when the session is empty. Atomic: of
        several callers at once, each gets a different item."""

        def change(state: SessionState) -> list[SessionEvent]:
            if state.last is None:
                return []
            index = state.length - 1
            return [
                SessionItemPopped(
                    index=index,
                    item=msgspec.Raw(state.last),
                    **self._identity(state.version + 1),
                    message=f"item {index} popped",
                )
            ]

        _, changes = await self._change("pop_item", "pop", change)
        if not changes:
            return None
        popped = changes[0]
        assert isinstance(popped, SessionItemPopped)
        logger.info("session %r: item %d popped", self.session_id, popped.index)
        return msgspec.json.decode(popped.item)

    async def clear_session(self) -> None:
        """Remove every item. The events keep them for audit (see `agentexec replay`)."""

        def change(state: SessionState) -> list[SessionEvent]:
            return [
                SessionCleared(
                    count=state.length,
                    **self._identity(state.version + 1),
                    message=f"{state.length} item(s) cleared",
                )
            ]

        _, changes = await self._change("clear_session", "clear", change)
        if not changes:
            return
        count = changes[0].count if isinstance(changes[0], SessionCleared) else 0
        logger.info("session %r: %d item(s) cleared", self.session_id, count)

    async def _change(
        self,
        what: str,
        op: str,
        change: Callable[[SessionState], list[SessionEvent]],
        items: Sequence[bytes] = (),
    ) -> tuple[int, list[SessionEvent]]:
        """Read the session, make the events of `change` from what it holds, and append them
        if nobody changed it meanwhile, else again: the length after and the events (none
        when `change` made none, or when the change was discarded as the running handler's
        worker lost its task: see `EventLog.append_session`)."""
        log = self._log()
        token = uuid.uuid4().hex
        for _ in range(_ATTEMPTS):
            state = await self._outlasting(what, lambda: log.broker.session_state(self.agent_id))
            changes = change(state)
            if not changes:
                self._length = state.length
                return state.length, []
            append = functools.partial(
                log.append_session,
                self.agent_id,
                state.version,
                op,
                token,
                changes,
                items,
                running_task(),
            )
            done = await self._outlasting(what, append)
            if done is False:  # the handler's worker lost its task: discarded, logged
                self._length = state.length
                return state.length, []
            if done is not None:
                self._length = done[0]
                return done[0], changes
            await asyncio.sleep(0)  # let the writer that won go on before reading again
        raise SessionConflictError(
            f"session {self.session_id!r}: {what} gave up after {_ATTEMPTS} tries, as other "
            "writers kept changing the session meanwhile; nothing was stored. Retry, or have "
            "fewer writers change one session at once."
        )

    async def _outlasting(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, tried again while Redis is unreachable, for up to
        `AGENTEXEC_ENQUEUE_TIMEOUT` seconds (a restart, a failover); then
        `RedisUnavailableError`. Safe for changes: see the token of `_change`."""
        runtime = self._runtime or current()
        deadline = time.monotonic() + runtime.settings.enqueue_timeout
        reconnect = Reconnect(f"session {self.session_id!r}: {what}")
        while True:
            try:
                result = await call()
            except (*REDIS_ERRORS, RedisUnavailableError) as e:
                if time.monotonic() >= deadline:
                    raise RedisUnavailableError(
                        f"session {self.session_id!r}: {what} failed: Redis at "
                        f"{redact_url(runtime.settings.redis_url)} was unreachable for "
                        f"{runtime.settings.enqueue_timeout}s (AGENTEXEC_ENQUEUE_TIMEOUT): {e}"
                    ) from e
                await reconnect.failed(e)
                continue
            reconnect.succeeded()
            return result

    async def count(self) -> int:
        """How many items the session holds now."""
        self._length = (await self._log().broker.session_state(self.agent_id)).length
        return self._length

    def needs_summarization(self) -> bool:
        """True when the session held at least `max_items` items at this object's latest
        read or change (`get_items`, `add_items`, `pop_item`, `clear_session`, `count`);
        False with `max_items` None or before any of them. Summarize, `clear_session()`, and
        add the summary back, for example."""
        return self.max_items is not None and (self._length or 0) >= self.max_items

    def _encode(self, i: int, item: Any) -> bytes:
        try:
            data = _encoder.encode(item)
        except (TypeError, ValueError, OverflowError) as e:
            raise SessionItemError(
                f"session {self.session_id!r}: item {i} ({type(item).__name__}) cannot be "
                f"stored as JSON ({e}); give dicts of JSON values, as the Agents SDK does. "
                "Nothing of this call was stored."
            ) from e
        if len(data) > self.max_item_bytes:
            raise SessionItemError(
                f"session {self.session_id!r}: item {i} is {len(data):,} bytes of JSON, above "
                f"max_item_bytes={self.max_item_bytes:,}; store large payloads elsewhere and "
                "put a reference in the item, or raise AgentSession(max_item_bytes=...). "
                "Nothing of this call was stored."
            )
        return data

    def _identity(self, version: int) -> dict[str, Any]:
        run = running_task()
        return {
            "agent_id": self.agent_id,
            "task_name": "",
            "session_id": self.session_id,
            "version": version,
            "by": run.agent_id if run is not None else None,
        }


def _parts(encoded: list[bytes]) -> list[list[bytes]]:
    """`encoded` in runs of about `EVENT_ITEMS_BYTES`, at least one item each."""
    parts: list[list[bytes]] = [[]]
    size = 0
    for item in encoded:
        if parts[-1] and size + len(item) > EVENT_ITEMS_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(item)
        size += len(item)
    return parts
