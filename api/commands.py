"""The `agentexec api` command."""

from __future__ import annotations

import ipaddress
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

import click

from agentexec.errors import ConfigurationError
from agentexec.runtime import current

__all__ = ["api"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, help="Port to listen on.")
@click.option(
    "--database-url",
    envvar="AGENTEXEC_DATABASE_URL",
    help="SQLAlchemy URL of the read model (AGENTEXEC_DATABASE_URL).",
)
@click.option(
    "--token",
    envvar="AGENTEXEC_API_TOKEN",
    help="Require this bearer token on every API route (AGENTEXEC_API_TOKEN; prefer the "
    "variable: a command line is visible to every user of the machine).",
)
@click.option(
    "--auth",
    "auth_reference",
    envvar="AGENTEXEC_API_AUTH",
    metavar="MODULE:FUNCTION",
    help="Your FastAPI dependency that authorizes each API request (AGENTEXEC_API_AUTH); "
    "see docs/api.md#authorization.",
)
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="Serve beyond loopback without authorization (e.g. behind a proxy that "
    "authenticates every request).",
)
@click.option(
    "--metrics",
    is_flag=True,
    help="Serve Prometheus metrics at /metrics, guarded as the API routes are (docs/metrics.md).",
)
def api(
    host: str,
    port: int,
    database_url: str | None,
    token: str | None,
    auth_reference: str | None,
    insecure_no_auth: bool,
    metrics: bool,
) -> None:
    """Serve the REST API, the live feeds and the dashboard until SIGINT/SIGTERM."""
    try:
        import uvicorn

        from .app import create_app
    except ImportError as e:
        raise click.UsageError(
            f"the API needs its extra ({e}); install it with `pip install agentexec[api]`"
        ) from e
    settings = current().settings
    database_url = database_url or settings.database_url  # falls back to a plain DATABASE_URL
    if not database_url:
        raise click.UsageError(
            "no database: pass --database-url or set AGENTEXEC_DATABASE_URL, e.g. "
            "postgresql+psycopg://user@host/db or sqlite:///agents.db"
        )
    from agentexec.connection import check_eviction_policy_at_start

    try:
        check_eviction_policy_at_start("api", settings)
    except ConfigurationError as e:  # a refused setup: its message says the fix
        raise click.ClickException(str(e)) from e
    token = token or None
    authorize = _load_hook(auth_reference) if auth_reference else None
    if not (token or authorize or insecure_no_auth or _is_loopback(host)):
        raise click.UsageError(
            f"--host {host} serves the API beyond this machine, and nothing authorizes its "
            "readers: set AGENTEXEC_API_TOKEN (or pass --token), or pass --auth "
            "module:function (AGENTEXEC_API_AUTH); --insecure-no-auth serves it open, e.g. "
            "behind a proxy that authenticates every request."
        )
    try:
        app = create_app(
            database_url=database_url, authorize=authorize, token=token, metrics=metrics
        )
    except ConfigurationError as e:
        raise click.UsageError(str(e)) from e
    click.echo(f"agentexec API and dashboard on http://{host}:{port}/")
    if token:
        click.echo("the API needs the token: open the dashboard once at /?token=<token>")
    # uvicorn raises the signal that stopped it again once it has shut down; this handler then
    # ends the process with status 0, as `agentexec worker` and `projector` end on SIGTERM.
    signal.signal(signal.SIGTERM, _stopped)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    click.echo("agentexec API stopped")


def _stopped(signum: int, frame: FrameType | None) -> None:
    click.echo("agentexec API stopped")
    raise SystemExit(0)


def _load_hook(reference: str) -> Callable[..., Any]:
    from agentexec.cli import load_object

    hook = load_object(reference)
    if not callable(hook):
        raise click.BadParameter(
            f"{reference!r} is a {type(hook).__name__}, not a function: --auth names a "
            "FastAPI dependency, e.g. myapp.auth:authorize",
            param_hint="--auth",
        )
    return hook


def _is_loopback(host: str) -> bool:
    """Whether `host` (an interface to bind) is reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve beyond loopback
