"""Settings read from `AGENTEXEC_*` environment variables into one object, `CONF`.

Values are read once at import and may be reassigned in code before the first connection
(`ax.CONF.redis_url = "redis://..."`); assignments are validated like the environment is.
"""

from __future__ import annotations

import importlib
import operator
import re
from typing import Any

from pydantic import AliasChoices, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from . import cluster, sentinel
from .errors import ConfigurationError

REDIS_STATE_BACKEND = "agentexec.state.redis_backend"

_assignments = 0
"""Assignments to any `Settings` so far: `agentexec.runtime.current()` rebuilds its snapshot of
`CONF` when this moved, so that a setting assigned in code applies to the next call."""


_IMPORT_PATH_EXAMPLES = {
    "model_override": "tests.models:SCRIPTED",
    "tracing_setup": "myapp.telemetry:setup",
}


def assignments() -> int:
    """How many times a `Settings` field was assigned in this process."""
    return _assignments


def import_setting(field: str, path: str, what: str) -> Any:
    """The object that setting `field` (such as "tracing_setup") names by its import path
    `path` ("package.module:attribute"). Raises `ConfigurationError` naming the variable and
    saying it should name `what` when it cannot be imported."""
    module, _, attribute = path.partition(":")
    try:
        return operator.attrgetter(attribute)(importlib.import_module(module))
    except (ImportError, AttributeError) as e:
        raise ConfigurationError(
            f"AGENTEXEC_{field.upper()} has value {path!r}, which cannot be imported ({e}); "
            f"name a module on the path and {what} in it, or unset it."
        ) from e


