"""The `agentexec` command line."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .config import CONF
from .events import Status

if TYPE_CHECKING:
    from rich.table import Table
    from sqlalchemy import Engine

    from .activity.schemas import ActivityStatsSchema

WORKER_MODULE_VARIABLE = "AGENTEXEC_WORKER_MODULE"
"""Names the pool `agentexec worker` runs when given no argument (`module` or `module:pool`)."""

P = TypeVar("P")
F = TypeVar("F", bound=Callable[..., Any])


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def load_object(reference: str) -> object:
    """Import `module:attribute` (e.g. `myapp.worker:pool`)."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(
            f"{reference!r} is not of the form module:attribute, e.g. myapp.worker:pool"
        )
    module = _import(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise click.BadParameter(f"module {module_name!r} has no attribute {attribute!r}") from None


def load_pool(reference: str, pool_type: type[P]) -> P:
    """The pool `module:attribute`, or the one pool of `module` (seed 001's
    `AGENTEXEC_WORKER_MODULE=src.worker`)."""
    if ":" in reference:
        pool = load_object(reference)
    else:
        found = {
            name: value
            for name, value in vars(_import(reference)).items()
            if isinstance(value, pool_type)
        }
        if len(found) != 1:
            names = ", ".join(sorted(found)) or "none"
            raise click.BadParameter(
                f"module {reference!r} has {len(found)} ax.Pool objects ({names}); name the "
                f"one to run: {reference}:pool"
            )
        [pool] = found.values()
    if not isinstance(pool, pool_type):
        raise click.BadParameter(f"{reference} is {pool!r}, not an ax.Pool")
    return pool


def _import(module_name: str) -> ModuleType:
    sys.path.insert(0, ".")
    try:
        return importlib.import_module(module_name)
    except ImportError as e:
        raise click.BadParameter(f"cannot import module {module_name!r}: {e}") from e


def _api_command() -> click.Command:
    from agentexec.api.commands import api

    return api


def _projector_command() -> click.Command:
    from agentexec.projector.commands import projector

    return projector


def _replay_command() -> click.Command:
    from agentexec.projector.commands import replay

    return replay


class _Rooms(click.Group):
    """The commands of the workers', projector's and API's rooms are imported when named (or
    listed by `--help`): importing the core package imports no other room."""

    lazy: dict[str, Callable[[], click.Command]] = {
        "api": _api_command,
        "projector": _projector_command,
        "replay": _replay_command,
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            self.add_command(self.lazy[cmd_name](), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Rooms)
@click.option("--redis-url", envvar="AGENTEXEC_REDIS_URL", help="Redis URL (AGENTEXEC_REDIS_URL).")
@click.option("--log-level", default="INFO", show_default=True, help="Logging level.")
def main(redis_url: str | None, log_level: str) -> None:
    """agentexec: run AI agents as background tasks and watch them live."""
    _configure_logging(log_level)
    if redis_url:
        CONF.redis_url = redis_url


def metrics_options(command: F) -> F:
    """`--metrics-port` and `--metrics-host`, for the processes that can serve Prometheus
    metrics (`agentexec worker`, `agentexec projector`)."""
    port = click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        help="Serve Prometheus metrics on this port at /metrics (docs/metrics.md).",
    )
    host = click.option(
        "--metrics-host",
        default="127.0.0.1",
        show_default=True,
        help="Interface of --metrics-port.",
    )
    return port(host(command))


def create_tables_option(command: F) -> F:
    """`--create-tables`, for the processes that can create the read model's tables
    (`agentexec run`, `agentexec projector`)."""
    return click.option(
        "--create-tables",
        is_flag=True,
        help="Create the read model's tables that are missing (as ax.Base.metadata.create_all).",
    )(command)


def pool_options(command: F) -> F:
    """The pool to run and how: the argument and options of `agentexec worker` and of its
    alias `agentexec run`."""
    reference = click.argument("pool_reference", metavar="[MODULE[:POOL]]", required=False)
    workers = click.option(
        "--workers", "num_workers", type=int, help="Worker processes (AGENTEXEC_NUM_WORKERS)."
    )
    concurrency = click.option(
        "--concurrency", type=int, help="Tasks per process (AGENTEXEC_WORKER_CONCURRENCY)."
    )
    return reference(workers(concurrency(metrics_options(command))))


@main.command()
@pool_options
def worker(**options: Any) -> None:
    """Run the pool MODULE:POOL (e.g. myapp.worker:pool) until SIGINT/SIGTERM.

    Without an argument, AGENTEXEC_WORKER_MODULE names it. Without `:POOL`, the module's
    one `ax.Pool` is run.
    """
    _run_pool(**options)


@main.command()
@pool_options
@create_tables_option
def run(create_tables: bool, **options: Any) -> None:
    """Run the pool MODULE:POOL as `agentexec worker` does (agentexec 0.3.0's name).

    With --create-tables, first create the missing tables of the pool's database (its
    `engine` or `database_url`).
    """
    _run_pool(create_tables=create_tables, **options)


def _run_pool(
    pool_reference: str | None,
    num_workers: int | None,
    concurrency: int | None,
    metrics_port: int | None,
    metrics_host: str,
    create_tables: bool = False,
) -> None:
    from .workers import Pool

    reference = pool_reference or os.environ.get(WORKER_MODULE_VARIABLE)
    if not reference:
        command = click.get_current_context().info_name
        raise click.UsageError(
            f"name the pool to run: agentexec {command} myapp.worker:pool, or set "
            f"{WORKER_MODULE_VARIABLE}=myapp.worker"
        )
    pool = load_pool(reference, Pool)
    if num_workers is not None:
        pool.num_workers = num_workers
    if concurrency is not None:
        pool.concurrency = concurrency
    if metrics_port is not None:
        pool.metrics_port, pool.metrics_host = metrics_port, metrics_host
    if create_tables:
        _create_tables(pool, reference)
    from .errors import ConfigurationError

    try:
        pool.run()
    except KeyboardInterrupt:
        pass  # Ctrl-C: the pool has shut down gracefully, which is a normal end for a CLI
    except ConfigurationError as e:  # a refused setup: its message says the fix
        raise click.ClickException(str(e)) from e


def _create_tables(pool: Any, reference: str) -> None:
    if pool.engine is None and pool.database_url is None:
        raise click.UsageError(
            f"--create-tables: the pool {reference} has no database; create it with "
            "ax.Pool(engine=...) or ax.Pool(database_url=...), or drop --create-tables."
        )
    from .activity.models import Base
    from .databases import create_sync_engine, sync_engine
    from .errors import ConfigurationError

    try:
        if pool.engine is not None:
            engine = sync_engine(pool.engine)
        else:
            engine = create_sync_engine(str(pool.database_url))
    except ConfigurationError as e:
        raise click.UsageError(f"--create-tables: {e}") from e
    try:
        Base.metadata.create_all(engine)
    finally:
        if engine is not pool.engine:
            engine.dispose()


@main.group()
def dead() -> None:
    """List and re-drive dead-lettered tasks."""


@dead.command("list")
@click.option("--count", default=100, show_default=True, help="How many to show.")
def dead_list(count: int) -> None:
    """Show dead letters, oldest first: id, task, agent, reason."""
    import asyncio

    from .connection import close_redis
    from .workers.deadletters import list_dead_letters

    async def show() -> None:
        letters = await list_dead_letters(count)
        await close_redis()
        if not letters:
            click.echo("no dead letters")
        for letter in letters:
            task = letter.event.task_name if letter.event else "?"
            agent = letter.event.agent_id if letter.event else "?"
            click.echo(f"{letter.id}  {task}  agent={agent}  from={letter.stream}  {letter.reason}")

    asyncio.run(show())


@dead.command("redrive")
@click.argument("ids", nargs=-1, required=True)
def dead_redrive(ids: tuple[str, ...]) -> None:
    """Queue the dead-lettered tasks IDS again, each as a new task."""
    import asyncio

    from .connection import close_redis
    from .errors import AgentexecError
    from .workers.deadletters import redrive

    async def run() -> int:
        failures = 0
        for dead_id in ids:
            try:
                task = await redrive(dead_id)
                click.echo(f"{dead_id} -> agent {task.agent_id} ({task.task_name})")
            except AgentexecError as e:
                click.echo(f"{dead_id}: {e}", err=True)
                failures += 1
        await close_redis()
        return failures

    if asyncio.run(run()):
        raise SystemExit(1)


@main.command()
@click.option("--tasks", "count", default=6, show_default=True, help="How many tasks to run.")
@click.option("--database", default="agentexec-demo.db", show_default=True, help="SQLite file.")
def demo(count: int, database: str) -> None:
    """Run a few agent-like tasks and show their progress live, on embedded defaults."""
    from agentexec.workers.demo import run_demo

    run_demo(count, database)


@main.command()
@click.option(
    "--database-url",
    envvar="AGENTEXEC_DATABASE_URL",
    help="Start from this read model (AGENTEXEC_DATABASE_URL); else from the event log.",
)
@click.option("--limit", default=10, show_default=True, help="Rows to show.")
@click.option("--duration", type=float, help="Stop after this many seconds.")
@click.option("--once", is_flag=True, help="Print the table once and exit.")
def monitor(database_url: str | None, limit: int, duration: float | None, once: bool) -> None:
    """Watch agents live: active agents with their progress, fed by the event log."""
    from .monitor import run_monitor

    if database_url:
        _read_model(database_url).dispose()  # refused at once, naming the fix
    try:
        run_monitor(database_url=database_url, limit=limit, duration=duration, once=once)
    except KeyboardInterrupt:
        pass


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> timedelta:
    """`"30d"` -> 30 days; units s, m, h, d, w."""
    number, unit = text[:-1], text[-1:].lower()
    if unit not in _AGE_UNITS or not number.isdigit():
        raise click.BadParameter(
            f"{text!r} is not a duration; use a whole number and a unit: 90s, 45m, 12h, 30d, 2w"
        )
    return timedelta(seconds=int(number) * _AGE_UNITS[unit])


@main.command()
@click.option(
    "--older-than",
    "older_than",
    required=True,
    help="Remove what ended before this long ago: 30d, 12h, 2w...",
)
@click.option(
    "--archive",
    is_flag=True,
    help="Also remove archived events that old (only those the projector no longer needs).",
)
@click.option(
    "--database-url",
    envvar="AGENTEXEC_DATABASE_URL",
    help="SQLAlchemy URL of the read model (AGENTEXEC_DATABASE_URL).",
)
@click.option("--batch-size", default=1000, show_default=True, help="Rows per transaction.")
def prune(older_than: str, archive: bool, database_url: str | None, batch_size: int) -> None:
    """Remove ended activities (and their log rows) older than --older-than; with --archive,
    archived events too. Queued and running tasks are never removed."""
    from sqlalchemy.orm import Session

    from agentexec.projector.retention import prune_archive

    from .activity import prune as prune_activities

    age = parse_age(older_than)
    engine = _read_model(database_url)
    try:
        with Session(engine) as session:
            removed = prune_activities(session, older_than=age, batch_size=batch_size)
        click.echo(f"removed {removed} ended activities older than {older_than}")
        if archive:
            events = prune_archive(engine, age, batch_size=batch_size)
            click.echo(f"removed {events} archived events older than {older_than}")
    finally:
        engine.dispose()


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}s" if value < 60 else str(timedelta(seconds=round(value)))


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def render_stats(result: ActivityStatsSchema) -> list[Table]:
    """The tables `agentexec stats` prints: one row per task name and one for all, then the
    most frequent errors."""
    from rich.table import Table

    table = Table(title="Tasks", title_justify="left")
    for name in ("task", "total", *(s.wire for s in Status), "success", "retried"):
        table.add_column(name, justify="left" if name == "task" else "right")
    for name in ("wait p50", "wait p95", "run mean", "run p50", "run p95", "run max"):
        table.add_column(name, justify="right")
    errors = Table(title="Most frequent errors", title_justify="left")
    for name in ("task", "count", "error"):
        errors.add_column(name, justify="right" if name == "count" else "left")
    for row in [*result.tasks, result.overall]:
        label = row.task_name if row.task_name is not None else "(all)"
        table.add_row(
            label,
            str(row.total),
            *(str(row.counts[s.wire]) for s in Status),
            _rate(row.success_rate),
            _rate(row.retry_rate),
            _seconds(row.queue_wait.p50),
            _seconds(row.queue_wait.p95),
            _seconds(row.run.mean),
            _seconds(row.run.p50),
            _seconds(row.run.p95),
            _seconds(row.run.max),
            end_section=row is result.tasks[-1] if result.tasks else False,
        )
        if row.task_name is not None:
            for error in row.errors:
                errors.add_row(label, str(error.count), error.message)
    return [table, errors] if errors.row_count else [table]


