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
        raise click.BadParameter(f"{pool_reference} is a {type(pool).__name__}, not an ax.Pool")
    if num_workers is not None:
        pool.num_workers = num_workers
    if concurrency is not None:
        pool.concurrency = concurrency
    pool.run()


from agentexec.projector.commands import projector, replay  # noqa: E402

main.add_command(projector)
main.add_command(replay)
