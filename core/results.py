"""Task results: how a worker stores an outcome and how `get_result` and `gather` wait for it.

A worker stores the outcome under the task's result key (expiring after `AGENTEXEC_RESULT_TTL`)
and publishes it on the task's channel in the same transaction. A waiter subscribes to the
channel first and reads the key once the subscription is confirmed, so it is woken by the
completion itself and cannot miss one that happened before it started waiting. Each event loop
shares one pub/sub connection for all its waiters.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import weakref
from typing import Any
from uuid import UUID

import msgspec
import redis
import redis.asyncio as aioredis
from pydantic import BaseModel

from . import tasks
from .connection import Reconnect, ready, spawn, stop_if_cancelled
from .errors import TaskFailedError
from .events import NULL, Ending
from .limits import recordable
from .runtime import Runtime, current
from .tasks import Task

logger = logging.getLogger(__name__)


class Outcome(msgspec.Struct, frozen=True, omit_defaults=True):
    """How a task ended, as stored under its result key."""

    status: Ending
    task_name: str
    result: msgspec.Raw = NULL
    error: str | None = None
    attempts: int = 1
    """How many attempts the task made (for an ERROR outcome: all of them)."""
    result_type: str | None = None
    """`module:QualName` of the Pydantic model the handler returned (see `result_type_of`)."""

    def __post_init__(self) -> None:
        if not isinstance(self.status, Ending):  # given as its text, `Outcome("complete", ...)`
            msgspec.structs.force_setattr(self, "status", Ending(self.status))


outcome_encoder = msgspec.json.Encoder()


def encode_outcome(outcome: Outcome) -> bytes:
    """The outcome's JSON, its error made `recordable` like an event's (bounded, storable,
    credentials redacted): `get_result` raises with the text the read model shows."""
    if outcome.error:
        error = recordable(outcome.error)
        if error is not outcome.error:
            outcome = msgspec.structs.replace(outcome, error=error)
    return outcome_encoder.encode(outcome)


_outcome_decoder = msgspec.json.Decoder(Outcome)


class _Waiter:
    """The pub/sub listener of one event loop and the futures waiting on it.

    One task at a time (the flush) changes subscriptions and repairs the connection; the
    listener only reads. Any error of either, whatever its type, breaks the pub/sub
    connection: the flush then drops it, backs off, opens a new one and subscribes every
    waited-on channel again, whose confirmations make each waiter read its result key (a
    result stored during the outage is found there). redis-py's own reconnect of a pub/sub
    connection is never relied on: after a server restart it can fail with errors that are
    not connection errors.
    """

    def __init__(self, runtime: Runtime, client: aioredis.Redis) -> None:
        self._client = client
        self._keys = runtime.keys
        self._pubsub = client.pubsub()
        self._futures: dict[bytes, set[asyncio.Future[bytes]]] = {}
        self._subscribe: set[bytes] = set()
        self._unsubscribe: set[bytes] = set()
        self._flushing: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._broken: BaseException | None = None
        self._reconnect = Reconnect("result waiter")
        from .broker import Broker  # the Broker's consumer verbs encode outcomes from here

        self._broker = Broker(runtime, client)

    async def wait(self, agent_id: UUID) -> bytes:
        channel = self._keys.result_channel(agent_id).encode()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        waiting = self._futures.get(channel)
        if waiting is None:
            waiting = self._futures[channel] = set()
            self._subscribe.add(channel)
            self._unsubscribe.discard(channel)
            self._schedule_flush()
        waiting.add(future)
        try:
            return await future
        finally:
            waiting.discard(future)
            if not waiting and self._futures.get(channel) is waiting:
                del self._futures[channel]
                self._subscribe.discard(channel)
                self._unsubscribe.add(channel)
                self._schedule_flush()

    def _schedule_flush(self) -> None:
        # Subscriptions made in one loop iteration go out as one SUBSCRIBE command.
        if self._flushing is None or self._flushing.done():
            self._flushing = spawn(self._flush(), "result waiter")

    def _break(self, error: BaseException, pubsub: aioredis.client.PubSub) -> None:
        if pubsub is self._pubsub and self._broken is None:
            self._broken = error
            self._schedule_flush()

    async def _flush(self) -> None:
        await asyncio.sleep(0)
        while self._broken or self._subscribe or self._unsubscribe or self._listener is None:
            if self._broken is not None:
                await self._reset()
            pubsub = self._pubsub
            subscribe, self._subscribe = self._subscribe, set()
            unsubscribe, self._unsubscribe = self._unsubscribe, set()
            try:
                if self._listener is None:
                    await ready(self._client)
                    await pubsub.subscribe(self._keys.waiter_channel)
                    self._listener = spawn(self._listen(pubsub), "result listener")
                if subscribe:
                    await pubsub.subscribe(*subscribe)
                if unsubscribe:
                    await pubsub.unsubscribe(*unsubscribe)
                if self._broken is None:
                    self._reconnect.succeeded()
            except Exception as e:
                self._subscribe |= {c for c in subscribe if c in self._futures}
                self._unsubscribe |= {c for c in unsubscribe if c not in self._futures}
                self._break(e, pubsub)

    async def _reset(self) -> None:
        """Drop the broken connection after a backoff; subscribe everything again."""
        error, self._broken = self._broken, None
        assert error is not None
        await self._reconnect.failed(error)
        old, self._pubsub = self._pubsub, self._client.pubsub()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
        self._subscribe = set(self._futures)
        self._unsubscribe = set()
        try:
            await old.aclose()  # type: ignore[no-untyped-call]
        except Exception as e:  # the connection is broken already: nothing to release
            logger.debug("result waiter: closing the broken connection: %r", e)

    async def _listen(self, pubsub: aioredis.client.PubSub) -> None:
        while True:
            try:
                message = await pubsub.get_message(timeout=None)
            except Exception as e:
                self._break(e, pubsub)
                return
            stop_if_cancelled()  # a cancel redis-py swallowed in `get_message`
            if message is None:
                continue
            kind, channel = message["type"], message["channel"]
            if kind == "message":
                self._resolve(channel, bytes(message["data"]))
            elif kind == "subscribe" and channel in self._futures:
                # Subscribed: a result stored before now is in the key, any later one comes
                # as a message. Read the key without holding up the listener.
                spawn(self._check_stored(channel, pubsub), "result check")

    async def _check_stored(self, channel: bytes, pubsub: aioredis.client.PubSub) -> None:
        agent_id = channel[len(self._keys.result_channel_prefix) :].decode()
        try:
            data = await self._broker.result(agent_id)
        except Exception as e:
            # Subscribing again after the reconnect checks again.
            self._break(e, pubsub)
            return
        if data is not None:
            self._resolve(channel, data)

    def _resolve(self, channel: bytes, data: bytes) -> None:
        for future in self._futures.get(channel, ()):
            if not future.done():
                future.set_result(data)


_waiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], _Waiter]] = (
    weakref.WeakKeyDictionary()
)


def _waiter(runtime: Runtime) -> _Waiter:
    per_loop = _waiters.setdefault(asyncio.get_running_loop(), {})
    key = (runtime.settings.redis_url, runtime.keys.prefix)
    waiter = per_loop.get(key)
    if waiter is None:
        waiter = per_loop[key] = _Waiter(runtime, runtime.redis())
    return waiter


_SCRIPTS = frozenset({"__main__", "__mp_main__"})
"""Names a script's module has: another process's `__main__` is another script."""


def result_type_of(value: object) -> str | None:
    """`module:QualName` of `value`'s class when it is a Pydantic model a module defines at
    its top level or in a class (so that another process can import it), else None."""
    cls = type(value)
    if (
        not isinstance(value, BaseModel)
        or "<locals>" in cls.__qualname__
        or cls.__module__ in _SCRIPTS
    ):
        return None
    return f"{cls.__module__}:{cls.__qualname__}"


def _model_class(path: str) -> type[BaseModel] | None:
    """The model class `path` (`module:QualName`) names, importing its module if need be;
    None when it cannot be imported or is no Pydantic model.

    Importing runs the module's top-level code: whoever can write this Redis namespace can
    name any module importable here. See docs/tasks.md, "Results in another process"."""
    module_name, _, qualname = path.partition(":")
    try:
        module = sys.modules.get(module_name) or importlib.import_module(module_name)
        found: Any = module
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception as e:  # not importable here: the result stays decoded JSON
        logger.debug("result type %s is not importable here: %r", path, e)
        return None
    return found if isinstance(found, type) and issubclass(found, BaseModel) else None


def _load(outcome: Outcome, agent_id: UUID, queue_name: str | None) -> Any:
    if outcome.status is not Ending.COMPLETE:
        raise TaskFailedError(
            agent_id, outcome.task_name, outcome.error or outcome.status, outcome.attempts
        )
    value = msgspec.json.decode(outcome.result)
    definitions = tasks.known(outcome.task_name)
    if queue_name is not None:
        definitions = [d for d in definitions if d.queue_name == queue_name]
    # A name registered on several queues with different return types could be any of them.
    if len({d.return_type for d in definitions}) == 1:
        return definitions[0].load_result(value)
    model = _model_class(outcome.result_type) if outcome.result_type else None
    if model is not None:
        return model.model_validate(value)
    return value


async def get_result(task: Task | UUID | str, timeout: float | None = None) -> Any:
    """Wait for a task's result and return it.

    Returns the handler's return value, validated into its return annotation when the handler
    is registered in this process. Elsewhere, a Pydantic model the handler returned comes back
    as an instance of its class when that class can be imported here (its `module:QualName`
    is stored with the result); any other value as decoded JSON (also when the task name is
    registered with different return types on several queues and `task` is an agent id).
    Wakes on the completion itself. Raises `TaskFailedError` when the task ended in error or
    was canceled, and `TimeoutError` after `timeout` seconds (None: wait as long as it takes).
    Results stay available for `AGENTEXEC_RESULT_TTL` seconds after the task ends.
    """
    agent_id = task.agent_id if isinstance(task, Task) else UUID(str(task))
    queue_name = task.queue_name if isinstance(task, Task) else None
    try:
        async with asyncio.timeout(timeout):
            data = await _waiter(current()).wait(agent_id)
    except TimeoutError:
        raise TimeoutError(f"no result for agent {agent_id} after {timeout}s") from None
    except redis.RedisError as e:  # pragma: no cover - wrapped for the public API
        raise ConnectionError(f"get_result: Redis error for agent {agent_id}: {e}") from e
    return _load(_outcome_decoder.decode(data), agent_id, queue_name)


async def gather(*tasks_: Task, timeout: float | None = None) -> list[Any]:
    """Wait for several tasks; return their results in the order given.

    Fails fast: the first task that fails raises `TaskFailedError` and the other waits are
    dropped (the tasks themselves keep running). `timeout` bounds the whole wait.
    """
    waits = [asyncio.ensure_future(get_result(t)) for t in tasks_]
    try:
        async with asyncio.timeout(timeout):
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_EXCEPTION)
    except TimeoutError:
        raise TimeoutError(f"gather: {len(tasks_)} tasks not all done after {timeout}s") from None
    finally:
        for w in waits:
            w.cancel()
    for w in waits:
        if w in done and w.exception() is not None:
            raise w.exception()  # type: ignore[misc]
    return [w.result() for w in waits]