@main.command()
@click.option(
    "--database-url",
    envvar="AGENTEXEC_DATABASE_URL",
    help="SQLAlchemy URL of the read model (AGENTEXEC_DATABASE_URL).",
)
@click.option(
    "--since", "since", default="24h", show_default=True, help="Tasks created this long ago."
)
@click.option("--all-time", is_flag=True, help="Every task, however old (reads them all).")
@click.option("--task", "task_names", multiple=True, help="Only this task name (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
def stats(
    database_url: str | None, since: str, all_time: bool, task_names: tuple[str, ...], as_json: bool
) -> None:
    """Statistics per task name: counts by status, success and retry rates, queue wait and
    run durations, the most frequent errors."""
    from datetime import UTC, datetime

    from rich.console import Console
    from sqlalchemy.orm import Session

    from .activity import stats as activity_stats

    start = None if all_time else datetime.now(UTC) - parse_age(since)
    engine = _read_model(database_url)
    try:
        with Session(engine) as session:
            result = activity_stats(session, since=start, task_name=task_names or None)
    finally:
        engine.dispose()
    if as_json:
        click.echo(result.model_dump_json(indent=2))
        return
    console = Console()
    window = "all time" if start is None else f"since {start:%Y-%m-%d %H:%M} UTC ({since})"
    console.print(f"{result.overall.total} tasks, {window}")
    for table in render_stats(result):
        console.print(table)


def _read_model(database_url: str | None) -> Engine:
    """The engine of the read model `--database-url` names, else `AGENTEXEC_DATABASE_URL`
    (an async URL is opened with its sync driver, see `agentexec.databases`)."""
    from .databases import create_sync_engine
    from .errors import ConfigurationError

    url = database_url or CONF.database_url
    if url is None:
        raise click.UsageError(
            "no database: pass --database-url or set AGENTEXEC_DATABASE_URL, e.g. "
            "sqlite:///agents.db"
        )
    try:
        engine = create_sync_engine(url)
    except ConfigurationError as e:
        raise click.UsageError(str(e)) from e
    _check_read_model(engine)
    return engine


def _check_read_model(engine: Engine) -> None:
    """Refuse, naming the fix, a database that cannot be read or has no read model, rather
    than fail in the first query with SQLAlchemy's traceback."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from .activity.models import Activity

    shown = engine.url.render_as_string(hide_password=True)
    try:
        present = inspect(engine).has_table(Activity.__tablename__)
    except SQLAlchemyError as e:
        engine.dispose()
        raise click.ClickException(
            f"cannot read the read model at {shown}: {e}; check --database-url "
            "(AGENTEXEC_DATABASE_URL) and that the database is up."
        ) from e
    if not present:
        engine.dispose()
        raise click.ClickException(
            f"{shown} has no read model (no table {Activity.__tablename__}): create it with "
            "`agentexec projector --create-tables`, `ax.Base.metadata.create_all(engine)` or "
            "your Alembic migrations, or point --database-url at the projector's database."
        )


if __name__ == "__main__":
    main()
