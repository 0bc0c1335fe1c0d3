"""`Projector`: the only writer of the read model. Reads the event log, applies it in batches.

Each batch is one SQL transaction holding the checkpoint move, the archive rows and the
read-model changes; entries are acknowledged in Redis only after it commits. A crash at any
point leaves entries pending (not acknowledged), and the next owner re-reads them; those at or
below the checkpoint are skipped, so nothing is applied twice or lost. A batch that fails is
read again, whatever the error; one the database refuses is split (see `refusals`), and
entries below the checkpoint that the archive lacks are appended again above it (`floor`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from agentexec import events, tracing
from agentexec.activity import models
from agentexec.connection import REDIS_ERRORS, Reconnect
from agentexec.errors import (
    BrokerError,
    ConfigurationError,
    EventDecodeError,
    FencedError,
    GroupMissingError,
)
from agentexec.eventlog import Recorded
from agentexec.limits import check_name
from agentexec.positions import Position
from agentexec.runtime import Runtime, current
from agentexec.streams import PROJECTOR_GROUP

from . import checkpoints, floor, projection, refusals, restore
from .archive import Archive
from .ownership import Entries, Lease
from .retention import LogRetention

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from agentexec.metrics import TaskMetrics

__all__ = ["Projector", "commit"]

logger = logging.getLogger(__name__)


class Projector:
    """Projects the event log of `runtime`'s namespace (default: the edge's, see
    `agentexec.runtime.current`) into `engine`.

    Reads up to `batch_size` entries at a time. Only one projector of a namespace works at a
    time; others wait and take over within `lease_seconds` when it dies.

    With a Prometheus `registry`, the projector counts in it the tasks and attempts it
    commits, with their queue waits and run durations, and registers the gauges of its lag and
    of the dead letters (`agentexec.metrics`, docs/metrics.md).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        batch_size: int = 5000,
        lease_seconds: float = 10.0,
        name: str | None = None,
        runtime: Runtime | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.runtime = runtime = runtime or current()
        settings = runtime.settings
        if models.TABLE_PREFIX != settings.table_prefix:
            raise ConfigurationError(
                f"AGENTEXEC_TABLE_PREFIX is {settings.table_prefix!r} but the models were built "
                f"with {models.TABLE_PREFIX!r}; set it before agentexec.activity.models is "
                "first imported (before using ax.Base)."
            )
        if batch_size < 1 or lease_seconds <= 0:
            raise ConfigurationError(
                f"Projector(batch_size={batch_size!r}, lease_seconds={lease_seconds!r}): "
                "use a batch size >= 1 and a lease longer than 0 seconds."
            )
        self.engine = engine
        self.keys = runtime.keys
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.name = (
            check_name(name, "projector name")  # the checkpoint's owner column
            if name
            else f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        )
        logger.info(
            "projector %s: read model at %s",
            self.name,
            engine.url.render_as_string(hide_password=True),
        )
        self.position = checkpoints.ORIGIN
        """The checkpoint as this projector last committed or read it."""
        self.applied = 0
        """Events applied by this projector since it started."""
        self.retention = LogRetention(settings.log_hot_window)
        """Trims the log below the checkpoint after commits (docs/projector.md)."""
        self._lease: Lease | None = None
        self._owner = False
        self._pending = True
        self._last_seen = checkpoints.ORIGIN
        self._restore_due = False
        self._reconnect = Reconnect(f"projector {self.name}")
        self._lease_outage = Reconnect(f"projector {self.name}: lease renewal")
        self._db_down_since: float | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._metrics: TaskMetrics | None = None
        if registry is not None:
            from agentexec.metrics import LogCollector, TaskMetrics

            self._metrics = TaskMetrics(registry)
            registry.register(LogCollector(runtime))

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Project until `stop` is set (forever when None). Survives Redis and database
        outages; an entry that is not a valid event is dead-lettered and skipped."""
        stop = stop or asyncio.Event()
        await asyncio.to_thread(self.check_tables)
        keeper = asyncio.create_task(self._keep_lease(stop))
        logger.info("projector %s: started on %s", self.name, self.keys.events)
        try:
            while not stop.is_set():
                await self._turn(stop, block=True)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await self._step_down()
            logger.info("projector %s: stopped at %s", self.name, self.position)

    def check_tables(self) -> None:
        """Raise `ConfigurationError` naming the fix when the read model's tables are missing.

        A database that cannot be reached now is left to the projector's loop, which waits
        for it."""
        from sqlalchemy import inspect
        from sqlalchemy.exc import SQLAlchemyError

        try:
            present = set(inspect(self.engine).get_table_names())
        except SQLAlchemyError as e:
            logger.warning("projector %s: cannot inspect the database yet (%s)", self.name, e)
            return
        missing = [t.name for t in models.Base.metadata.sorted_tables if t.name not in present]
        if missing:
            url = self.engine.url.render_as_string(hide_password=True)
            raise ConfigurationError(
                f"the read model's tables {', '.join(missing)} are missing in {url}. Create "
                "them with `agentexec projector --create-tables`, "
                "`ax.Base.metadata.create_all(engine)`, or your Alembic migrations "
                "(`alembic upgrade heads`; see docs/activity.md)."
            )

    def start(self) -> None:
        """Run in the background of the running event loop until `stop()`."""
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.run(self._stop))

    async def stop(self, drain: float = 5.0) -> None:
        """Stop a projector started with `start()`, after applying what was appended up to
        now (for at most `drain` seconds)."""
        if self._task is None:
            return
        self._stop.set()
        await self._task
        self._task = None
        with contextlib.suppress(TimeoutError):
            await self.catch_up(timeout=drain)

    async def catch_up(self, timeout: float = 30.0) -> int:
        """Apply everything appended so far, then return how many events were applied.

        Waits for the lease when another projector holds it; raises TimeoutError after
        `timeout` seconds.
        """
        start = self.applied
        stop = asyncio.Event()
        async with asyncio.timeout(timeout):
            while True:
                if await self._turn(stop, block=False) == "idle":
                    break
        await self._step_down()
        return self.applied - start

    async def _turn(self, stop: asyncio.Event, *, block: bool) -> str:
        """One step: take ownership, or read and apply one batch. Returns what happened."""
        try:
            if not self._owner and not await self._take_over():
                await _wait(stop, self.lease_seconds / 4)
                return "waiting"
            result = await self._step(stop, block=block)
            self._reconnect.succeeded()
            return result
        except REDIS_ERRORS as e:
            # A read whose reply was lost delivered its entries all the same: they are
            # pending to us, and must be read again before anything newer is committed.
            self._pending = True
            await self._reconnect.failed(e)
        except GroupMissingError:
            logger.warning("projector %s: consumer group gone; recreating it", self.name)
            self._owner = False
        except BrokerError as e:
            # Any other refusal (a script error, a busy server): an outage, not an exit.
            self._pending = True
            await self._reconnect.failed(e)
            return "retry"
        except SQLAlchemyError as e:
            await self._database_failed(e, stop)
        except Exception:
            # The consume loop's boundary: log, back off, and go on.
            logger.exception("projector %s: unexpected error; retrying", self.name)
            await _wait(stop, 1.0)
        return "retry"

    async def _take_over(self) -> bool:
        client = self.runtime.redis()
        broker = self.runtime.broker
        if self._lease is None or self._lease.client is not client:
            self._lease = broker.log_lease(self.name, self.lease_seconds)
        if not await self._lease.acquire():
            return False
        self.position = await asyncio.to_thread(self._load_checkpoint)
        self._database_recovered()
        delivered = await broker.projector_delivered()
        if delivered is None and self.position != checkpoints.ORIGIN:
            # The group goes only with the stream: Redis lost the log this database was
            # built from, and with it the queued tasks and results.
            logger.warning(
                "projector %s: %s has no %r group although the checkpoint is at %s: Redis "
                "lost its data; queued tasks and results will be restored from the archive",
                self.name,
                self.keys.events,
                PROJECTOR_GROUP,
                self.position,
            )
            await broker.mark_restore_due(self.position)
        if self.position != checkpoints.ORIGIN and (
            delivered is None or checkpoints.after(self.position, delivered)
        ):
            await self._lift(after=delivered)
        await broker.ensure_log_group(self.position)
        self._last_seen = delivered or self.position
        self._restore_due = await broker.restore_due() is not None
        self._owner, self._pending = True, True
        logger.info("projector %s: owns %s from %s", self.name, self.keys.events, self.position)
        return True

    async def _step(self, stop: asyncio.Event, *, block: bool) -> str:
        assert self._lease is not None
        cursor = "0" if self._pending else ">"
        entries = await self._lease.read(self.keys.events, PROJECTOR_GROUP, cursor, self.batch_size)
        if entries is None:
            logger.warning("projector %s: lost ownership of %s", self.name, self.keys.events)
            self._owner = False
            return "lost"
        if not entries:
            if self._pending:
                self._pending = False
                return "pending done"
            if self._restore_due:
                # Caught up first: a task that started since Redis came back is RUNNING in
                # the read model by now, and is not queued again.
                await self._restore()
                return "restored"
            if block:
                await self._wait_for_entries(stop)
            return "idle"
        self._last_seen = checkpoints.later(self._last_seen, entries[-1][0])
        # Until they are acknowledged, whatever fails: read them again before anything newer.
        pending, self._pending = self._pending, True
        if await self._apply(entries, stop):
            self._pending = pending
        return "applied"

    async def _apply(self, entries: Entries, stop: asyncio.Event) -> bool:
        """Commit and acknowledge `entries`; False when they are left pending (stopping, or
        ownership lost during a database outage) for the next read."""
        batch: list[Recorded] = []
        undecodable: list[tuple[str, dict[bytes, bytes], str]] = []
        for entry_id, fields in entries:
            if fields is None:
                continue  # deleted from the stream while pending
            try:
                batch.append(Recorded.from_entry(entry_id, fields))
            except EventDecodeError as e:
                undecodable.append((entry_id, fields, str(e)))
        last = entries[-1][0]
        start = checkpoints.parse_id(self.position)
        stale = [a.event_id for a in batch if a.position <= start]
        if stale:
            # Delivered again after a crash, and archived; or appended below the checkpoint
            # after Redis lost the log, and never seen: those are lifted above it.
            known = await asyncio.to_thread(Archive(self.engine).archived, stale)
            lifted = await self._lift(ids=[i for i in stale if i not in known])
            batch = [a for a in batch if a.event_id not in lifted]
        fresh = [u for u in undecodable if checkpoints.after(u[0], self.position)]
        if fresh:
            await self._dead_letter(fresh)
        parts = [_Part(batch, last)]
        while parts:
            part = parts[0]
            try:
                started = time.time_ns()
                position = self.position
                transitions: list[projection.Transition] | None = (
                    None if self._metrics is None else []
                )
                applied = await asyncio.to_thread(
                    commit,
                    self.engine,
                    self.keys.events,
                    self.name,
                    position,
                    part.batch,
                    part.last,
                    transitions,
                )
                if self._metrics is not None and transitions:
                    self._metrics.observe(transitions)
                self.applied += applied
                tracing.projected(part.batch, started, self.name)
                self.position = checkpoints.later(part.last, position)
                self._database_recovered()
                parts.pop(0)
            except FencedError as e:
                logger.warning("projector %s: %s", self.name, e)
                self.position = e.position or checkpoints.ORIGIN
            except Exception as e:  # the batch's boundary: nothing is skipped, whatever failed
                if part.batch and refusals.refused(e):
                    parts[:1] = await self._isolate(part, e, dict(entries))
                    continue
                await self._database_failed(e, stop)
                if stop.is_set() or not self._owner:
                    return False
        await self.runtime.broker.ack_log([i for i, _ in entries])
        await self.retention.after_commit(self.runtime.broker, self.position)
        return True

    async def _isolate(
        self, part: _Part, error: Exception, fields: dict[str, dict[bytes, bytes] | None]
    ) -> list[_Part]:
        """What to commit instead of `part`, which the database refused: its halves; for a
        single event, its safe form, else nothing (the event is dead-lettered)."""
        reason = _reason(error)
        if len(part.batch) > 1:
            if part.top:
                logger.warning(
                    "projector %s: the database refused the batch up to %s (%s); splitting it "
                    "to find the event it refuses",
                    self.name,
                    part.last,
                    reason,
                )
            middle = len(part.batch) // 2
            return [
                _Part(part.batch[:middle], part.batch[middle - 1].event_id, top=False),
                _Part(part.batch[middle:], part.last, top=False),
            ]
        applied = part.batch[0]
        safe = None if part.safe else refusals.storable(applied)
        if safe is not None:
            logger.warning(
                "projector %s: the database refused event %s (%s); stored in a safe form",
                self.name,
                applied.event_id,
                reason,
            )
            return [_Part([safe], part.last, top=False, safe=True)]
        entry = fields.get(applied.event_id) or {events.EVENT_FIELD: applied.data}
        await self._dead_letter([(applied.event_id, entry, f"the database refused it: {reason}")])
        return [_Part([], part.last, top=False)]

    async def _lift(self, *, after: str | None = None, ids: list[str] | None = None) -> set[str]:
        """Keep the log's ids above the checkpoint (see `floor`); returns the ids of the
        entries appended again above it (their originals are deleted)."""
        if ids is not None and not ids:
            return set()
        raised, moved = await floor.lift(
            self.runtime.broker, self.engine, self.position, after=after, ids=ids
        )
        if raised:
            logger.warning(
                "projector %s: the last id of %s was below the checkpoint %s (Redis lost the "
                "log, and its clock is behind the archived ids); raised it to the checkpoint, "
                "so that new events get ids above it",
                self.name,
                self.keys.events,
                self.position,
            )
        if moved:
            logger.warning(
                "projector %s: %d entries of %s arrived below the checkpoint %s and are not in "
                "the archive; appended them again above it, in their order (%s became %s%s)",
                self.name,
                len(moved),
                self.keys.events,
                self.position,
                moved[0][0],
                moved[0][1],
                ", ..." if len(moved) > 1 else "",
            )
        return {old for old, _ in moved}

    async def _restore(self) -> None:
        broker = self.runtime.broker
        lost_at = await broker.restore_due() or self.position
        found = await restore.restore(self.engine, self.runtime, self.name, lost_at)
        await broker.restored()
        self._restore_due = False
        logger.info(
            "projector %s: restored from the archive: %d queued tasks queued again, %d running "
            "ones queued to run again if their worker dies, %d results",
            self.name,
            len(found.queued),
            len(found.running),
            len(found.results),
        )

    def _load_checkpoint(self) -> str:
        with self.engine.begin() as conn:
            return checkpoints.load(conn, self.keys.events, self.name)

    async def _dead_letter(self, undecodable: list[tuple[str, dict[bytes, bytes], str]]) -> None:
        for entry_id, _, reason in undecodable:
            logger.error(
                "projector %s: dead-lettering %s %s: %s",
                self.name,
                self.keys.events,
                entry_id,
                reason,
            )
        await self.runtime.broker.dead_letter_log_entries(undecodable)

    async def _wait_for_entries(self, stop: asyncio.Event) -> None:
        # A plain XREAD only wakes us; the entries are then taken through the fenced read.
        after = Position.parse(self._last_seen)
        read = asyncio.ensure_future(
            self.runtime.broker.wait_log(after, count=1, block_ms=self.runtime.settings.block_ms)
        )
        halt = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({read, halt}, return_when=asyncio.FIRST_COMPLETED)
        halt.cancel()
        if read not in done:
            read.cancel()
            await asyncio.wait({read})
            return
        read.result()

    async def _keep_lease(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await _wait(stop, self.lease_seconds / 3)
            if not self._owner or self._lease is None:
                continue
            try:
                if not await self._lease.renew():
                    logger.warning("projector %s: lease expired; stepping down", self.name)
                    self._owner = False
            except REDIS_ERRORS as e:
                logger.debug("projector %s: lease renewal failed: %s", self.name, e)
            except Exception as e:
                # Whatever the client raised, the lease must keep being renewed.
                await self._lease_outage.failed(e)
            else:
                self._lease_outage.succeeded()

    async def _step_down(self) -> None:
        if self._owner and self._lease is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._lease.release()
        self._owner = False

    async def _database_failed(self, error: Exception, stop: asyncio.Event) -> None:
        if self._db_down_since is None:
            self._db_down_since = time.monotonic()
            self._db_delay = 0.05
            logger.warning(
                "projector %s: database unavailable (%s); retrying with backoff",
                self.name,
                _reason(error),
                # Not a database error: a defect, whose traceback is the way to it.
                exc_info=None if isinstance(error, SQLAlchemyError | OSError) else error,
            )
        await _wait(stop, self._db_delay)
        self._db_delay = min(self._db_delay * 2, 5.0)

    def _database_recovered(self) -> None:
        if self._db_down_since is not None:
            logger.info(
                "projector %s: database is back after %.1fs",
                self.name,
                time.monotonic() - self._db_down_since,
            )
            self._db_down_since = None


def commit(
    engine: Engine,
    stream: str,
    owner: str,
    position: str,
    batch: list[Recorded],
    last: str,
    transitions: list[projection.Transition] | None = None,
) -> int:
    """Apply the events of `batch` after checkpoint `position` and move the checkpoint to
    `last` (the batch's last entry id), in one transaction; returns how many were applied.
    The activities' changes that the transaction committed are added to `transitions`.

    Raises `FencedError` when the checkpoint is not at `position` any more.
    """
    start = checkpoints.parse_id(position)
    fresh = [a for a in batch if a.position > start]
    target = checkpoints.later(last, position)
    if target == position:
        return 0
    try:
        with engine.begin() as conn:
            checkpoints.advance(conn, stream, position, target, owner)
            projection.apply(conn, fresh, transitions=transitions)
    except IntegrityError:
        # Some of these events are archived although the checkpoint is below them (it was
        # moved back by hand): apply the others only.
        logger.warning("projector %s: batch up to %s was partly applied before", owner, last)
        if transitions is not None:
            transitions.clear()  # of the transaction that rolled back
        with engine.begin() as conn:
            checkpoints.advance(conn, stream, position, target, owner)
            fresh = Archive(conn).unarchived(fresh)
            projection.apply(conn, fresh, transitions=transitions)
    return len(fresh)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    # asyncio.timeout, unlike wait_for on Python 3.11, never swallows a cancellation.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


@dataclass(frozen=True)
class _Part:
    """Events to commit together, moving the checkpoint to `last`."""

    batch: list[Recorded]
    last: str
    top: bool = True
    """The whole batch as read (not a part split off it)."""
    safe: bool = False
    """Its one event is in the safe form already."""


def _reason(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"
