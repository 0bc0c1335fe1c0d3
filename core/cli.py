"""The `agentexec` command line."""

from __future__ import annotations

import importlib
import logging
import sys

import click

from .config import CONF


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
    sys.path.insert(0, ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise click.BadParameter(f"cannot import module {module_name!r}: {e}") from e
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise click.BadParameter(f"module {module_name!r} has no attribute {attribute!r}") from None


@click.group()
@click.option("--redis-url", envvar="AGENTEXEC_REDIS_URL", help="Redis URL (AGENTEXEC_REDIS_URL).")
@click.option("--log-level", default="INFO", show_default=True, help="Logging level.")
def main(redis_url: str | None, log_level: str) -> None:
    """agentexec: run AI agents as background tasks and watch them live."""
    _configure_logging(log_level)
    if redis_url:
        CONF.redis_url = redis_url


@main.command()
@click.argument("pool_reference", metavar="MODULE:POOL")
@click.option(
    "--workers", "num_workers", type=int, help="Worker processes (AGENTEXEC_NUM_WORKERS)."
)
@click.option("--concurrency", type=int, help="Tasks per process (AGENTEXEC_WORKER_CONCURRENCY).")
def worker(pool_reference: str, num_workers: int | None, concurrency: int | None) -> None:
    """Run the pool MODULE:POOL (e.g. myapp.worker:pool) until SIGINT/SIGTERM."""
    from .workers import Pool

    pool = load_object(pool_reference)
    if not isinstance(pool, Pool):
        raise click.BadParameter(f"{pool_reference} is {pool!r}, not an ax.Pool")
    if num_workers is not None:
        pool.num_workers = num_workers
    if concurrency is not None:
        pool.concurrency = concurrency
    from .errors import ConfigurationError

    try:
        pool.run()
    except ConfigurationError as e:  # a refused setup: its message says the fix
        raise click.ClickException(str(e)) from e


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
    from .demo import run_demo

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

    try:
        run_monitor(database_url=database_url, limit=limit, duration=duration, once=once)
    except KeyboardInterrupt:
        pass


from agentexec.api.commands import api  # noqa: E402
from agentexec.projector.commands import projector, replay  # noqa: E402

main.add_command(api)
main.add_command(projector)
main.add_command(replay)


if __name__ == "__main__":
    main()
