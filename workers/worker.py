"""One worker process: reads a queue's streams through the consumer group and runs many tasks
at once in one asyncio loop.

A worker's consumer name is fixed per pool slot, so a replacement for a dead worker starts by
re-reading the entries its predecessor held (its pending-entries list) and runs them at once.
While a task runs, its entry's idle time is reset periodically (the lease); entries whose
lease expired (a dead host, a frozen process) are claimed by any live worker.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar
from uuid import UUID

import msgspec
import pydantic
import pydantic_core
from pydantic import BaseModel

from agentexec import events, tenants, tracing
from agentexec.config import CONF, Settings
from agentexec.connection import REDIS_ERRORS, Reconnect, cancel_all, close_redis
from agentexec.consumer import Entry, EntryKey, Start, entry_key
from agentexec.errors import ContextError, EventDecodeError, GroupMissingError
from agentexec.events import (
    TaskQueued,
    TaskStarted,
    TaskWaiting,
)
from agentexec.limits import describe_exception, describe_traceback
from agentexec.locks import Lock, locks_of
from agentexec.results import result_type_of
from agentexec.runtime import Runtime, using
from agentexec.tasks import (
    RunningTask,
    TaskDefinition,
    reset_running,
    set_running,
)

from .cancellation import Cancellation
from .endings import Endings
from .leases import Leases
from .notices import NoticeListener
from .retries import Promoter

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

logger = logging.getLogger(__name__)

HELPERS_STOP = 10.0
"""Seconds a stopping worker waits for its lease renewal, promoter and notice listener to end
when cancelled (each is cancelled again every second meanwhile)."""

T = TypeVar("T")


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs; pickled to the process when it is spawned."""

    queue_name: str
    definitions: tuple[TaskDefinition, ...]
    consumer: str
    concurrency: int
    settings: Settings = field(default_factory=Settings)
    """The pool's settings when it started (a snapshot): the worker's runtime is built from
    them, never from the worker process's own environment or `CONF`."""
    log_level: int = logging.INFO