class Settings(BaseSettings):
    """Every setting of agentexec. Each field `x` is read from `AGENTEXEC_X`."""

    model_config = SettingsConfigDict(
        env_prefix="AGENTEXEC_",
        validate_assignment=True,
        extra="ignore",
        populate_by_name=True,
        # Our messages name the bad value, redacted; pydantic's echo of the input would show
        # the password of a Redis or database URL.
        hide_input_in_errors=True,
    )

    redis_url: str = Field(
        default="redis://localhost:6379/0",
        validation_alias=AliasChoices("AGENTEXEC_REDIS_URL", "REDIS_URL"),
    )
    """`AGENTEXEC_REDIS_URL`, else a plain `REDIS_URL` (as platforms set it), else the local
    default. Each process logs the URL it uses, without the password."""
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("AGENTEXEC_DATABASE_URL", "DATABASE_URL")
    )
    """`AGENTEXEC_DATABASE_URL`, else a plain `DATABASE_URL`. Used by processes started from
    the command line (`agentexec projector`, `api`)."""

    key_prefix: str = "agentexec"
    """Namespace of every Redis key, so that applications (or tests) can share one server."""
    partitions: int = 1
    """How many partitions the event log, the work streams and the tasks' keys are split into
    (see `agentexec.partitions`): 1 for one Redis server, a few per primary of a Redis
    Cluster. Every process of a namespace must use the same number."""
    state_backend: str = REDIS_STATE_BACKEND

    num_workers: int = Field(default=4, ge=1)
    """Worker processes started by `Pool.run()`."""
    worker_concurrency: int = Field(default=10, ge=1)
    """Tasks each worker process runs at once in its event loop."""
    queue_name: str = Field(default="agentexec_tasks", min_length=1)
    graceful_shutdown_timeout: float = Field(default=300, ge=0)
    """Seconds in-flight tasks get to finish after SIGINT/SIGTERM before they are handed back."""

    table_prefix: str = "agentexec_"
    result_ttl: int = Field(default=3600, ge=1)
    """Seconds a task's result stays retrievable after it ends."""
    max_context_bytes: int = Field(default=1024 * 1024, ge=1)
    """Largest serialised context `enqueue` accepts."""

    max_task_retries: int = Field(default=3, ge=0)
    """Retries after a task's first attempt fails (overridable per task on the decorator)."""
    retry_backoff: float = Field(default=1.0, ge=0)
    """Seconds before the first retry; doubled for each further one, with jitter."""
    retry_backoff_max: float = Field(default=300.0, ge=0)
    max_concurrency_per_tenant: int = Field(default=0, ge=0)
    """Tasks of one tenant (`metadata["tenant"]`) that run at once on a queue, across its
    workers; the others wait without holding a worker, so that one tenant's burst does not
    starve the others (docs/tasks.md). 0: no limit. Counted per partition: with several
    (`partitions`), up to this many per partition."""
    max_deliveries: int = Field(default=5, ge=1)
    """A task delivered more often than this (its handler keeps killing the worker process)
    is dead-lettered."""
    idempotency_window: int = Field(default=86400, ge=1)
    """Seconds an `idempotency_key` (and each agent id) guards against a second enqueue."""
    enqueue_timeout: float = Field(default=30.0, ge=0)
    """Seconds `enqueue` keeps retrying while Redis is unreachable before it raises."""
    allow_eviction: bool = False
    """Run against a Redis whose `maxmemory-policy` is not `noeviction`, with a warning,
    instead of refusing to start (an evicting Redis can lose tasks and history)."""

    lease_seconds: float = Field(default=30, gt=0)
    """A task whose worker stops renewing it for this long is taken over by another worker."""
    redis_max_connections: int = Field(default=64, ge=2)
    """Connections each process's asyncio client opens at most; callers beyond wait their turn."""
    projector_niceness: int = Field(default=0, ge=0, le=19)
    """CPU niceness of the projector a pool runs beside its workers (Linux). Above 0 the read
    model yields busy cores to the tasks: lower task latency, a read model that falls
    behind during bursts. 0 keeps the pool's priority."""
    block_ms: int = Field(default=5000, ge=1)
    """Longest blocking Redis read; socket timeouts are set above it."""

    log_hot_window: float = Field(default=600.0, ge=0)
    """Seconds of the event log Redis keeps after the projector committed and archived it:
    live feeds resume from Redis within this window, from the SQL archive beyond it. The
    projector trims older entries (`XTRIM MINID`); 0 trims all that it committed."""
    dead_letter_retention: float = Field(default=30 * 86400.0, ge=0)
    """Seconds a dead letter is kept (default 30 days); 0 keeps them until re-driven."""
    idle_consumer_seconds: float = Field(default=3600.0, gt=0)
    """A worker consumer name idle for this long with no task pending is removed from its
    queue's consumer group (names of workers that exited)."""

    max_message_bytes: int = Field(default=64 * 1024, ge=1024)
    """Largest progress message or error text an event records, in UTF-8 bytes. Longer text
    is cut, not refused (a task must not fail for its own progress report), and ends with a
    marker that says so."""
    api_max_feeds: int = Field(default=1000, ge=1)
    """Live feeds (SSE) one API process serves at once; one more is answered 503."""

    feed_secret: str | None = Field(default=None, repr=False)
    """The key that signs and checks feed tokens (`agentexec.api.feed_token`, docs/tenants.md):
    at least 32 bytes, the same in the application that issues tokens and in every API
    process that serves feeds. Unset: the API accepts no feed token."""

    max_event_summary_chars: int = Field(default=500, ge=32)
    """Longest text an agent event carries (tool arguments, self-reported messages); longer
    text is cut and marked with an ellipsis."""

    stream_interval: float | None = Field(default=0.25, ge=0)
    """Seconds between two text events (`agent.delta`) of a streamed agent run, at least: a
    fast model's many small deltas are coalesced, unless `stream_chars` characters wait.
    `off` records no text deltas. The default of `OpenAIRunner(stream_interval=...)` and of
    the runs of `pool.agent` tasks."""
    stream_chars: int = Field(default=2000, ge=1)
    """Characters of a streamed run's text recorded in one event at most before the interval
    has passed (the default of `OpenAIRunner(stream_chars=...)`)."""

    model_override: str | None = None
    """`package.module:attribute` of an Agents SDK `Model` or `ModelProvider` that every
    `OpenAIRunner` run uses for the models its agents name, in every process of a pool (the
    workers get these settings). For tests: see `agentexec.testing`."""

    tracing_setup: str | None = None
    """`package.module:function` that configures the OpenTelemetry SDK (docs/tracing.md):
    called with the process's role ("worker", "pool", "projector" or "api") when an
    agentexec process starts, before it records anything. Unset: agentexec configures
    nothing, and its spans go wherever the application's own setup sends them, if any."""

    activity_message_create: str = "Waiting to start."
    activity_message_started: str = "Task started."
    activity_message_complete: str = "Task completed successfully."
    activity_message_error: str = "Task failed with error: {error}"

    def __setattr__(self, name: str, value: Any) -> None:
        global _assignments
        super().__setattr__(name, value)
        _assignments += 1

    def adopt(self, other: Settings) -> None:
        """Take every value of `other` at once. `other` is valid as a whole, but assigning
        its values one by one can pass through a combination that is not (a cluster URL
        before the partitions or the hash tag it needs)."""
        global _assignments
        for name in type(other).model_fields:
            self.__dict__[name] = getattr(other, name)
        self.__pydantic_fields_set__.update(other.model_fields_set)
        _assignments += 1

    @field_validator("redis_url")
    @classmethod
    def _parsable_sentinel_url(cls, value: str) -> str:
        # A plain URL is redis-py's to judge; the Sentinel and Cluster forms are ours.
        if sentinel.is_sentinel_url(value) or cluster.is_cluster_url(value):
            try:
                (sentinel if sentinel.is_sentinel_url(value) else cluster).parse(value)
            except ValueError as e:
                raise ValueError(f"AGENTEXEC_REDIS_URL: {e}") from None
        return value

    @field_validator("state_backend")
    @classmethod
    def _only_redis(cls, value: str) -> str:
        if value != REDIS_STATE_BACKEND:
            raise ValueError(
                f"AGENTEXEC_STATE_BACKEND has value {value!r}; only {REDIS_STATE_BACKEND!r} "
                "is supported (state is the Redis event log; other backends are not pluggable). "
                "Unset it or set it to that value."
            )
        return value

    @field_validator("stream_interval", mode="before")
    @classmethod
    def _interval_off(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("off", "none", ""):
            return None
        return value

    @field_validator("model_override", "tracing_setup")
    @classmethod
    def _import_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", value):
            example = _IMPORT_PATH_EXAMPLES[info.field_name or ""]
            raise ValueError(
                f"AGENTEXEC_{(info.field_name or '').upper()} has value {value!r}; use "
                f"'package.module:attribute', e.g. {example!r}, or unset it."
            )
        return value

    @field_validator("key_prefix")
    @classmethod
    def _one_hash_tag(cls, value: str) -> str:
        # At most one `{tag}`: a Redis Cluster hashes a key by its first one, and the prefix's
        # must be the first (queues, trackers and sessions add their own after it).
        if not re.fullmatch(r"[^{}]+|[^{}]*\{[^{}]+\}[^{}]*", value):
            raise ValueError(
                f"AGENTEXEC_KEY_PREFIX has value {value!r}; use a non-empty name, with braces "
                "only around one non-empty Redis Cluster hash tag (e.g. 'myapp' or '{myapp}')."
            )
        if len(value) > 200:
            raise ValueError(
                f"AGENTEXEC_KEY_PREFIX has value {value[:40]!r}... of {len(value)} characters; "
                "use at most 200 (the projector's checkpoint is named after it)."
            )
        return value

    @model_validator(mode="after")
    def _cluster_prefix(self) -> Settings:
        # A cluster needs the prefix's hash tag, or one per partition (see `Partitions`).
        from .partitions import Partitions

        Partitions(
            cluster.key_prefix(self.redis_url, self.key_prefix, self.partitions), self.partitions
        )
        # On a cluster a worker, and an API process's hub, hold one blocking read per
        # partition, each a connection the client counts (`agentexec.cluster`).
        needed = 2 * self.partitions + 8
        if cluster.is_cluster_url(self.redis_url) and self.redis_max_connections < needed:
            raise ValueError(
                f"AGENTEXEC_REDIS_MAX_CONNECTIONS has value {self.redis_max_connections}, too "
                f"few for AGENTEXEC_PARTITIONS={self.partitions} on a Redis Cluster, where a "
                f"process holds one blocking read per partition (a worker's, an API's hub's) "
                f"and other commands wait for a free connection; set it to at least {needed}"
            )
        return self

    @field_validator("queue_name")
    @classmethod
    def _storable_queue_name(cls, value: str) -> str:
        if "{" in value or "}" in value or len(value) > 255:
            raise ValueError(
                f"AGENTEXEC_QUEUE_NAME has value {value[:40]!r} ({len(value)} characters); "
                "use at most 255 characters (the read model's column) and no braces (a "
                "queue's keys carry its name as their Redis Cluster hash tag)."
            )
        return value


CONF = Settings()
