"""`Pool`: registers task handlers and runs them in supervised worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing.process
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from agentexec import tasks, tracing
from agentexec.connection import check_eviction_policy_at_start, close_redis
from agentexec.errors import ConfigurationError, PoolStartError, TaskDefinitionError
from agentexec.limits import check_queue_name
from agentexec.runtime import Runtime, current, using
from agentexec.tasks import TaskDefinition

from . import processes
from .housekeeping import keep_house
from .schedules import Schedule, run_schedules

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry
    from sqlalchemy import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from agentexec.declarative import AgentDefinition, Agents
    from agentexec.projector.background import ProjectorThread

from .worker import WorkerSpec, run_worker

logger = logging.getLogger(__name__)

H = TypeVar("H", bound=Callable[..., Any])

_RESTART_BACKOFF_MAX = 30.0
_KILL_WAIT = 10.0
"""Seconds to wait for a worker process to exit after SIGKILL."""


class Pool:
    """Task handlers for one queue, and the worker processes that run them.

    `engine` (an `Engine` or an `AsyncEngine`) or `database_url` (sync or async, e.g.
    `sqlite+aiosqlite:///agents.db`) give the SQL database of the activity read model; the
    projector reaches an async one through its sync driver (`agentexec.databases`). `queue_name`
    defaults to `AGENTEXEC_QUEUE_NAME`. `num_workers` processes (default
    `AGENTEXEC_NUM_WORKERS`) each run up to `concurrency` tasks at once (default
    `AGENTEXEC_WORKER_CONCURRENCY`). With a database, `run()` and `start()` also run a
    projector that keeps the read model up to date; `projector=False` leaves that to
    separately run `agentexec projector` processes.

    Settings come from `runtime` when given, else from `ax.CONF` as it is when the pool
    starts (`run()`, `start()`): its worker processes and projector get that snapshot.

    With `metrics_port`, the pool's own process serves Prometheus metrics at
    http://`metrics_host`:`metrics_port`/metrics while it runs (0: a free port, see
    `metrics_url`): its queue's depth, its live worker processes and, when it runs the
    projector, the projector's (docs/metrics.md). Worker processes export nothing themselves.
    """

    def __init__(
        self,
        engine: Engine | AsyncEngine | None = None,
        database_url: str | None = None,
        queue_name: str | None = None,
        *,
        num_workers: int | None = None,
        concurrency: int | None = None,
        projector: bool = True,
        runtime: Runtime | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
    ) -> None:
        if engine is not None and not _is_engine(engine):
            raise ConfigurationError(
                f"Pool(engine=...) got a {type(engine).__name__}; pass a SQLAlchemy Engine "
                "from create_engine(...) or create_async_engine(...), or database_url='...'."
            )
        if engine is not None or database_url is not None:
            from agentexec.databases import sync_url

            # Refuses now a database the projector could not reach (an in-memory one).
            sync_url(engine.url if engine is not None else str(database_url))
        for name, value in (("num_workers", num_workers), ("concurrency", concurrency)):
            if value is not None and value < 1:
                raise ConfigurationError(f"Pool({name}={value!r}): use a whole number >= 1.")
        if metrics_port is not None and not 0 <= metrics_port <= 65535:
            raise ConfigurationError(
                f"Pool(metrics_port={metrics_port!r}): use a TCP port from 0 (any free one) to "
                "65535, or None for no metrics."
            )
        if queue_name is not None and not queue_name:
            raise ConfigurationError("Pool(queue_name=''): use a non-empty queue name or None.")
        if queue_name is not None:
            check_queue_name(queue_name)
        self.engine = engine
        self.database_url = database_url
        self.queue_name = queue_name or (runtime or current()).settings.queue_name
        self._given_runtime = runtime
        self.num_workers = num_workers
        self.concurrency = concurrency
        self.projector = projector
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self._definitions: dict[str, TaskDefinition] = {}
        self._schedules: list[Schedule] = []
        self._thread: threading.Thread | None = None
        self._supervisor: _Supervisor | None = None

    def task(
        self,
        name: str,
        *,
        max_retries: int | None = None,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        timeout: float | None = None,
        lock_key: str | None = None,
    ) -> Callable[[H], H]:
        """Register the decorated `(agent_id: UUID, context: Model)` handler as task `name`
        (keyword-only `(*, agent_id, context)` works too).

        A failing attempt is retried up to `max_retries` times (default
        `AGENTEXEC_MAX_TASK_RETRIES`) when it raised one of `retry_on`, after an exponential
        backoff with jitter; `timeout` (seconds) stops an attempt that runs longer.
        `lock_key` (a template of the context's fields, `"{customer_id}"`) makes tasks with
        the same key run one at a time across the queue's workers; a task waiting for its key
        holds no worker (docs/tasks.md). The handler is returned unchanged. Raises
        `TaskDefinitionError` at once when its shape or an option is wrong (a `lock_key`
        field the context model lacks), or the name is taken in this pool.
        """

        def decorate(handler: H) -> H:
            self.add(
                TaskDefinition.from_handler(
                    name,
                    handler,
                    self.queue_name,
                    max_retries,
                    retry_on,
                    timeout,
                    lock_key=lock_key,
                )
            )
            return handler

        return decorate

    def add_task(
        self,
        name: str,
        handler: H,
        *,
        max_retries: int | None = None,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        timeout: float | None = None,
        lock_key: str | None = None,
    ) -> H:
        """Register `handler` as task `name`, as `@pool.task(name, ...)` does (agentexec 0.3.0's
        spelling, for handlers defined elsewhere); returns the handler unchanged."""
        return self.task(
            name, max_retries=max_retries, retry_on=retry_on, timeout=timeout, lock_key=lock_key
        )(handler)

    def agent(
        self,
        definition: AgentDefinition,
        *,
        name: str | None = None,
        agents: Agents | None = None,
        max_retries: int | None = None,
        retry_on: tuple[type[BaseException], ...] | None = None,
        timeout: float | None = None,
    ) -> AgentDefinition:
        """Register a task (named `name`, default the agent's name) that runs `definition`
        with an `OpenAIRunner`; queue runs with `ax.enqueue_agent`. The definition is
        registered in `agents` (default: its registry, else the current one) if it is not yet.

        Unlike `task`, only transient errors are retried by default
        (`ax.transient_errors()`: connection errors, timeouts, rate limits, provider 5xx);
        `retry_on` replaces that set. Returns the definition. Raises `AgentDefinitionError`
        for names the registry does not know, `TaskDefinitionError` for a taken task name.
        """
        from agentexec.declarative.registry import caller_module
        from agentexec.declarative.task import agent_task_definition

        self.add(
            agent_task_definition(
                definition,
                self.queue_name,
                agents=agents,
                name=name,
                max_retries=max_retries,
                retry_on=retry_on,
                timeout=timeout,
                caller=caller_module(1),
            )
        )
        return definition

    def add(self, definition: TaskDefinition) -> None:
        """Register a checked definition (what `@pool.task` and pipelines do). Raises
        `TaskDefinitionError` when the name is taken in this pool."""
        name = definition.name
        if name in self._definitions:
            raise TaskDefinitionError(
                f"@pool.task({name!r}): this pool already has a task named {name!r} "
                f"({self._definitions[name].handler.__qualname__}); pick another name."
            )
        self._definitions[name] = definition
        tasks.register(definition)

    def schedule(
        self,
        name: str,
        cron: str,
        *,
        tz: str = "UTC",
        context: BaseModel | None = None,
        max_retries: int | None = None,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        timeout: float | None = None,
    ) -> Callable[[H], H]:
        """Register the handler as task `name` and enqueue it at every slot of `cron`.

        `cron` has five fields (minute hour day month weekday) or six with seconds last, read
        in time zone `tz`. The task gets `context`, or its context model built with no
        arguments. Each slot is enqueued exactly once, however many pools with this schedule
        run; slots missed while none ran are skipped. Raises `TaskDefinitionError` at once for
        a bad expression, zone or context.
        """

        def decorate(handler: H) -> H:
            definition = TaskDefinition.from_handler(
                name, handler, self.queue_name, max_retries, retry_on, timeout
            )
            schedule = Schedule.declare(name, cron, tz, context, definition.context_type)
            self.add(definition)
            self._schedules.append(schedule)
            return handler

        return decorate

    @property
    def definitions(self) -> dict[str, TaskDefinition]:
        return dict(self._definitions)

    def runtime(self) -> Runtime:
        """The runtime the pool starts with: the one it was given, else `CONF`'s now."""
        return self._given_runtime or current()

    def worker_spec(self, consumer: str, runtime: Runtime | None = None) -> WorkerSpec:
        settings = (runtime or self.runtime()).settings
        return WorkerSpec(
            queue_name=self.queue_name,
            definitions=tuple(self._definitions.values()),
            consumer=consumer,
            concurrency=self.concurrency or settings.worker_concurrency,
            settings=settings,
            log_level=logging.getLogger().getEffectiveLevel(),
        )

    def run(self) -> None:
        """Run the workers until SIGINT or SIGTERM, then shut down gracefully. Blocks.

        In-flight tasks get `AGENTEXEC_GRACEFUL_SHUTDOWN_TIMEOUT` seconds to finish; the rest
        are handed back to the queue for another worker. After SIGINT (Ctrl-C) the shutdown
        ends by raising `KeyboardInterrupt`, so `except KeyboardInterrupt:` around `run()`
        runs as with any blocking call; after SIGTERM `run()` returns. Raises
        `ConfigurationError` when called at the top level of a script outside
        `if __name__ == "__main__":` (worker processes import the script).
        """
        if threading.current_thread() is not threading.main_thread():
            raise ConfigurationError("pool.run() must be called from the main thread; use start().")
        processes.check_main_guard("pool.run()")
        runtime = self.runtime()
        check_eviction_policy_at_start(f"pool on queue {self.queue_name!r}", runtime.settings)
        tracing.setup(runtime.settings.tracing_setup, "pool")
        if not logging.getLogger().handlers:
            logging.basicConfig(
                level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
            )
        supervisor = self._supervisor = _Supervisor(self, runtime)
        asyncio.run(supervisor.run(install_signals=True))
        if supervisor.signal == signal.SIGINT:
            raise KeyboardInterrupt

    def start(self, timeout: float | None = 120) -> None:
        """Start the workers in the background; return once every worker process is serving
        (reading its queue), so that a task enqueued next starts at once.

        Raises `PoolStartError` when a worker process exits before serving (its output says
        why) or `timeout` seconds pass first (None: no limit), after stopping the pool; and
        `ConfigurationError` when called at the top level of a script outside
        `if __name__ == "__main__":` (worker processes import the script).
        """
        if self._thread is not None and self._thread.is_alive():
            raise ConfigurationError("pool.start(): this pool is already running.")
        processes.check_main_guard("pool.start()")
        runtime = self.runtime()
        check_eviction_policy_at_start(f"pool on queue {self.queue_name!r}", runtime.settings)
        tracing.setup(runtime.settings.tracing_setup, "pool")
        supervisor = self._supervisor = _Supervisor(self, runtime, fail_fast=True)
        self._thread = threading.Thread(
            target=supervisor.run_in_thread,
            name=f"agentexec-pool-{self.queue_name}",
            daemon=True,
        )
        self._thread.start()
        supervisor.started.wait()
        if not supervisor.serving.wait(timeout):
            supervisor.fail(
                f"the workers were not serving after {timeout}s (is Redis reachable? the "
                "log above says which URL each process uses)"
            )
        if supervisor.start_error is not None:
            self.shutdown()
            raise PoolStartError(f"pool.start(): {supervisor.start_error}")

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop the workers started by `start()` gracefully and wait for them to exit, up to
        `timeout` seconds (None: `AGENTEXEC_GRACEFUL_SHUTDOWN_TIMEOUT` plus 30); past it, log
        and kill the worker processes that are left."""
        supervisor = self._supervisor
        if supervisor is not None:
            supervisor.request_stop()
        if self._thread is not None:
            if timeout is None:
                settings = self.runtime().settings if supervisor is None else supervisor.settings
                timeout = settings.graceful_shutdown_timeout + 30
            self._thread.join(timeout)
            if self._thread.is_alive() and supervisor is not None:
                logger.error(
                    "pool %s: the workers did not stop within %.0fs of pool.shutdown(); "
                    "killing the worker processes left",
                    supervisor.pool_id,
                    timeout,
                )
                supervisor.kill_workers()
                self._thread.join(_KILL_WAIT)
            self._thread = None

    def _projector(
        self, runtime: Runtime, registry: CollectorRegistry | None = None
    ) -> ProjectorThread | None:
        if not self.projector or (self.engine is None and self.database_url is None):
            return None
        from agentexec.databases import create_sync_engine, sync_engine
        from agentexec.projector import Projector
        from agentexec.projector.background import ProjectorThread

        if self.engine is not None:
            engine = sync_engine(self.engine)
        else:
            engine = create_sync_engine(str(self.database_url))
        return ProjectorThread(
            Projector(engine, runtime=runtime, registry=registry),
            dispose_engine=engine is not self.engine,
        )

    @property
    def metrics_url(self) -> str | None:
        """Where the running pool serves its metrics; None when it serves none."""
        server = self._supervisor.metrics if self._supervisor is not None else None
        if server is None:
            return None
        return f"http://{self.metrics_host}:{server.server_port}/metrics"

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live worker processes (for monitoring and tests)."""
        if self._supervisor is None:
            return []
        return [p.pid for p in self._supervisor.processes.values() if p.pid and p.is_alive()]


def _is_engine(value: object) -> bool:
    # Imported here: a pool without a database never needs SQLAlchemy, and one given an
    # engine has imported it already.
    from sqlalchemy import Engine

    from agentexec.databases import is_async_engine

    return isinstance(value, Engine) or is_async_engine(value)


class _Supervisor:
    """Starts one process per worker slot and replaces any that dies.

    With `fail_fast` (`pool.start()`), a worker that exits before it ever served stops the
    pool and sets `start_error`, instead of being replaced.
    """

    def __init__(self, pool: Pool, runtime: Runtime, *, fail_fast: bool = False) -> None:
        self.pool = pool
        self.runtime = runtime
        self.settings = runtime.settings
        self.fail_fast = fail_fast
        self.pool_id = f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"
        self.processes: dict[int, multiprocessing.process.BaseProcess] = {}
        self.started = threading.Event()
        self.serving = threading.Event()
        """Set once every worker slot has served, or `start_error` is set."""
        self.start_error: str | None = None
        self.signal: int | None = None
        """The signal that stopped the pool, if one did."""
        self._unready: set[int] = set()
        self._readers: dict[int, Connection] = {}
        self._lifeline: tuple[Connection, Connection] | None = None
        """Read and write ends of a pipe the workers watch: nothing is ever written, so its
        reader sees end-of-file exactly when this process is gone, however it ended."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._exits: asyncio.Queue[int] | None = None
        self._stop_requested = False
        self._stop_tasks: list[asyncio.Future[None]] = []
        """Background work of the supervisor, cancelled when it stops."""
        self.metrics: WSGIServer | None = None

    def run_in_thread(self) -> None:
        try:
            asyncio.run(self.run(install_signals=False))
        except Exception as e:
            logger.exception("pool %s: the supervisor crashed", self.pool_id)
            self.fail(f"the pool's supervisor crashed ({e!r})")

    def fail(self, reason: str) -> None:
        if self.start_error is None:
            self.start_error = reason
        self.request_stop()
        self.started.set()
        self.serving.set()

    def request_stop(self) -> None:
        self._stop_requested = True
        if self._loop is not None and self._stop is not None:
            # A loop that ended (the supervisor stopped already) has nothing left to stop.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)

    async def run(self, install_signals: bool) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._exits = asyncio.Queue()
        if install_signals:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._loop.add_signal_handler(signum, self._on_signal, signum)
        num = self.pool.num_workers or self.settings.num_workers
        logger.info(
            "pool %s: starting %d worker process(es) on queue %r",
            self.pool_id,
            num,
            self.pool.queue_name,
        )
        registry = self._serve_metrics() if self.pool.metrics_port is not None else None
        projector = self.pool._projector(self.runtime, registry)
        processes.preload(
            getattr(d.handler, "__module__", None) or "__main__"
            for d in self.pool._definitions.values()
        )
        self._unready = set(range(num))
        self._lifeline = processes.context.Pipe(duplex=False)
        try:
            for slot in range(num):
                self._spawn(slot)
            if projector is not None:
                projector.start()
        finally:
            self.started.set()
        if self._stop_requested:
            self._stop.set()
        if self.pool._schedules:
            with using(self.runtime):  # the task enqueues with the pool's settings
                scheduler = asyncio.ensure_future(
                    run_schedules(self.pool._schedules, self.pool.queue_name)
                )
            scheduler.add_done_callback(self._log_crash)
            self._stop_tasks.append(scheduler)
        housekeeping = asyncio.ensure_future(keep_house(self.runtime, self.pool.queue_name))
        housekeeping.add_done_callback(self._log_crash)
        self._stop_tasks.append(housekeeping)
        failures: dict[int, tuple[int, float]] = {}
        stop = asyncio.ensure_future(self._stop.wait())
        while not self._stop.is_set():
            exited = asyncio.ensure_future(self._exits.get())
            await asyncio.wait({stop, exited}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                exited.cancel()
                break
            slot = exited.result()
            process = self.processes[slot]
            process.join()
            self._close_reader(slot)
            if self._stop.is_set():
                break
            if self.fail_fast and slot in self._unready:
                self.fail(
                    f"worker {slot} (pid {process.pid}) exited with code {process.exitcode} "
                    "before serving; its output above says why"
                )
                break
            count, last = failures.get(slot, (0, 0.0))
            count = count + 1 if time.monotonic() - last < 60 else 1
            failures[slot] = (count, time.monotonic())
            delay = min(0.5 * 2 ** (count - 1), _RESTART_BACKOFF_MAX) if count > 1 else 0.0
            logger.warning(
                "pool %s: worker %d (pid %s) exited with code %s; replacing it%s",
                self.pool_id,
                slot,
                process.pid,
                process.exitcode,
                f" in {delay:.1f}s" if delay else "",
            )
            if delay:
                await asyncio.sleep(delay)
            self._spawn(slot)
        for task in self._stop_tasks:
            task.cancel()
        await asyncio.gather(*self._stop_tasks, return_exceptions=True)
        await close_redis(sync=False)
        await self._stop_workers()
        for end in self._lifeline:
            end.close()
        if projector is not None:
            await projector.stop()
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.shutdown)
            self.metrics.server_close()
            self.metrics = None

    def _serve_metrics(self) -> CollectorRegistry:
        from prometheus_client import CollectorRegistry, Gauge

        from agentexec.metrics import QueueCollector, serve

        pool = self.pool
        registry = CollectorRegistry()
        registry.register(QueueCollector(self.runtime, [pool.queue_name]))
        workers = Gauge(
            "agentexec_pool_workers",
            "Live worker processes of this pool.",
            ["queue"],
            registry=registry,
        )
        workers.labels(pool.queue_name).set_function(lambda: len(pool.worker_pids))
        assert pool.metrics_port is not None
        try:
            self.metrics = serve(registry, pool.metrics_port, pool.metrics_host)
        except OSError as e:
            raise ConfigurationError(
                f"Pool(metrics_port={pool.metrics_port!r}): cannot serve metrics on "
                f"{pool.metrics_host}:{pool.metrics_port} ({e}); pick a free port."
            ) from e
        return registry

    def _log_crash(self, task: asyncio.Future[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "pool %s: background task crashed", self.pool_id, exc_info=task.exception()
            )

    def _on_signal(self, signum: int) -> None:
        logger.info(
            "pool %s: %s received; shutting down", self.pool_id, signal.Signals(signum).name
        )
        self.signal = signum
        assert self._stop is not None
        self._stop.set()

    def _spawn(self, slot: int) -> None:
        assert self._loop is not None and self._exits is not None
        spec = self.pool.worker_spec(f"{self.pool_id}:{slot}", self.runtime)
        reader, writer = processes.context.Pipe(duplex=False)
        assert self._lifeline is not None
        process = processes.context.Process(
            target=run_worker,
            args=(spec, writer, self._lifeline[0]),
            name=f"agentexec-worker-{slot}",
        )
        try:
            process.start()
        finally:
            writer.close()
        self.processes[slot] = process
        exits = self._exits
        loop = self._loop
        self._readers[slot] = reader

        def on_ready() -> None:
            self._close_reader(slot)
            if self._unready and slot in self._unready:
                self._unready.discard(slot)
                if not self._unready:
                    logger.info(
                        "pool %s: %d worker process(es) serving", self.pool_id, len(self.processes)
                    )
                    self.serving.set()

        def on_readable() -> None:
            try:
                reader.recv_bytes()
            except (EOFError, OSError):
                self._close_reader(slot)  # exited before serving: its exit is handled
                return
            on_ready()

        loop.add_reader(reader.fileno(), on_readable)

        def on_exit() -> None:
            loop.remove_reader(process.sentinel)
            exits.put_nowait(slot)

        loop.add_reader(process.sentinel, on_exit)

    def _close_reader(self, slot: int) -> None:
        reader = self._readers.pop(slot, None)
        if reader is not None:
            assert self._loop is not None
            self._loop.remove_reader(reader.fileno())
            reader.close()

    async def _stop_workers(self) -> None:
        assert self._loop is not None
        for slot in list(self._readers):
            self._close_reader(slot)
        live = [p for p in self.processes.values() if p.is_alive()]
        for process in live:
            self._loop.remove_reader(process.sentinel)
            if process.pid is not None:
                try:
                    process.terminate()
                except ProcessLookupError:
                    pass
        # One deadline for all of them: they stop together, not one after the other.
        deadline = time.monotonic() + self.settings.graceful_shutdown_timeout + 10
        for process in live:
            await asyncio.to_thread(process.join, max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                logger.error(
                    "pool %s: worker pid %s did not stop; killing it", self.pool_id, process.pid
                )
                process.kill()
                await asyncio.to_thread(process.join, _KILL_WAIT)
        logger.info("pool %s: stopped", self.pool_id)

    def kill_workers(self) -> None:
        """SIGKILL the worker processes still alive (from any thread: a stop that overran)."""
        for process in list(self.processes.values()):
            if process.is_alive():
                logger.error("pool %s: killing worker pid %s", self.pool_id, process.pid)
                process.kill()