class Worker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.runtime = Runtime.from_settings(spec.settings)
        self.settings = self.runtime.settings
        self.broker = self.runtime.broker
        self.consumer = self.broker.consumer(spec.queue_name, spec.consumer)
        self.streams = self.consumer.streams
        self.definitions = {d.name: d for d in spec.definitions}
        self.stopping = asyncio.Event()
        self.serving = asyncio.Event()
        """Set once the worker reads its queue (a task enqueued now starts without delay)."""
        self._running: dict[asyncio.Task[None], Entry] = {}
        self._busy: set[EntryKey] = set()
        """Entries holding a concurrency slot: from their start until their handler returns,
        so that the next entry is read while the outcome is being recorded."""
        self._slot_freed = asyncio.Event()
        self._backlog: deque[Entry] = deque()
        self._unparking: set[asyncio.Future[bool]] = set()
        self.cancellation = Cancellation(self.broker, spec.consumer)
        self.leases = Leases(
            self.consumer,
            self._running,
            self._backlog,
            spec.concurrency,
            self.cancellation.check_markers,
        )
        self._promoter = Promoter(self.runtime, spec.queue_name)
        self._reconnect = Reconnect(f"worker {spec.consumer}")
        self.endings = Endings(
            self.consumer, self.leases, self.definitions, self._promoter, self._reconnect
        )

    async def run(self) -> None:
        """Run until `stopping` is set, then drain within the graceful-shutdown timeout.

        Runs with the worker's runtime as `agentexec.runtime.current()`, so that the handlers
        (and the tasks they start) use the pool's settings, not the process's `CONF`."""
        with using(self.runtime):
            await self._run()

    async def _run(self) -> None:
        logger.info(
            "worker %s: serving queue %r (tasks: %s), %d at a time",
            self.spec.consumer,
            self.spec.queue_name,
            ", ".join(sorted(self.definitions)) or "none",
            self.spec.concurrency,
        )
        notices = NoticeListener(
            self.runtime.partitions,
            self.spec.queue_name,
            self._cancel,
            self._promoter.schedule,
            self.runtime,
        )
        helpers = [
            asyncio.create_task(self.leases.run(), name="lease renewal"),
            asyncio.create_task(self._promoter.run(), name="promoter"),
            asyncio.create_task(notices.run(), name="notice listener"),
        ]
        try:
            # A stop request while Redis is unreachable must not wait for the listener.
            ready = asyncio.ensure_future(notices.ready.wait())
            stop = asyncio.ensure_future(self.stopping.wait())
            await asyncio.wait({ready, stop}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            stop.cancel()
            if not self.stopping.is_set():
                await self._consume()
        finally:
            await self._drain()
            for stuck in await cancel_all(helpers, HELPERS_STOP):
                logger.error(
                    "worker %s: its %s did not stop when cancelled; stopping without it",
                    self.spec.consumer,
                    stuck.get_name(),
                )
            await self.consumer.stop_reads()
            await self.leases.release()
            logger.info("worker %s: stopped", self.spec.consumer)

    async def _consume(self) -> None:
        await self._ensure_groups()
        await self._resume_own_pending()
        self.serving.set()
        while not self.stopping.is_set():
            free = self.spec.concurrency - len(self._busy)
            if free <= 0:
                # A full worker must still hear a stop request: its drain has a deadline.
                self._slot_freed.clear()
                stop = asyncio.ensure_future(self.stopping.wait())
                freed = asyncio.ensure_future(self._slot_freed.wait())
                await asyncio.wait({stop, freed}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                freed.cancel()
                continue
            if not self._backlog:
                try:
                    self._backlog.extend(await self._read_new(free))
                    self._reconnect.succeeded()
                except GroupMissingError:
                    logger.warning("worker %s: consumer group gone; recreating", self.spec.consumer)
                    await self._ensure_groups()
                    continue
                except Exception as e:  # any error of the client library: an outage
                    await self._reconnect.failed(e)
                    continue
            while self._backlog and len(self._busy) < self.spec.concurrency:
                entry = self._backlog.popleft()
                task = asyncio.create_task(self._execute(entry))
                self._running[task] = entry
                self._busy.add(entry_key(entry))
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        entry = self._running.pop(task)
        if not task.cancelled() and task.exception() is not None:
            # Its entry stays pending: another worker takes it over after the lease.
            logger.error(
                "worker %s: task of entry %s %s failed unrecorded",
                self.spec.consumer,
                entry[0],
                entry[1],
                exc_info=task.exception(),
            )
        self._free_slot(entry_key(entry))
        self.leases.done(entry_key(entry))

    def _free_slot(self, key: EntryKey) -> None:
        if key in self._busy:
            self._busy.discard(key)
            self._slot_freed.set()

    async def _resume_own_pending(self) -> None:
        """Queue the entries a previous process with our consumer name held when it died."""
        self.leases.take(await self.consumer.own_pending())
        if self._backlog:
            logger.info(
                "worker %s: resuming %d task(s) held by its predecessor",
                self.spec.consumer,
                len(self._backlog),
            )

    async def _ensure_groups(self) -> None:
        await self.consumer.ensure_groups()

    async def _read_new(self, count: int) -> list[Entry]:
        entries = await self.consumer.read(count)
        if entries:
            return entries
        # Nothing queued: block on every priority at once until something arrives. Stopping
        # cancels this read; entries it delivered then are released by `_release_unfinished`.
        read = asyncio.create_task(self.consumer.wait(count, self.settings.block_ms))
        stop = asyncio.create_task(self.stopping.wait())
        done, _ = await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if read not in done:
            read.cancel()
            with contextlib.suppress(asyncio.CancelledError, *REDIS_ERRORS):
                await read
            return []
        return read.result()

    async def _execute(self, entry: Entry) -> None:
        fields = entry[2]
        deliveries = self.leases.held(entry_key(entry)).deliveries
        try:
            event = events.decode_entry(fields)
            if not isinstance(event, TaskQueued):
                raise EventDecodeError(f"expected a task.queued event, got {type(event).__name__}")
        except EventDecodeError as e:
            await self.endings.dead_letter(entry, str(e))
            return
        # Every event recorded about the task from here on carries its tenant.
        with tenants.serving(event.agent_id, event.parent_id, tenants.tenant_of(event.metadata)):
            await self._serve(entry, event, deliveries)

    async def _serve(self, entry: Entry, event: TaskQueued, deliveries: int) -> None:
        if deliveries > self.settings.max_deliveries:
            await self.endings.dead_letter(
                entry,
                f"delivered {deliveries} times, more than AGENTEXEC_MAX_DELIVERIES="
                f"{self.settings.max_deliveries}: its handler may be killing the worker process",
            )
            return
        if not self.leases.take_hand(event.agent_id, entry_key(entry)):
            self.endings.still_running(event, "this worker")
            await self.endings.defer(entry, event)
            return
        # A redelivery (its worker died) is a further attempt.
        event = msgspec.structs.replace(event, attempt=event.attempt + deliveries - 1)
        with tracing.handling(event, self.spec.consumer):
            await self._attempt(entry, event)

    async def _attempt(self, entry: Entry, event: TaskQueued) -> None:
        """Run one attempt of `event`'s task, held by this worker, and record how it ended
        (or park it while one of its locks is full)."""
        definition = self.definitions.get(event.task_name)
        if definition is None:
            await self.endings.fail(
                entry,
                event,
                f"no handler for task {event.task_name!r} on queue {self.spec.queue_name!r} "
                f"(this worker knows: {', '.join(sorted(self.definitions)) or 'none'}); "
                f"register it with @pool.task({event.task_name!r}) on the pool serving this queue",
            )
            return
        try:
            context = definition.context_type.model_validate_json(bytes(event.context))
        except pydantic.ValidationError as e:
            await self.endings.fail(
                entry,
                event,
                f"context does not validate as {definition.context_type.__name__}: {e}",
            )
            return
        # The tenant limit counts root tasks only: a child (a parent may wait for it while
        # holding its tenant's slot) must not wait for that slot itself.
        tenant = (
            None
            if event.parent_id is not None
            else event.tenant or tenants.tenant_of(event.metadata)
        )
        try:
            task_locks = locks_of(
                definition.lock_key,
                context,
                event.task_name,
                tenant,
                self.settings.max_concurrency_per_tenant,
            )
        except ContextError as e:
            await self.endings.fail(entry, event, str(e))
            return
        if task_locks and not await self._lock(entry, event, task_locks):
            return
        # An exception (shutdown, a lost lease) leaves the holds to expire with the lease:
        # the entry stays for another worker, which takes them over with the task.
        kept = await self._start_and_run(entry, event, definition, context)
        if task_locks and not kept:
            await self.endings.persist(
                lambda _: self.consumer.unlock(event.agent_id, task_locks, _now_ms())
            )

    async def _lock(self, entry: Entry, event: TaskQueued, task_locks: list[Lock]) -> bool:
        """Take the task's locks; False when it was parked until one has room (or another
        worker holds the entry)."""
        waiting = [
            TaskWaiting(
                agent_id=event.agent_id,
                task_name=event.task_name,
                attempt=event.attempt,
                message=lock.waiting_message,
                lock=lock.name,
            )
            for lock in task_locks
        ]
        lease_ms = int(self.settings.lease_seconds * 1000)
        held = await self.endings.persist(
            lambda since: self.consumer.lock(
                entry, event, task_locks, waiting, _now_ms(), lease_ms, since
            ),
            appends=True,
        )
        if held:
            self.leases.held(entry_key(entry)).locks = tuple(task_locks)
            return True
        self.leases.ended(entry_key(entry))
        if held is not None:
            logger.info(
                "worker %s: task %s (agent %s) waits for its lock; parked",
                self.spec.consumer,
                event.task_name,
                event.agent_id,
            )
        return False

    def _cancel(self, agent_id: UUID) -> None:
        """A cancel request: stop the task if it runs here, and queue it again at once if it
        is parked on a lock, so that it ends now rather than when its turn comes."""
        self.cancellation.cancel(agent_id)
        unpark = asyncio.ensure_future(self.broker.unpark(self.spec.queue_name, agent_id))
        self._unparking.add(unpark)
        unpark.add_done_callback(self._unparked)

    def _unparked(self, unpark: asyncio.Future[bool]) -> None:
        self._unparking.discard(unpark)
        if not unpark.cancelled() and unpark.exception() is not None:
            logger.warning(
                "worker %s: could not queue a canceled task parked on a lock again (%s); it "
                "ends when its turn comes",
                self.spec.consumer,
                unpark.exception(),
            )

    async def _start_and_run(
        self, entry: Entry, event: TaskQueued, definition: TaskDefinition, context: BaseModel
    ) -> bool:
        """Start the task and run its handler; True when another worker has the task now
        (taken over, or still running it), so its locks stay held."""
        key = entry_key(entry)
        started_event = TaskStarted(
            agent_id=event.agent_id,
            task_name=event.task_name,
            attempt=event.attempt,
            message=self.settings.activity_message_started,
            worker=self.spec.consumer,
        )
        start = await self.endings.persist(
            lambda since: self.consumer.start(entry, started_event, event.parent_id, since),
            appends=True,
        )
        if start is Start.TAKEN_OVER:
            logger.warning(
                "worker %s: task %s (agent %s) was taken over before it started here",
                self.spec.consumer,
                event.task_name,
                event.agent_id,
            )
            return True
        if start is Start.ENDED:
            logger.info(
                "worker %s: task %s (agent %s) already ended; dropped its copy queued again",
                self.spec.consumer,
                event.task_name,
                event.agent_id,
            )
            return False
        if start is Start.RUNNING_ELSEWHERE:
            self.endings.still_running(event, "another worker")
            await self.endings.defer(entry, event)
            return True
        if start is Start.CANCELED:
            await self.endings.end_canceled(entry, event)
            return False
        started = time.perf_counter()
        timeout = event.timeout or definition.timeout
        lease = self.consumer.lease(entry)
        running = RunningTask(event.agent_id, event.task_name, event.attempt, lease)
        token = set_running(running)
        self.cancellation.running(
            event.agent_id,
            event.parent_id,
            asyncio.current_task(),  # type: ignore[arg-type]
        )
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                if definition.is_async:
                    value = await definition.invoke(event.agent_id, context)
                else:
                    value = await asyncio.to_thread(definition.invoke, event.agent_id, context)
            result = pydantic_core.to_json(value)
            result_type = result_type_of(value)
        except asyncio.CancelledError:
            if not self.cancellation.requested(event.agent_id):
                raise  # shutdown or a lost lease: the entry stays for another worker
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            await self.endings.end_canceled(entry, event)
            return False
        except pydantic_core.PydanticSerializationError as e:
            await self.endings.fail(
                entry, event, f"the handler's return value cannot be stored: {e}"
            )
            return False
        except Exception as e:
            if running.reported_error:
                logger.warning(
                    "task %s (agent %s) raised after reporting its error\n%s",
                    event.task_name,
                    event.agent_id,
                    describe_traceback(e),
                )
                await self.endings.fail(entry, event, *reversed(running.reported_error[0]))
                return False
            if deadline.expired():
                error = (
                    f"TimeoutError: attempt {event.attempt} ran longer than its {timeout}s timeout"
                )
            else:
                # The traceback as text, so that the credentials in it are redacted too.
                logger.error(
                    "task %s (agent %s) raised\n%s",
                    event.task_name,
                    event.agent_id,
                    describe_traceback(e),
                )
                error = describe_exception(e)
            tracing.failed(e, error)
            await self.endings.failed_attempt(entry, event, definition, e, error)
            return False
        finally:
            self._free_slot(key)
            reset_running(token)
            self.cancellation.ended(event.agent_id)
        if running.reported_error:
            # The handler's own ax.activity.error() is its verdict, whatever it returned.
            await self.endings.fail(entry, event, *reversed(running.reported_error[0]))
            return False
        await self.endings.complete(
            entry, event, result, time.perf_counter() - started, result_type
        )
        return False

    async def _drain(self) -> None:
        if not self._running:
            return
        logger.info(
            "worker %s: waiting up to %.0fs for %d running task(s)",
            self.spec.consumer,
            self.settings.graceful_shutdown_timeout,
            len(self._running),
        )
        _, pending = await asyncio.wait(
            self._running, timeout=self.settings.graceful_shutdown_timeout
        )
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)


def _now_ms() -> int:
    return int(time.time() * 1000)


def run_worker(
    spec: WorkerSpec, ready: Connection | None = None, lifeline: Connection | None = None
) -> None:
    """Entry point of a worker process; writes to `ready` once it serves, then closes it.

    `lifeline` is the read end of a pipe that only the pool's process holds open for writing:
    when it reads end-of-file the pool is gone (killed, crashed), and the worker stops as on
    SIGTERM instead of running on as an orphan.
    """
    # The user's module, imported to find the handlers, may register exit hooks meant for the
    # application process (seed 001's `cancel_pending` cleanup): a worker must not run them.
    atexit._clear()
    # The edge of a worker process: handler code that reads `ax.CONF` sees the pool's
    # settings. Nothing below reads `CONF`; the worker runs with its runtime (`Worker.run`).
    CONF.adopt(spec.settings)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=spec.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    tracing.setup(spec.settings.tracing_setup, "worker")
    try:
        asyncio.run(_main(spec, ready, lifeline))
    finally:
        tracing.flush()


async def _main(
    spec: WorkerSpec, ready: Connection | None, lifeline: Connection | None = None
) -> None:
    worker = Worker(spec)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, worker.stopping.set)
    if lifeline is not None:
        _watch_pool(worker, lifeline, loop)
    announce = asyncio.create_task(_announce(worker, ready)) if ready is not None else None
    try:
        await worker.run()
    finally:
        if announce is not None:
            announce.cancel()
        await close_redis()


def _watch_pool(worker: Worker, lifeline: Connection, loop: asyncio.AbstractEventLoop) -> None:
    def on_pool_gone() -> None:
        loop.remove_reader(lifeline.fileno())
        lifeline.close()
        if not worker.stopping.is_set():
            logger.warning(
                "worker %s: the pool process is gone; stopping as on SIGTERM", worker.spec.consumer
            )
            worker.stopping.set()

    loop.add_reader(lifeline.fileno(), on_pool_gone)


async def _announce(worker: Worker, ready: Connection) -> None:
    try:
        await worker.serving.wait()
        ready.send_bytes(b"serving")
    finally:
        ready.close()
