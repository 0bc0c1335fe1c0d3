"""`Projector`: the only writer of the read model. Reads the event log, applies it in batches.

With several partitions (`AGENTEXEC_PARTITIONS`), each partition's log has its own lease,
checkpoint and consumer group, and one owner at a time: the projectors that run share the
partitions, each holding the leases of its share (`ceil(P / projectors running)`) and taking
over those whose lease lapses; each partition it holds is read (blocking) and applied on its
own, a batch holding one partition's events.

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
import math
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
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
from agentexec.streams import PROJECTOR_GROUP, Keys

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

    Reads up to `batch_size` entries at a time. Only one projector works on a partition's log
    at a time; others wait and take over within `lease_seconds` when it dies. Several
    projectors share the partitions (see the module's docstring).

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
        self.partitions = runtime.partitions
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
        self.logs = [_Log(p, self.partitions.keys(p)) for p in self.partitions]
        """Each partition's log, as this projector projects it."""
        self.applied = 0
        """Events applied by this projector since it started."""
        self.retention = LogRetention(settings.log_hot_window)
        """Trims the logs below their checkpoints after commits (docs/projector.md)."""
        self._held: list[_Log] = []
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
        logger.info(
            "projector %s: started on %s",
            self.name,
            ", ".join(log.keys.events for log in self.logs),
        )
        try:
            while not stop.is_set():
                await self._share(stop)
                await _wait(stop, self.lease_seconds / 4)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            self._held = [log for log in self.logs if log.owner]
            for log in self.logs:
                await self._release(log)
            if len(self.logs) > 1:
                with contextlib.suppress(*REDIS_ERRORS, BrokerError):
                    await self.runtime.broker.projector_stopped(self.name)
            logger.info(
                "projector %s: stopped at %s",
                self.name,
                ", ".join(log.position for log in self.logs),
            )

    @property
    def position(self) -> str:
        """The checkpoint of partition 0 as this projector last committed or read it (the
        only one with one partition; `logs[p].position` for partition p)."""
        return self.logs[0].position

    async def _share(self, stop: asyncio.Event) -> None:
        """Hold this projector's share of the partitions: take over free ones up to it (each
        then projected by a task of its own), hand back those beyond it."""
        running = 1
        if len(self.logs) > 1:
            try:
                ttl = self.lease_seconds * 1.5
                running = await self.runtime.broker.projectors_running(self.name, ttl)
            except (*REDIS_ERRORS, BrokerError) as e:
                logger.debug("projector %s: cannot count the projectors: %s", self.name, e)
        share = math.ceil(len(self.logs) / max(running, 1))
        for log in self.logs:
            if log.task is not None and log.task.done():
                log.task = None  # it lost its lease, or stepped down
        held = [log for log in self.logs if log.task is not None]
        for log in held[share:]:
            logger.info(
                "projector %s: hands %s over (%d projectors run)",
                self.name,
                log.keys.events,
                running,
            )
            await self._release(log)
        # Starting from a place of its own, so that projectors starting together do not all
        # try the same partitions first.
        offset = hash(self.name) % len(self.logs)
        order = self.logs[offset:] + self.logs[:offset]
        for log in order:
            if sum(1 for x in self.logs if x.task is not None) >= share or stop.is_set():
                break
            if log.task is not None:
                continue
            if await self._turn(log, stop, block=False) == "waiting":
                continue
            if log.owner:
                log.halt = asyncio.Event()
                log.task = asyncio.create_task(self._project(log))

    async def _project(self, log: _Log) -> None:
        """Apply `log` while this projector holds it, until it is halted (`_release`). Its
        lease lost, the log is taken over again at once unless another projector has it."""
        while not log.halt.is_set():
            if await self._turn(log, log.halt, block=True) == "waiting":
                return

    async def _release(self, log: _Log) -> None:
        """Stop projecting `log` (after the batch under way) and hand its lease back."""
        log.halt.set()
        if log.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await log.task
            log.task = None
        await self._step_down(log)

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
        now to the partitions it held (for at most `drain` seconds)."""
        if self._task is None:
            return
        self._stop.set()
        await self._task
        self._task = None
        held = [log.partition for log in self._held] if len(self.logs) > 1 else None
        with contextlib.suppress(TimeoutError):
            await self.catch_up(timeout=drain, partitions=held)

    async def catch_up(self, timeout: float = 30.0, partitions: list[int] | None = None) -> int:
        """Apply everything appended so far to `partitions` (None: every partition), one
        after the other, then return how many events were applied.

        Waits for a partition's lease when another projector holds it; raises TimeoutError
        after `timeout` seconds.
        """
        start = self.applied
        stop = asyncio.Event()
        chosen = self.logs if partitions is None else [self.logs[p] for p in partitions]
        async with asyncio.timeout(timeout):
            for log in chosen:
                try:
                    while True:
                        done = await self._turn(log, stop, block=False)
                        if done == "idle":
                            break
                        if done == "waiting":
                            await _wait(stop, self.lease_seconds / 4)
                finally:
                    await self._step_down(log)
        return self.applied - start

    async def _turn(self, log: _Log, stop: asyncio.Event, *, block: bool) -> str:
        """One step on `log`: take it over, or read and apply one batch. Returns what
        happened ("waiting": another projector holds it)."""
        try:
            if not log.owner and not await self._take_over(log):
                return "waiting"
            result = await self._step(log, stop, block=block)
            self._reconnect.succeeded()
            return result
        except REDIS_ERRORS as e:
            # A read whose reply was lost delivered its entries all the same: they are
            # pending to us, and must be read again before anything newer is committed.
            log.pending = True
            await self._reconnect.failed(e)
        except GroupMissingError:
            logger.warning("projector %s: consumer group gone; recreating it", self.name)
            log.owner = False
        except BrokerError as e:
            # Any other refusal (a script error, a busy server): an outage, not an exit.
            log.pending = True
            await self._reconnect.failed(e)
            return "retry"
        except SQLAlchemyError as e:
            await self._database_failed(e, stop)
        except Exception:
            # The consume loop's boundary: log, back off, and go on.
            logger.exception("projector %s: unexpected error; retrying", self.name)
            await _wait(stop, 1.0)
        return "retry"

    async def _take_over(self, log: _Log) -> bool:
        client = self.runtime.redis()
        broker = self.runtime.broker
        p = log.partition
        if log.lease is None or log.lease.client is not client:
            log.lease = broker.log_lease(self.name, self.lease_seconds, p)
        if not await log.lease.acquire():
            return False
        log.position = await asyncio.to_thread(self._load_checkpoint, log)
        self._database_recovered()
        delivered = await broker.projector_delivered(p)
        if delivered is None and log.position != checkpoints.ORIGIN:
            # The group goes only with the stream: Redis lost the log this database was
            # built from, and with it the queued tasks and results.
            logger.warning(
                "projector %s: %s has no %r group although the checkpoint is at %s: Redis "
                "lost its data; queued tasks and results will be restored from the archive",
                self.name,
                log.keys.events,
                PROJECTOR_GROUP,
                log.position,
            )
            await broker.mark_restore_due(log.position, p)
        if log.position != checkpoints.ORIGIN and (
            delivered is None or checkpoints.after(log.position, delivered)
        ):
            await self._lift(log, after=delivered)
        await broker.ensure_log_group(log.position, p)
        log.last_seen = delivered or log.position
        log.restore_due = await broker.restore_due(p) is not None
        log.owner, log.pending = True, True
        logger.info("projector %s: owns %s from %s", self.name, log.keys.events, log.position)
        return True

    async def _step(self, log: _Log, stop: asyncio.Event, *, block: bool) -> str:
        assert log.lease is not None
        cursor = "0" if log.pending else ">"
        entries = await log.lease.read(log.keys.events, PROJECTOR_GROUP, cursor, self.batch_size)
        if entries is None:
            logger.warning("projector %s: lost ownership of %s", self.name, log.keys.events)
            log.owner = False
            return "lost"
        if not entries:
            if log.pending:
                log.pending = False
                return "pending done"
            if log.restore_due:
                # Caught up first: a task that started since Redis came back is RUNNING in
                # the read model by now, and is not queued again.
                await self._restore(log)
                return "restored"
            if block:
                await self._wait_for_entries(log, stop)
            return "idle"
        log.last_seen = checkpoints.later(log.last_seen, entries[-1][0])
        # Until they are acknowledged, whatever fails: read them again before anything newer.
        pending, log.pending = log.pending, True
        if await self._apply(log, entries, stop):
            log.pending = pending
        return "applied"

    async def _apply(self, log: _Log, entries: Entries, stop: asyncio.Event) -> bool:
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
        start = checkpoints.parse_id(log.position)
        stale = [a.event_id for a in batch if a.position <= start]
        if stale:
            # Delivered again after a crash, and archived; or appended below the checkpoint
            # after Redis lost the log, and never seen: those are lifted above it.
            archive = Archive(self.engine, partition=log.partition)
            known = await asyncio.to_thread(archive.archived, stale)
            lifted = await self._lift(log, ids=[i for i in stale if i not in known])
            batch = [a for a in batch if a.event_id not in lifted]
        fresh = [u for u in undecodable if checkpoints.after(u[0], log.position)]
        if fresh:
            await self._dead_letter(log, fresh)
        parts = [_Part(batch, last)]
        while parts:
            part = parts[0]
            try:
                started = time.time_ns()
                position = log.position
                transitions: list[projection.Transition] | None = (
                    None if self._metrics is None else []
                )
                applied = await asyncio.to_thread(
                    commit,
                    self.engine,
                    log.keys.events,
                    self.name,
                    position,
                    part.batch,
                    part.last,
                    transitions,
                    log.partition,
                )
                if self._metrics is not None and transitions:
                    self._metrics.observe(transitions)
                self.applied += applied
                tracing.projected(part.batch, started, self.name)
                log.position = checkpoints.later(part.last, position)
                self._database_recovered()
                parts.pop(0)
            except FencedError as e:
                logger.warning("projector %s: %s", self.name, e)
                log.position = e.position or checkpoints.ORIGIN
            except Exception as e:  # the batch's boundary: nothing is skipped, whatever failed
                if part.batch and refusals.refused(e):
                    parts[:1] = await self._isolate(log, part, e, dict(entries))
                    continue
                await self._database_failed(e, stop)
                if stop.is_set() or not log.owner:
                    return False
        broker = self.runtime.broker
        await broker.ack_log([i for i, _ in entries], log.partition)
        await self.retention.after_commit(broker, log.position, log.partition)
        return True

    async def _isolate(
        self,
        log: _Log,
        part: _Part,
        error: Exception,
        fields: dict[str, dict[bytes, bytes] | None],
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
        refused = f"the database refused it: {reason}"
        await self._dead_letter(log, [(applied.event_id, entry, refused)])
        return [_Part([], part.last, top=False)]

    async def _lift(
        self, log: _Log, *, after: str | None = None, ids: list[str] | None = None
    ) -> set[str]:
        """Keep the ids of `log` above its checkpoint (see `floor`); returns the ids of the
        entries appended again above it (their originals are deleted)."""
        if ids is not None and not ids:
            return set()
        raised, moved = await floor.lift(
            self.runtime.broker,
            self.engine,
            log.position,
            after=after,
            ids=ids,
            partition=log.partition,
        )
        if raised:
            logger.warning(
                "projector %s: the last id of %s was below the checkpoint %s (Redis lost the "
                "log, and its clock is behind the archived ids); raised it to the checkpoint, "
                "so that new events get ids above it",
                self.name,
                log.keys.events,
                log.position,
            )
        if moved:
            logger.warning(
                "projector %s: %d entries of %s arrived below the checkpoint %s and are not in "
                "the archive; appended them again above it, in their order (%s became %s%s)",
                self.name,
                len(moved),
                log.keys.events,
                log.position,
                moved[0][0],
                moved[0][1],
                ", ..." if len(moved) > 1 else "",
            )
        return {old for old, _ in moved}

    async def _restore(self, log: _Log) -> None:
        broker = self.runtime.broker
        p = log.partition
        lost_at = await broker.restore_due(p) or log.position
        found = await restore.restore(self.engine, self.runtime, self.name, lost_at, p)
        await broker.restored(p)
        log.restore_due = False
        logger.info(
            "projector %s: restored %s from the archive: %d queued tasks queued again, %d "
            "running ones queued to run again if their worker dies, %d results",
            self.name,
            log.keys.events,
            len(found.queued),
            len(found.running),
            len(found.results),
        )

    def _load_checkpoint(self, log: _Log) -> str:
        with self.engine.begin() as conn:
            return checkpoints.load(conn, log.keys.events, self.name)

    async def _dead_letter(
        self, log: _Log, undecodable: list[tuple[str, dict[bytes, bytes], str]]
    ) -> None:
        for entry_id, _, reason in undecodable:
            logger.error(
                "projector %s: dead-lettering %s %s: %s",
                self.name,
                log.keys.events,
                entry_id,
                reason,
            )
        await self.runtime.broker.dead_letter_log_entries(undecodable, log.partition)

    async def _wait_for_entries(self, log: _Log, stop: asyncio.Event) -> None:
        # A plain XREAD only wakes us; the entries are then taken through the fenced read.
        after = Position.parse(log.last_seen)
        read = asyncio.ensure_future(
            self.runtime.broker.wait_log(
                after,
                count=1,
                block_ms=self.runtime.settings.block_ms,
                partition=log.partition,
            )
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
            for log in self.logs:
                if log.owner and log.lease is not None:
                    await self._renew(log)

    async def _renew(self, log: _Log) -> None:
        assert log.lease is not None
        try:
            if not await log.lease.renew():
                logger.warning(
                    "projector %s: lease of %s expired; stepping down", self.name, log.keys.events
                )
                log.owner = False
        except REDIS_ERRORS as e:
            logger.debug("projector %s: lease renewal failed: %s", self.name, e)
        except Exception as e:
            # Whatever the client raised, the lease must keep being renewed.
            await self._lease_outage.failed(e)
        else:
            self._lease_outage.succeeded()

    async def _step_down(self, log: _Log) -> None:
        if log.owner and log.lease is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await log.lease.release()
        log.owner = False

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
    partition: int = 0,
) -> int:
    """Apply the events of `batch` (read from `partition`'s log, named `stream`) after
    checkpoint `position` and move the checkpoint to `last` (the batch's last entry id), in
    one transaction; returns how many were applied. The activities' changes that the
    transaction committed are added to `transitions`.

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
            projection.apply(conn, fresh, partition=partition, transitions=transitions)
    except IntegrityError:
        # Some of these events are archived although the checkpoint is below them (it was
        # moved back by hand): apply the others only.
        logger.warning("projector %s: batch up to %s was partly applied before", owner, last)
        if transitions is not None:
            transitions.clear()  # of the transaction that rolled back
        with engine.begin() as conn:
            checkpoints.advance(conn, stream, position, target, owner)
            fresh = Archive(conn, partition=partition).unarchived(fresh)
            projection.apply(conn, fresh, partition=partition, transitions=transitions)
    return len(fresh)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    # asyncio.timeout, unlike wait_for on Python 3.11, never swallows a cancellation.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


@dataclass(eq=False)
class _Log:
    """One partition's log as a projector projects it."""

    partition: int
    keys: Keys
    position: str = checkpoints.ORIGIN
    """The checkpoint as this projector last committed or read it."""
    lease: Lease | None = None
    owner: bool = False
    pending: bool = True
    """Entries may be pending to the projector's group: read those ("0") before new ones."""
    last_seen: str = checkpoints.ORIGIN
    restore_due: bool = False
    task: asyncio.Task[None] | None = None
    """Projects the log while this projector holds it (`Projector.run`)."""
    halt: asyncio.Event = field(default_factory=asyncio.Event)
    """Set to hand the log over."""


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
