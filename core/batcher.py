"""`Batcher`: commands issued in one event-loop iteration go to Redis in one pipeline.

Callers await their own reply as if they had sent the command alone; under load hundreds of
commands share a round trip, and an idle caller waits no longer than one loop iteration.
Commands of one caller keep their order because a caller awaits each reply before sending
the next. Scripts are sent with EVALSHA and loaded again when Redis answers NOSCRIPT (after a
restart or a new server).

On a Redis Cluster (`agentexec.cluster`) the keys of one command are in one slot (one
partition's, see `agentexec.partitions`): the commands of one loop iteration are batched per
slot of their first key, and each batch goes to the primary of its slot, concurrently; a
batch that meets a redirection or a lost node has the client refresh its map of slots for
the next one.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from .cluster import refresh_slots
from .connection import get_redis
from .scripts import Script

_MAX_BATCH = 512
_Pending = tuple[tuple[Any, ...], Script | None, asyncio.Future[Any]]
"""A command waiting for its batch: the command, its script (to load again on NOSCRIPT), and
its caller's future."""


class Batcher:
    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._pending: list[_Pending] = []
        self._scheduled = False
        self._flushes: set[asyncio.Task[None]] = set()

    async def execute(self, *args: Any) -> Any:
        return await self._submit(args, None)

    async def run_script(self, script: Script, keys: list[Any], args: list[Any]) -> Any:
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        return await self._submit(command, script)

    def _submit(self, command: tuple[Any, ...], script: Script | None) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((command, script, future))
        if not self._scheduled:
            # The task's first step runs in the next loop iteration, after every caller of
            # this one has submitted.
            self._scheduled = True
            self._keep(loop.create_task(self._flush_pending()))
        return future

    def _keep(self, task: asyncio.Task[None]) -> None:
        # The loop holds tasks weakly.
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush_pending(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        loop = asyncio.get_running_loop()
        batches = [
            part[i : i + _MAX_BATCH]
            for part in self._by_slot(pending)
            for i in range(0, len(part), _MAX_BATCH)
        ]
        for batch in batches[1:]:
            self._keep(loop.create_task(self._flush(batch)))
        await self._flush(batches[0])

    def _by_slot(self, pending: list[_Pending]) -> list[list[_Pending]]:
        """`pending` split by the slot of each command's first key on a Redis Cluster (in
        order within each slot), else as it is."""
        if not isinstance(self._client, RedisCluster) or len(pending) < 2:
            return [pending]
        slots: dict[int, list[_Pending]] = {}
        for item in pending:
            slots.setdefault(key_slot(_encoded(_first_key(item[0]))), []).append(item)
        return list(slots.values())

    async def _flush(self, batch: list[_Pending]) -> None:
        try:
            replies = await self._send([command for command, _, _ in batch])
            missing = {
                s.sha: s
                for (_, s, _), r in zip(batch, replies, strict=True)
                if s is not None and _is_noscript(r)
            }
            if missing:
                for script in missing.values():
                    await self._client.script_load(script.source)
                retry = [
                    i for i, (_, s, _) in enumerate(batch) if s is not None and s.sha in missing
                ]
                again = await self._send([batch[i][0] for i in retry])
                for i, reply in zip(retry, again, strict=True):
                    replies[i] = reply
        except BaseException as e:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        for (_, _, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send `commands` in one write on one pooled connection and read their replies;
        error replies come back as exceptions. Like a redis-py pipeline without its per-command
        bookkeeping, and with one deadline for the batch instead of a timer per reply."""
        client: Any = self._client
        if isinstance(client, RedisCluster):
            return await self._send_to_node(client, commands)
        pool = client.connection_pool
        try:
            connection = await pool.get_connection()
        except redis.RedisError:
            raise
        except Exception as e:
            raise _outage(e) from e
        try:
            return await self._exchange(connection, commands)
        finally:
            await pool.release(connection)

    async def _send_to_node(
        self, client: RedisCluster, commands: list[tuple[Any, ...]]
    ) -> list[Any]:
        try:
            await client.initialize()
            node = client.get_node_from_key(_first_key(commands[0]))
            assert node is not None
            connection = node.acquire_connection()
        except redis.RedisError:
            raise
        except Exception as e:
            raise _outage(e) from e
        try:
            replies = await self._exchange(connection, commands)
        except redis.ConnectionError:
            # A node down (failed over?): learn the slots again before the next batch.
            await refresh_slots(client)
            raise
        finally:
            node.release(connection)
        if any(
            isinstance(r, (redis.exceptions.AskError, redis.exceptions.ClusterDownError))
            for r in replies
        ):
            await refresh_slots(client)
        return replies

    async def _exchange(self, connection: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
        try:
            await connection.send_packed_command(connection.pack_commands(commands))
            replies: list[Any] = []
            try:
                async with asyncio.timeout(connection.socket_timeout):
                    for _ in commands:
                        try:
                            replies.append(await connection.read_response(timeout=math.inf))
                        except redis.ResponseError as e:
                            replies.append(e)
            except TimeoutError:
                raise redis.TimeoutError(
                    f"no reply from Redis within {connection.socket_timeout}s"
                ) from None
            return replies
        except BaseException as e:
            # Replies of this batch may still be on their way: the connection cannot be reused.
            await connection.disconnect(nowait=True)
            if isinstance(e, Exception) and not isinstance(e, redis.RedisError):
                raise _outage(e) from e
            raise


def _first_key(command: tuple[Any, ...]) -> Any:
    """The first key of a batched command: EVALSHA sha numkeys key..., or COMMAND key ...
    (every script agentexec runs takes at least one key)."""
    if str(command[0]).upper() == "EVALSHA":
        return command[3]
    return command[1]


def _encoded(key: Any) -> bytes:
    return key if isinstance(key, bytes) else str(key).encode()


def _outage(error: Exception) -> redis.ConnectionError:
    """What callers see when the client library fails on a broken connection (seen after a
    server restart: AttributeError, RuntimeError): an outage, retried as one, not a crash.
    The command may or may not have run, as after a lost reply."""
    return redis.ConnectionError(
        f"the Redis client failed ({type(error).__name__}: {error}); connection dropped"
    )


def _is_noscript(reply: Any) -> bool:
    return isinstance(reply, redis.exceptions.NoScriptError)


_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, Batcher]] = (
    weakref.WeakKeyDictionary()
)


def get_batcher(client: aioredis.Redis | None = None) -> Batcher:
    """The batcher of the running loop for `client` (default: `get_redis()`)."""
    client = client or get_redis()
    per_loop = _batchers.setdefault(asyncio.get_running_loop(), {})
    batcher = per_loop.get(id(client))
    if batcher is None:
        batcher = per_loop[id(client)] = Batcher(client)
    return batcher
