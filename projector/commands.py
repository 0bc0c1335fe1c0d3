"""The `agentexec projector` and `agentexec replay` commands."""

from __future__ import annotations

import asyncio
import signal
from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID

import click

from agentexec.cli import create_tables_option, metrics_options

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["projector", "replay"]

_DATABASE_URL = click.option(
    "--database-url",
    envvar="AGENTEXEC_DATABASE_URL",
    help="SQLAlchemy URL of the read model (AGENTEXEC_DATABASE_URL).",
)


def _engine(database_url: str | None, required: bool = True) -> Engine | None:
    """The read model's engine; an async URL is opened with its sync driver
    (`agentexec.databases`)."""
    from agentexec.databases import create_sync_engine
    from agentexec.errors import ConfigurationError
    from agentexec.runtime import current

    url = database_url or current().settings.database_url
    if url is None:
        if required:
            raise click.UsageError(
                "no database: pass --database-url or set AGENTEXEC_DATABASE_URL, e.g. "
                "postgresql+psycopg://user@host/db or sqlite:///agents.db"
            )
        return None
    try:
        return create_sync_engine(url)
    except ConfigurationError as e:
        raise click.UsageError(str(e)) from e


def _check_redis(what: str) -> None:
    from agentexec.connection import check_eviction_policy_at_start
    from agentexec.errors import ConfigurationError
    from agentexec.runtime import current

    try:
        check_eviction_policy_at_start(what, current().settings)
    except ConfigurationError as e:  # a refused setup: its message says the fix
        raise click.ClickException(str(e)) from e


@click.command()
@_DATABASE_URL
@create_tables_option
@click.option("--rebuild", is_flag=True, help="Empty the read model and rebuild it first.")
@click.option("--batch-size", default=5000, show_default=True, help="Events per transaction.")
@click.option(
    "--lease-seconds",
    default=10.0,
    show_default=True,
    help="How soon another projector takes over when this one dies.",
)
@metrics_options
def projector(
    database_url: str | None,
    create_tables: bool,
    rebuild: bool,
    batch_size: int,
    lease_seconds: float,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Project the event log into the SQL read model until SIGINT/SIGTERM.

    Exits at once when the read model's tables are missing, unless --create-tables.
    """
    from agentexec import tracing
    from agentexec.errors import ConfigurationError
    from agentexec.runtime import current

    from .projector import Projector
    from .rebuild import rebuild as rebuild_read_model

    engine = _engine(database_url)
    assert engine is not None
    if create_tables:
        from agentexec.activity.models import Base

        Base.metadata.create_all(engine)
    try:
        Projector(engine).check_tables()
    except ConfigurationError as e:
        raise click.ClickException(str(e)) from e
    _check_redis("projector")
    try:
        tracing.setup(current().settings.tracing_setup, "projector")
    except ConfigurationError as e:
        raise click.ClickException(str(e)) from e

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        if rebuild:
            await rebuild_read_model(engine, timeout=lease_seconds * 6)
        registry = None
        if metrics_port is not None:
            from prometheus_client import CollectorRegistry

            from agentexec.metrics import serve

            registry = CollectorRegistry()
            try:
                server = serve(registry, metrics_port, metrics_host)
            except OSError as e:
                raise click.ClickException(
                    f"--metrics-port {metrics_port}: cannot serve metrics on "
                    f"{metrics_host}:{metrics_port} ({e}); pick a free port"
                ) from e
        try:
            await Projector(
                engine, batch_size=batch_size, lease_seconds=lease_seconds, registry=registry
            ).run(stop)
        finally:
            if registry is not None:
                server.shutdown()
                server.server_close()

    from agentexec.connection import close_redis

    async def run() -> None:
        try:
            await main()
        finally:
            await close_redis()

    asyncio.run(run())


@click.command()
@_DATABASE_URL
@click.option("--agent-id", type=click.UUID, help="Only this agent's events.")
@click.option("--task", "task_name", help="Only the events of tasks with this name.")
@click.option("--session", "session_id", help="Only this conversation session's events.")
@click.option("--since", type=click.DateTime(), help="Appended at or after (UTC).")
@click.option("--until", type=click.DateTime(), help="Appended at or before (UTC).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def replay(
    database_url: str | None,
    agent_id: UUID | None,
    task_name: str | None,
    session_id: str | None,
    since: datetime | None,
    until: datetime | None,
    as_json: bool,
) -> None:
    """Print recorded events from the archive, then the log beyond it, in log order.

    Without a database, only the Redis log is read.
    """
    from agentexec.sessions import session_agent_id

    from .replay import as_json as json_line
    from .replay import as_text
    from .replay import replay as replay_events

    if session_id is not None:
        if agent_id is not None:
            raise click.UsageError("give --agent-id or --session, not both")
        agent_id = session_agent_id(session_id)

    engine = _engine(database_url, required=False)
    for item in replay_events(
        engine, agent_id=agent_id, task_name=task_name, since=since, until=until
    ):
        click.echo(json_line(item) if as_json else as_text(item))
