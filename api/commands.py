"""The `agentexec api` command."""

from __future__ import annotations

import click

__all__ = ["api"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, help="Port to listen on.")
@click.option(
    "--database-url",
    envvar="AGENTEXEC_DATABASE_URL",
    help="SQLAlchemy URL of the read model (AGENTEXEC_DATABASE_URL).",
)
def api(host: str, port: int, database_url: str | None) -> None:
    """Serve the REST API, the live feeds and the dashboard until SIGINT/SIGTERM."""
    try:
        import uvicorn

        from .app import create_app
    except ImportError as e:
        raise click.UsageError(
            f"the API needs its extra ({e}); install it with `pip install agentexec[api]`"
        ) from e
    if not database_url:
        raise click.UsageError(
            "no database: pass --database-url or set AGENTEXEC_DATABASE_URL, e.g. "
            "postgresql+psycopg://user@host/db or sqlite:///agents.db"
        )
    from agentexec.connection import check_eviction_policy_at_start
    from agentexec.errors import ConfigurationError

    try:
        check_eviction_policy_at_start("api")
    except ConfigurationError as e:  # a refused setup: its message says the fix
        raise click.ClickException(str(e)) from e
    app = create_app(database_url=database_url)
    click.echo(f"agentexec API and dashboard on http://{host}:{port}/")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
