"""Prometheus metrics, with the standard client library (`prometheus_client`).

Which process exports what, so that no count is made twice (see docs/metrics.md):

- the projector: task counters and duration histograms (`TaskMetrics`), from the events it
  commits to the read model, each counted once, when its batch commits; and the projector's
  lag and the dead letters (`LogCollector`), read from Redis at scrape time;
- a pool's own process (not its worker processes): its queue's depth (`QueueCollector`,
  read from Redis at scrape time), and everything its projector exports when it runs one;
- the API: its open SSE feeds (`agentexec.api.metrics`).

Nothing here imports `prometheus_client` before a process asks for metrics: `import
agentexec` stays as light for an enqueuer as it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from .activity.state import Attempt, Transition
from .errors import BrokerError
from .runtime import Runtime

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

__all__ = [
    "DURATION_BUCKETS",
    "LogCollector",
    "QueueCollector",
    "TaskMetrics",
    "serve",
]

logger = logging.getLogger(__name__)

DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip
"""Seconds: a tool call's few milliseconds to an agent's hour."""


class TaskMetrics:
    """Task counters and duration histograms in `registry`, fed with the transitions of the
    activities a projector committed (`observe`). Labels: the task name (a validated name,
    see `agentexec.limits`), a status or an attempt's outcome; never an agent id."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.tasks = Counter(
            "agentexec_tasks",
            "Tasks by the status they reached: queued (created), complete, error, canceled.",
            ["task_name", "status"],
            registry=registry,
        )
        self.attempts = Counter(
            "agentexec_task_attempts",
            "Ended attempts by outcome: complete, error, canceled, retried, lost (its worker "
            "died).",
            ["task_name", "outcome"],
            registry=registry,
        )
        self.queue_wait = Histogram(
            "agentexec_task_queue_wait_seconds",
            "Per attempt, from when it was due to its start (the events' timestamps).",
            ["task_name"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.run = Histogram(
            "agentexec_task_run_seconds",
            "Per ended attempt (not lost ones), from its start to its end (the events' "
            "timestamps).",
            ["task_name"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )

    def observe(self, transitions: Iterable[Transition]) -> None:
        """Count committed transitions (each exactly once: call after the commit)."""
        for before, after in transitions:
            name = after.task_name
            if before is None:
                self.tasks.labels(name, "queued").inc()
            if after.terminal and (before is None or not before.terminal):
                self.tasks.labels(name, after.status.wire).inc()
            earlier = before.attempt_history if before is not None else ()
            for index, attempt in enumerate(after.attempt_history):
                was = earlier[index] if index < len(earlier) else None
                if attempt != was:
                    self._attempt(name, was, attempt)

    def _attempt(self, name: str, was: Attempt | None, attempt: Attempt) -> None:
        if was is None and attempt.queue_wait_seconds is not None:
            self.queue_wait.labels(name).observe(attempt.queue_wait_seconds)
        if attempt.outcome is not None and (was is None or was.outcome is None):
            self.attempts.labels(name, attempt.outcome.value).inc()
            if attempt.run_seconds is not None:
                self.run.labels(name).observe(attempt.run_seconds)


class QueueCollector:
    """Gauges of the queues `queue_names`, read through the Broker at scrape time:
    `agentexec_queue_waiting`, `agentexec_queue_pending`, `agentexec_queue_delayed` and
    `agentexec_queue_parked`."""

    def __init__(self, runtime: Runtime, queue_names: Sequence[str]) -> None:
        self.runtime = runtime
        self.queue_names = tuple(queue_names)

    def collect(self) -> Iterator[Metric]:
        waiting = _gauge("queue_waiting", "Tasks in the queue not yet read by a worker.")
        pending = _gauge(
            "queue_pending", "Tasks read by a worker and not ended (running, or leased)."
        )
        delayed = _gauge("queue_delayed", "Tasks waiting for a retry's backoff or a due time.")
        parked = _gauge("queue_parked", "Tasks parked until their lock key or tenant cap has room.")
        try:
            for name in self.queue_names:
                depth = self.runtime.broker.queue_depth(name)
                waiting.add_metric([name], depth.waiting)
                pending.add_metric([name], depth.pending)
                delayed.add_metric([name], depth.delayed)
                parked.add_metric([name], depth.parked)
        except (redis.RedisError, BrokerError) as e:  # the scrape's boundary: it still answers
            yield _unavailable("queue", e)
            return
        yield from (waiting, pending, delayed, parked)


class LogCollector:
    """Gauges of the event log, read through the Broker at scrape time:
    `agentexec_projector_lag_entries`, `agentexec_projector_lag_seconds` and
    `agentexec_dead_letters`."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        broker = self.runtime.broker
        try:
            lag = broker.log_lag()
            dead = broker.dead_letter_count()
        except (redis.RedisError, BrokerError) as e:
            yield _unavailable("log", e)
            return
        seconds = 0.0
        if lag.entries and lag.oldest_ms is not None:
            seconds = max(time.time() - lag.oldest_ms / 1000, 0.0)
        yield GaugeMetricFamily(
            "agentexec_projector_lag_entries",
            "Events of the log not yet committed to the read model.",
            value=lag.entries,
        )
        yield GaugeMetricFamily(
            "agentexec_projector_lag_seconds",
            "Age of the oldest event not yet committed to the read model (0 when none is).",
            value=seconds,
        )
        yield GaugeMetricFamily(
            "agentexec_dead_letters", "Dead letters kept (see `agentexec dead list`).", value=dead
        )


def _gauge(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"agentexec_{name}", documentation, labels=["queue"])


def _unavailable(what: str, error: BaseException) -> GaugeMetricFamily:
    # A scrape must not fail for Redis being away: the process is up, its Redis is not.
    logger.warning("metrics: cannot read the %s gauges from Redis: %s", what, error)
    return GaugeMetricFamily(
        f"agentexec_{what}_gauges_unavailable",
        "1 when Redis could not be read for these gauges at this scrape.",
        value=1,
    )


def serve(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> WSGIServer:
    """Serve `registry`, with the standard `process_*` metrics of this process, at
    http://host:port/metrics on a thread; stop it with `server.shutdown()`. Raises `OSError`
    when the port is taken."""
    from prometheus_client import ProcessCollector, start_http_server

    ProcessCollector(registry=registry)
    server, _ = start_http_server(port, addr=host, registry=registry)
    logger.info("metrics on http://%s:%d/metrics", host, server.server_port)
    return server
